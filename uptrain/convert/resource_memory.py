"""The memory a conversion holds, phase by phase, counted from the model's sizes and the settings (what
`uptrain convert --plan` prints). Each term is a piece of calibration/layerwise.py's walk:

  capture    the embeddings, loaded (compute dtype, and their source-dtype copy while loading) to
             record each layer's call arguments for every batch;
  calibrate  one decoder layer's weights (compute dtype, and the source-dtype copy while loading) and
             one batch's activations (eager attention probabilities, MLP, hidden-sized, moments);
  merge      the merge's float64 workspace on the CPU (fit, aligned; similar's trials are smaller);
  refine     refine's modules, Adam and one step's activations;
  write      the output streamed shard by shard: the largest tensor, read and converted.

Resident from capture to the last layer: the token ids, the carried hidden states (two streams with
sequential calibration), every layer's call arguments (masks, RoPE), the replayed inputs and the
layer's moments. Peak = the process baseline + the largest phase.

On the CPU one more term: glibc's malloc serves allocations under its mmap threshold (at most 32 MiB)
from its heaps and keeps what is freed there for reuse, so the layer's weights and activations under
that size stay in the process after `calibrate` while `merge`'s larger blocks come from fresh pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.convert.calibration.stats import MIXED_STRIDE
from uptrain.convert.resource_shapes import Layout, ModelShape, PlanSettings

MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
CUDA_CONTEXT = 512 * 2**20  # the CUDA context and kernels, outside torch's allocator (typical)
# The source's tokenizer, the calibration text as read and the skeleton's loading machinery, on top of
# the imports: 75-85 MiB measured with a character tokenizer and a 200 KB text file (a large tokenizer
# or text holds more); not measured by the plan, which reads neither.
CALIBRATION_INPUTS = 80 * 2**20
FLOAT64, FLOAT32, TOKEN_ID = 8, 4, 8


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    kept: int = 0  # of which the allocator keeps once it is freed (blocks under MMAP_THRESHOLD_MAX)


def term(name: str, pieces: list[int] | int, count: int = 1) -> Term:
    """A term of `count` allocations of each size in `pieces`."""
    sizes = [pieces] if isinstance(pieces, int) else pieces
    total = sum(sizes) * count
    return Term(name, int(total), int(sum(s for s in sizes if s < MMAP_THRESHOLD_MAX) * count))


@dataclass(frozen=True)
class Phase:
    name: str
    terms: tuple[Term, ...]

    @property
    def total(self) -> int:
        return sum(t.bytes for t in self.terms)


@dataclass(frozen=True)
class Memory:
    """One memory (host RAM, or GPU memory): a baseline and the phases on top of it."""

    where: str
    baseline: tuple[Term, ...]
    phases: tuple[Phase, ...]

    @property
    def baseline_bytes(self) -> int:
        return sum(t.bytes for t in self.baseline)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    @property
    def peak(self) -> int:
        return self.baseline_bytes + self.peak_phase.total


def resident(shape: ModelShape, settings: PlanSettings, layout: Layout, moments: int) -> list[Term]:
    """What the walk holds from capture to the last layer on the calibration device; `moments`: the
    bytes of the layer's moments there."""
    h, hd, t, c = shape.hidden, shape.head_dim, layout.seq_len, settings.compute_bytes
    streams = 2 if settings.sequential else 1
    kept = layout.kept_tokens
    terms = [
        Term("token ids", layout.tokens * TOKEN_ID),
        Term("carried hidden states", streams * layout.tokens * h * c),
        Term("layer arguments (eager masks, RoPE cos/sin)", layout.tokens * (t + 2 * hd) * c),
        Term("moments (float64)", moments),
    ]
    if kept:
        replay = kept * (streams * h + t + 2 * hd) * FLOAT32
        terms.append(Term("replayed inputs (float32)", replay))
    return terms


def moment_bytes(shape: ModelShape, settings: PlanSettings) -> int:
    """Two (h+1)^2 float64 moments (inputs, mixed inputs), three with sequential (the cross moment)."""
    return (3 if settings.sequential else 2) * (shape.hidden + 1) ** 2 * FLOAT64


def layer_terms(shape: ModelShape, settings: PlanSettings, on_host: bool) -> list[Term]:
    """One decoder layer's weights in the compute dtype and the source-dtype copy they are read from
    (on a GPU the compute-dtype copy is on the device, and made on the host first)."""
    c, s = settings.compute_bytes, shape.source_bytes
    terms = [term("layer weights, compute dtype", [n * c for n in shape.layer_tensors])]
    if on_host and s != c:
        terms.append(term("layer weights, source copy while loading", [n * s for n in shape.layer_tensors]))
    return terms


def activation_terms(shape: ModelShape, settings: PlanSettings, layout: Layout) -> list[Term]:
    """One batch through the layer with eager attention and the hooks: the scores and the float32
    softmax (batch x heads x T x T), the hook's strided rows (one sequence's; the batch's when they are
    converted to float32), the MLP's three intermediates, about eight hidden-sized tensors (and the
    hook's float32 copy), and the float32 x^T x with its float64 copy."""
    b, t, h, c = layout.batch_sequences, layout.seq_len, shape.hidden, settings.compute_bytes
    probs = b * shape.heads * t * t
    return [
        term("eager attention probabilities", [probs * c, probs * FLOAT32]),
        term("mixed-moment rows", shape.heads * (t // MIXED_STRIDE) * t * FLOAT32, 1 if c == FLOAT32 else b),
        term("MLP activations", b * t * shape.mlp_width * c, 3),
        term("hidden-sized activations", [b * t * h * c] * 8 + [b * t * h * FLOAT32]),
        term("moment products", [h * h * FLOAT32, h * h * FLOAT64]),
    ]


def merge_terms(shape: ModelShape, settings: PlanSettings) -> list[Term]:
    """fit's and aligned's workspace (metric.py, grouped.py): the layer's attention tensors as read and
    in float32, their rows in float64 (q, k, v and o), the K and V rows in L-space, the Cholesky
    factors of the moments (fit: two) and the factoring's temporaries; sequential calibration's
    transfer adds three (h+1)^2 matrices."""
    if settings.merge not in ("fit", "aligned"):
        return []
    h1, attn = shape.hidden + 1, shape.attention_params
    square = h1 * h1 * FLOAT64
    factors = 2 if settings.merge == "fit" else 1
    terms = [
        term("attention tensors (source dtype, float32)", [attn * shape.source_bytes, attn * FLOAT32]),
        term("q, k, v, o rows (float64)", attn * FLOAT64),
        term("K and V rows in L-space (float64)", shape.kv_heads * shape.head_dim * h1 * FLOAT64, 2),
        term("Cholesky factors (float64)", square, factors),
        term("factoring temporaries (float64)", square, 4),
    ]
    if settings.sequential:
        terms.append(term("sequential transfer (float64)", square, 3))
    return terms


def refine_terms(shape: ModelShape, settings: PlanSettings, layout: Layout) -> list[Term]:
    """refine (refine.py): the converted attention module with its gradients, Adam's two states and
    the best weights seen (float32: 5 copies), the source's outputs on the replayed tokens, and one
    step's activations (sdpa stores no T x T scores: about 12 hidden-sized tensors a token)."""
    if not settings.refines:
        return []
    params = shape.converted_attention_params(settings.groups)
    return [
        term("refined attention, gradients, Adam, best (float32)", params * FLOAT32, 5),
        term("source outputs on replayed tokens", layout.kept_tokens * shape.hidden * FLOAT32),
        term("one step's activations", layout.kept_batch_tokens * shape.hidden * FLOAT32, 12),
    ]


def write_terms(shape: ModelShape, settings: PlanSettings) -> list[Term]:
    """Streaming the output: the largest tensor as read, and converted to the output dtype."""
    terms = [Term("largest tensor, as read", shape.largest_tensor * shape.source_bytes)]
    if settings.output_bytes != shape.source_bytes:
        terms.append(Term("largest tensor, converted", shape.largest_tensor * settings.output_bytes))
    return terms


def kept_by_allocator(phase: Phase) -> Term:
    return Term(
        "kept by the allocator from calibrate (glibc, blocks < 32 MiB)", sum(t.kept for t in phase.terms)
    )
