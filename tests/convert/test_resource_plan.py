"""The arithmetic of `uptrain convert --plan` (uptrain/convert/resource_*.py): its FLOP counts against
torch's own FLOP counter on a real layer and the real hooks, its token layout against the batches the
calibration pass cuts, and its memory phases' structure. (The peak against a measured RSS:
tests/cli/test_convert_plan.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from uptrain.architectures import plan_route
from uptrain.convert.calibration.hooks import LayerAccumulator
from uptrain.convert.calibration.stats import calibration_batches
from uptrain.convert.resource_flops import forward_flops, statistics_flops
from uptrain.convert.resource_inputs import model_shape
from uptrain.convert.resource_memory import CUDA_CONTEXT, MMAP_THRESHOLD_MAX
from uptrain.convert.resource_plan import PlanSettings, plan_resources
from uptrain.convert.resource_shapes import calibration_layout

CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 300,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}
SETTINGS = PlanSettings(
    groups=2,
    calibrated=True,
    merge="fit",
    similar=False,
    refines=False,
    refine_steps=0,
    keep_tokens=0,
    keep_batch_tokens=512,
    tokens=4096,
    seq_len=512,
    sequential=False,
    device="cpu",
    compute_dtype="fp32",
    output_bytes=2,
)


@pytest.fixture(scope="module")
def shape():
    return model_shape(CONFIG, plan_route(CONFIG, 2))


def test_model_shape_counts_the_layer_the_embeddings_and_the_largest_tensor(shape):
    h, i, v = 64, 160, 300
    assert shape.layer_params == 4 * h * h + 3 * h * i + 2 * h  # q k v o, gate up down, two norms
    assert shape.attention_params == 4 * h * h
    assert shape.embedding_params == v * h + h  # embed_tokens and the final norm, not lm_head
    assert shape.largest_tensor == v * h and shape.source_bytes == 2


def test_forward_flops_match_torchs_flop_counter(shape):
    """torch counts every matrix product of the layers' forward (eager attention); the plan's 2 x
    parameters a token counts the norms' 2h as well and torch counts RoPE's frequency product: both
    under 1% here."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **{k: v for k, v in CONFIG.items() if k != "model_type"})
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    seq_len, sequences = 48, 3
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.model(input_ids=torch.randint(0, 300, (sequences, seq_len)), use_cache=False)
    settings = dataclasses.replace(SETTINGS, tokens=seq_len * sequences, seq_len=seq_len)
    planned = forward_flops(shape, settings, calibration_layout(settings)) * shape.layers
    assert planned == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_statistics_flops_match_torchs_flop_counter(shape):
    """The hooks' products on one batch (the inputs' moment and the mixed moment); torch does not
    count the vector products (sums, a.sum(0) @ x): 2 T h of T h^2 + ..., under 1% here."""
    seq_len, sequences, h = 64, 2, shape.hidden
    acc = LayerAccumulator(h, torch.device("cpu"))
    hidden = torch.randn(sequences, seq_len, h)
    probs = torch.softmax(torch.randn(sequences, shape.heads, seq_len, seq_len), -1)
    with FlopCounterMode(display=False) as counter:
        acc.before(None, (hidden,), {})
        acc.after(None, (), {}, (hidden, probs))
    settings = dataclasses.replace(SETTINGS, tokens=seq_len * sequences, seq_len=seq_len)
    planned = statistics_flops(shape, settings, calibration_layout(settings))
    assert planned == pytest.approx(counter.get_total_flops(), rel=0.01)


@pytest.mark.parametrize(
    "tokens, seq_len, keep, keep_batch",
    [
        (4096, 512, 0, 512),
        (4096, 512, 4096, 512),
        (1000, 512, 600, 256),
        (300, 512, 0, 512),
        (8192, 128, 700, 512),
    ],
)
def test_layout_is_how_the_calibration_pass_cuts_the_tokens(tokens, seq_len, keep, keep_batch):
    settings = dataclasses.replace(
        SETTINGS, tokens=tokens, seq_len=seq_len, keep_tokens=keep, keep_batch_tokens=keep_batch
    )
    layout = calibration_layout(settings)
    t = min(seq_len, tokens)
    sequences = torch.zeros(tokens // t, t, dtype=torch.long)
    kept = min(len(sequences), -(-keep // t)) if keep else 0
    batches = calibration_batches(sequences, kept, keep_batch)
    assert layout.tokens == sequences.numel()
    assert layout.kept_tokens == sum(b.numel() for b, k in batches if k)
    assert layout.batch_sequences == max(len(b) for b, _ in batches)
    assert layout.kept_batch_sequences == max([len(b) for b, k in batches if k], default=0)


def test_peak_is_the_baseline_plus_the_largest_phase(shape):
    plan = plan_resources(shape, SETTINGS, 100 * 2**20, None)
    host = plan.host
    assert [p.name for p in host.phases] == ["capture", "calibrate", "merge", "write"]
    assert host.peak == host.baseline_bytes + max(p.total for p in host.phases)
    assert plan.device is None
    refine = plan_resources(shape, dataclasses.replace(SETTINGS, refines=True, keep_tokens=512), 0, None)
    assert "refine" in [p.name for p in refine.host.phases]


def test_sequential_carries_two_streams_and_a_cross_moment(shape):
    plain = plan_resources(shape, SETTINGS, 0, None).host.phases[1]
    sequential = plan_resources(shape, dataclasses.replace(SETTINGS, sequential=True), 0, None).host.phases[1]
    terms = lambda phase: {t.name: t.bytes for t in phase.terms}  # noqa: E731
    assert terms(sequential)["carried hidden states"] == 2 * terms(plain)["carried hidden states"]
    assert terms(sequential)["moments (float64)"] == terms(plain)["moments (float64)"] * 3 // 2


def test_eager_probabilities_grow_with_the_sequence_length(shape):
    """Batches hold about 2048 tokens, so batch x T x T grows as T: 512 -> 2048 is 4x."""
    probs = {}
    for seq_len in (512, 2048):
        settings = dataclasses.replace(SETTINGS, seq_len=seq_len)
        phase = plan_resources(shape, settings, 0, None).host.phases[1]
        probs[seq_len] = next(t.bytes for t in phase.terms if t.name == "eager attention probabilities")
    assert probs[2048] == 4 * probs[512]


def test_a_gpu_plan_has_gpu_memory_and_keeps_activations_off_the_host(shape):
    settings = dataclasses.replace(
        SETTINGS, device="cuda", compute_dtype="bf16", refines=True, keep_tokens=512
    )
    plan = plan_resources(shape, settings, 0, None)
    assert plan.device is not None and plan.device.baseline_bytes == CUDA_CONTEXT
    assert [p.name for p in plan.device.phases] == ["capture", "calibrate", "refine"]
    host_terms = {t.name for p in plan.host.phases for t in p.terms}
    assert "eager attention probabilities" not in host_terms and "q, k, v, o rows (float64)" in host_terms


def test_uncalibrated_methods_only_stream(shape):
    settings = dataclasses.replace(SETTINGS, calibrated=False, merge="mean")
    plan = plan_resources(shape, settings, 300 * 2**20, None)
    (write,) = plan.host.phases
    assert plan.host.peak == 300 * 2**20 + shape.largest_tensor * 2  # bf16 in, bf16 out: one copy
    assert plan.flops.total == 0 and plan.seconds == 0 and write.name == "write"


def test_only_blocks_under_the_mmap_threshold_are_kept(shape):
    """At a 7B shape every layer tensor and activation is over 32 MiB, but one sequence's mixed-moment
    rows (32 heads x 128 x 512 x 4 bytes = 8 MiB): glibc keeps only those."""
    big = dataclasses.replace(
        shape, hidden=4096, heads=32, kv_heads=32, head_dim=128, mlp_width=11008,
        layer_tensors=(4096 * 4096,) * 4 + (11008 * 4096,) * 3, attention_params=4 * 4096 * 4096,
    )  # fmt: skip
    calibrate, merge = plan_resources(big, SETTINGS, 0, None).host.phases[1:3]
    kept = next(t for t in merge.terms if t.name.startswith("kept by the allocator"))
    small = plan_resources(shape, SETTINGS, 0, None).host.phases[2]
    assert kept.bytes == next(t.bytes for t in calibrate.terms if t.name == "mixed-moment rows") == 8 * 2**20
    assert next(t for t in small.terms if t.name.startswith("kept")).bytes > 0
    assert MMAP_THRESHOLD_MAX == 32 * 2**20
