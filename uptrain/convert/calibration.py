"""The calibration pass: run the source model on calibration text and keep, per layer, only what
the calibrated methods need.

Forward pre-hooks on every layer's attention module see its input x (after the input norm) and
accumulate E[x~ x~^T] with x~ = [x; 1] in float64: (hidden+1)^2 numbers per layer, whatever the
token count. Query, key and value statistics all follow from it and the weights (metric.py). For
`refine`, the attention inputs of the first `keep_tokens` tokens are kept as they are, with the
other arguments the module got (RoPE cos/sin, mask), so it can be replayed layer by layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, get_architecture, read_dims
from uptrain.convert.attention_modules import AttentionModules
from uptrain.convert.checkpoint import MemoryShard, PickleShard, SourceCheckpoint
from uptrain.data import TextSource, join_documents, load_documents
from uptrain.errors import UptrainError
from uptrain.models import load_causal_lm, load_tokenizer

DEFAULT_CALIBRATION = TextSource(split="train")  # WikiText-2 raw, train split
BATCH_TOKENS = 2048  # tokens per forward pass
MIXED_STRIDE = 4  # every 4th query position's attention mix of the inputs is accumulated
_NOT_REPLAYED = ("past_key_values", "past_key_value")


@dataclass(frozen=True)
class CalibrationSpec:
    data: TextSource = DEFAULT_CALIBRATION
    tokens: int = 4096  # tokens whose statistics are accumulated
    seq_len: int = 512  # calibration text is cut into sequences of this many tokens
    keep_tokens: int = 0  # of those, how many tokens of attention inputs are kept for `refine`
    sequential: bool = False  # calibrate each layer on the partly converted model's inputs (sequential.py)

    def record(self) -> dict[str, Any]:
        return {
            "data": self.data.describe(),
            "tokens": self.tokens,
            "seq_len": self.seq_len,
            "sequential": self.sequential,
        }


@dataclass
class ReplayBatch:
    """One batch of a layer's attention inputs, as the module was called."""

    hidden_states: torch.Tensor  # (batch, seq, hidden) float32
    kwargs: dict[str, Any]  # position_embeddings, attention_mask, ...
    teacher_hidden: torch.Tensor | None = None  # the source's input, where it differs (sequential)


@dataclass
class LayerCalibration:
    second_moment: torch.Tensor  # (in + 1, in + 1) float64: E[x~ x~^T], x~ = [x; 1]
    mixed_moment: torch.Tensor | None  # the same for xbar = sum_t a_t x_t, each query's mix (eager only)
    tokens: int
    rope: str  # the table's RoPE pairing: half, interleaved or none
    rotary_dim: int  # head dims RoPE rotates (partial rotary: fewer than head_dim)
    keys_normalized: bool  # a norm follows k_proj (the table's qk_norm, on in this config)
    replay: list[ReplayBatch] = field(default_factory=list)
    modules: AttentionModules | None = None
    cross_moment: torch.Tensor | None = None  # sequential: E[x~_src x~^T], source input against these
    converted: Any = None  # sequential: the layer's converted AttentionWeights, made during calibration
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # derived data (factors)


def calibration_spec(
    data: str | None = None,
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    tokens: int = 4096,
    seq_len: int = 512,
    sequential: bool = False,
) -> CalibrationSpec:
    """A CalibrationSpec from the command line's --calibration-* options (data None: the default)."""
    if tokens < 1 or seq_len < 2:
        raise UptrainError("--calibration-tokens must be at least 1 and --calibration-seq-len at least 2")
    if data is None:
        source = TextSource(
            DEFAULT_CALIBRATION.dataset, config or DEFAULT_CALIBRATION.config, split, text_column
        )
    else:
        source = TextSource(data, config, split, text_column)
    return CalibrationSpec(source, tokens, seq_len, sequential=sequential)


_FLAGS = {"--dataset-config": "--calibration-config", "--split": "--calibration-split"}
_FLAGS |= {"--text-column": "--calibration-text-column", "--dataset": "--calibration-data"}


def _load_documents(data: TextSource) -> list[str]:
    """load_documents, with its errors naming the --calibration-* flags instead of eval's."""
    try:
        return load_documents(data)
    except UptrainError as exc:
        pattern = "|".join(re.escape(flag) + r"(?![\w-])" for flag in _FLAGS)
        raise UptrainError(re.sub(pattern, lambda m: _FLAGS[m.group(0)], str(exc))) from None


def calibration_token_ids(tokenizer: Any, data: TextSource, tokens: int) -> torch.Tensor:
    """The first `tokens` tokens of the documents joined (no special tokens added)."""
    documents = _load_documents(data)
    taken, chars = [], 0
    for doc in documents:  # tokenize only about as much text as needed (~4 characters a token)
        taken.append(doc)
        chars += len(doc)
        if chars > 8 * tokens:
            break
    ids = tokenizer(join_documents(taken), add_special_tokens=False).input_ids
    return torch.tensor(ids[:tokens], dtype=torch.long)


def load_source_model(source: SourceCheckpoint) -> Any:
    """The source as a float32 transformers model. Weights already in memory (GGUF) or read by
    uptrain's own loader (pickled .bin, which the user allowed; read with weights_only) are passed
    in as a state dict, so transformers never unpickles anything itself."""
    if any(isinstance(s, (MemoryShard, PickleShard)) for s in source.shards):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        config = AutoConfig.from_pretrained(str(source.root))
        state = {name: source.load(name).to(torch.float32) for name in source.names()}
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32)
    else:
        model = load_causal_lm(source.model_path, dtype=torch.float32)
    return model.eval()


class _Moments:
    """Running E[x~ x~^T] with x~ = [x; 1], accumulated in float64."""

    def __init__(self, hidden: int) -> None:
        self.xx = torch.zeros(hidden, hidden, dtype=torch.float64)
        self.x = torch.zeros(hidden, dtype=torch.float64)
        self.count = 0

    def add(self, xx: torch.Tensor, x: torch.Tensor, count: int) -> None:
        self.xx += xx.double()
        self.x += x.double()
        self.count += count

    def matrix(self) -> torch.Tensor | None:
        if not self.count:
            return None
        n = self.xx.shape[0]
        s = torch.empty(n + 1, n + 1, dtype=torch.float64)
        s[:n, :n], s[:n, n], s[n, :n], s[n, n] = self.xx, self.x, self.x, self.count
        return s / self.count


class _LayerAccumulator:
    """Hooks on one attention module: its inputs' moments, the moments of the inputs as each query
    mixes them (where the module returns its attention probabilities), replayable batches."""

    def __init__(self, hidden: int) -> None:
        self.inputs = _Moments(hidden)
        self.mixed = _Moments(hidden)
        self.rotary_dim: int | None = None
        self.replay: list[ReplayBatch] = []
        self.keep = False
        self._hidden: torch.Tensor | None = None

    def before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = (args[0] if args else kwargs["hidden_states"]).detach().to(torch.float32)
        flat = hidden.reshape(-1, hidden.shape[-1])
        self.inputs.add(flat.T @ flat, flat.sum(0), flat.shape[0])
        self._hidden = hidden
        if self.rotary_dim is None:
            cos = (kwargs.get("position_embeddings") or (None,))[0]
            self.rotary_dim = 0 if cos is None else int(cos.shape[-1])
        if self.keep:
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states" and k not in _NOT_REPLAYED}
            self.replay.append(ReplayBatch(hidden.clone(), rest))

    def after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        hidden, self._hidden = self._hidden, None
        if probs is not None and hidden is not None and probs.dim() == 4:
            add_mixed(self.mixed, probs, hidden)


def add_mixed(moments: _Moments, probs: torch.Tensor, hidden: torch.Tensor) -> None:
    """Accumulate xbar = sum_t a_t x_t for every head and every MIXED_STRIDE-th query position.
    probs: (B, H, T, T) attention probabilities, hidden: (B, T, in)."""
    rows = probs[:, :, ::MIXED_STRIDE].to(torch.float32)  # (B, H, T/stride, T)
    for b in range(hidden.shape[0]):  # sum_i,m xbar xbar^T = X^T (sum_i,m a^T a) X
        a = rows[b].reshape(-1, rows.shape[-1])
        x = hidden[b]
        moments.add(x.T @ ((a.T @ a) @ x), a.sum(0) @ x, a.shape[0])


def calibration_batches(sequences: torch.Tensor, keep_sequences: int) -> list[tuple[torch.Tensor, bool]]:
    """About BATCH_TOKENS tokens per batch; the first `keep_sequences` sequences (those replayed)
    in batches of their own. Each batch comes with whether it is kept."""
    per_batch = max(1, BATCH_TOKENS // sequences.shape[1])
    kept, rest = sequences[:keep_sequences], sequences[keep_sequences:]
    batches = [(b, True) for b in kept.split(per_batch)] + [(b, False) for b in rest.split(per_batch)]
    return [(b, keep) for b, keep in batches if len(b)]


@torch.no_grad()
def collect_statistics(
    model: Any,
    arch: Architecture,
    dims: AttentionDims,
    config: dict,
    sequences: torch.Tensor,
    keep_sequences: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, LayerCalibration]:
    """Run `model` on `sequences` (N, T) and return each layer's calibration. The first
    `keep_sequences` sequences' attention inputs are kept for replay. The model runs with eager
    attention (which returns the probabilities the hooks read); replays use its own."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    accumulators = [_LayerAccumulator(dims.hidden) for _ in range(dims.layers)]
    handles = []
    for i, acc in enumerate(accumulators):
        module = model.get_submodule(arch.prefix(i))
        handles.append(module.register_forward_pre_hook(acc.before, with_kwargs=True))
        handles.append(module.register_forward_hook(acc.after, with_kwargs=True))
    batches = calibration_batches(sequences, keep_sequences)
    try:
        for done, (batch, keep) in enumerate(batches):
            for acc in accumulators:
                acc.keep = keep
            model(input_ids=batch, use_cache=False, logits_to_keep=1)
            if progress:
                progress(done + 1, len(batches))
    finally:
        for handle in handles:
            handle.remove()
        model.set_attn_implementation(implementation)
    normalized = arch.normalizes_keys(config)
    return {
        i: LayerCalibration(
            second_moment=acc.inputs.matrix(),
            mixed_moment=acc.mixed.matrix(),
            tokens=acc.inputs.count,
            rope=arch.rope,
            rotary_dim=0 if arch.rope == "none" else (acc.rotary_dim or 0),
            keys_normalized=normalized,
            replay=acc.replay,
            modules=AttentionModules.of(model, arch, dims, i, implementation),
        )
        for i, acc in enumerate(accumulators)
    }


def collect_calibration(
    source: SourceCheckpoint,
    spec: CalibrationSpec,
    progress: Callable[[int, int], None] | None = None,
    convert_layer: Any = None,
) -> dict[int, LayerCalibration]:
    """Tokenize the calibration text with the source's tokenizer and collect every layer's
    calibration from the source model. With spec.sequential and a `convert_layer(layer, weights,
    calibration)`, layers are converted during calibration, each on the partly converted model's
    inputs (sequential.py)."""
    if spec.tokens < 1 or spec.seq_len < 2:
        raise UptrainError("--calibration-tokens must be at least 1 and --calibration-seq-len at least 2")
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    tokenizer = load_tokenizer(source.root or source.model_path)
    ids = calibration_token_ids(tokenizer, spec.data, spec.tokens)
    seq_len = min(spec.seq_len, len(ids))
    if seq_len < 2:
        raise UptrainError(f"{spec.data.describe()} has too little text to calibrate on; pass more text")
    sequences = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    keep = min(len(sequences), math.ceil(spec.keep_tokens / seq_len)) if spec.keep_tokens else 0
    model = load_source_model(source)
    if spec.sequential and convert_layer is not None:
        from uptrain.convert.sequential import collect_sequential

        return collect_sequential(model, arch, dims, source.config, sequences, keep, convert_layer, progress)
    return collect_statistics(model, arch, dims, source.config, sequences, keep, progress)
