"""Pooling in bf16 with large weights: every tensor pooled over KV heads (K and V weights, their biases,
KV-sized norms, per-head norms; separate, fused and Conv1D layouts) comes out as its true mean, not inf.

bf16 has float32's exponent range, so a float32 sum of a few bf16 weights near bf16's maximum overflows;
the converter accumulates in float64. Distinct values near bf16's maximum, against a float64 mean:
tests/convert/test_convert.py::test_bf16_pooling_near_bf16_max_is_the_float64_mean; the pooling math
alone: tests/convert/test_pooling.py."""

from __future__ import annotations

import pytest
import torch
from fused_models import build_source
from safetensors.torch import load_file, save_file
from tiny_models import build_tiny

from uptrain.architectures import load_table
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

BIG = torch.tensor(3.0e38).to(torch.bfloat16)  # bf16's largest finite value is 3.39e38

# model_type (or fused_models name) -> the pooled tensors (besides k/v weights) that must be present
KINDS = {
    "llama": [],
    "qwen2": ["k_proj.bias", "v_proj.bias"],
    "stablelm": ["k_proj.bias", "v_proj.bias", "k_layernorm.norms.0.weight"],  # per-head LayerNorms
    "olmo2": ["k_norm.weight"],
    "cohere": ["k_norm.weight"],
    "phi3": [],  # fused [Q | K | V]
    "gpt2": ["c_attn.bias"],  # Conv1D, fused; becomes gpt_bigcode
}
FUSED = {"phi3", "gpt2"}


def _state(path):
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def _bf16_source(model_type: str, path):
    if model_type in FUSED:
        return build_source(model_type, path)
    return build_tiny(model_type, path, kv_heads=8)


@pytest.mark.parametrize("model_type", list(KINDS))
def test_large_bf16_weights_pool_to_their_mean_not_inf(model_type, tmp_path):
    src = _bf16_source(model_type, tmp_path / "src")
    prefix = load_table()[model_type].prefix(0) + "."
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in _state(src).items()}
    for name, tensor in state.items():
        if name.startswith(prefix) and tensor.is_floating_point():
            state[name] = torch.full_like(tensor, BIG)  # every attention tensor of layer 0
    for f in src.glob("*.safetensors"):
        f.unlink()
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})

    convert_checkpoint(open_source(src), tmp_path / "out", ConvertSection(groups=1))
    out = _state(tmp_path / "out")
    pooled = {n: t for n, t in out.items() if n.startswith(prefix)}
    for name, tensor in pooled.items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.isfinite(tensor).all(), f"{name} overflowed"
        assert (tensor == BIG).all(), name  # the mean of equal values is that value
    for kind in KINDS[model_type]:
        assert prefix + kind in pooled, (kind, sorted(pooled))
    assert any(out[n].shape != state[n].shape for n in pooled if n in state), "nothing was pooled"


def test_bf16_means_are_rounded_once_not_summed_in_bf16(tmp_path):
    """Heads 256, 1, 1, ... : summed in bf16 the 1s vanish (256 + 1 = 256); the true mean 32.875
    rounds to 33. Every other group element likewise, against the test's own float64 mean."""
    src = build_tiny("llama", tmp_path / "src", kv_heads=8, dtype=torch.bfloat16)
    state = load_file(src / "model.safetensors")
    name = "model.layers.1.self_attn.v_proj.weight"
    heads = torch.ones(8, 8, 64)
    heads[0] = 256.0
    heads[1:] += torch.arange(7).reshape(7, 1, 1) / 128  # distinct, exactly representable values
    state[name] = heads.reshape(64, 64).to(torch.bfloat16)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})

    convert_checkpoint(open_source(src), tmp_path / "out", ConvertSection(groups=1))
    pooled = load_file(tmp_path / "out" / "model.safetensors")[name]
    expected = state[name].double().reshape(8, 8, 64).mean(dim=0).to(torch.bfloat16)
    in_bf16 = state[name].reshape(8, 8, 64)[0]
    for head in state[name].reshape(8, 8, 64)[1:]:
        in_bf16 = in_bf16 + head  # each sum rounded to bf16
    assert torch.equal(pooled, expected)
    assert not torch.equal(expected, in_bf16 / 8)  # the test can tell the two apart
