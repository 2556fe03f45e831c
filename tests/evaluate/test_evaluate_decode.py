"""The payoff of fewer KV heads: cache bytes against the formula, and the decode loop against generate()."""

import pytest
import torch
from tiny_models import build_tiny

from uptrain.errors import UptrainError
from uptrain.evaluate import decode_throughput, kv_cost


def load(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


@pytest.mark.parametrize(
    "kv_heads,dtype,element", [(8, torch.float32, 4), (2, torch.float32, 4), (1, torch.bfloat16, 2)]
)
def test_kv_bytes_follow_the_formula(tmp_path, kv_heads, dtype, element):
    model = load(build_tiny("llama", tmp_path / "m", kv_heads=kv_heads), dtype)
    cost = kv_cost(model, batch=3, context=100)
    per_token = 2 * 2 * kv_heads * 8 * element  # K and V x 2 layers x KV heads x head_dim 8 x bytes
    assert cost.bytes_per_token == per_token
    assert cost.bytes == per_token * 3 * 100


def test_decode_generates_what_generate_does(tmp_path):
    model = load(build_tiny("llama", tmp_path / "m", kv_heads=2))
    result = decode_throughput(model, batch=2, context=16, new_tokens=5, seed=3)
    prompt = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)  # else generate() masks the prompt's pad ids (0)
    expected = model.generate(
        prompt, attention_mask=mask, max_new_tokens=7, min_new_tokens=7, do_sample=False, pad_token_id=0
    )
    assert result.generated == expected[:, 16:].tolist()
    assert result.tokens_per_s == pytest.approx(2 * 5 / result.seconds)
    assert (result.batch, result.context, result.new_tokens) == (2, 16, 5)


def test_decode_context_must_fit_the_positions(tmp_path):
    model = load(build_tiny("llama", tmp_path / "m", kv_heads=2))
    with pytest.raises(UptrainError, match="exceeds the model's 128 positions; use --kv-context 95"):
        decode_throughput(model, context=100, new_tokens=32)


def test_random_cache_is_shaped_like_a_prefill(tmp_path):
    from uptrain.evaluate.decode import random_cache

    model = load(build_tiny("llama", tmp_path / "m", kv_heads=2))
    prompt = torch.randint(0, 96, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        real = model(input_ids=prompt, use_cache=True).past_key_values
    fake = random_cache(model, batch=3, context=20)
    assert len(fake.layers) == len(real.layers) == 2
    for ours, theirs in zip(fake.layers, real.layers, strict=True):
        assert ours.keys.shape == theirs.keys.shape == (3, 2, 20, 8)  # batch, KV heads, positions, head_dim
        assert ours.values.shape == theirs.values.shape
        assert ours.keys.dtype == theirs.keys.dtype
    assert fake.get_seq_length() == 20


def test_decode_after_a_random_prefill_continues_from_the_context(tmp_path):
    model = load(build_tiny("llama", tmp_path / "m", kv_heads=1))
    result = decode_throughput(model, batch=2, context=30, new_tokens=4, prefill="random")
    assert (result.batch, result.context, result.new_tokens) == (2, 30, 4)
    assert len(result.generated) == 2 and all(len(row) == 2 + 4 for row in result.generated)
    assert result.tokens_per_s == pytest.approx(2 * 4 / result.seconds)
    with pytest.raises(UptrainError, match="exceeds the model's 128 positions"):
        decode_throughput(model, context=120, new_tokens=8, prefill="random")


@pytest.mark.parametrize("prefill", ["model", "random"])
def test_decode_uses_the_current_cache_argument(tmp_path, prefill, capfd):
    """transformers 5.x deprecates forward(past_key_values=...) (FutureWarning: removed in 5.40) and
    logs a notice when an output's .past_key_values is read; the benchmark and the KV-cache
    measurement must do neither, so a minor transformers release cannot break `uptrain eval`."""
    import warnings

    model = load(build_tiny("llama", tmp_path / "m", kv_heads=2))
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = decode_throughput(model, batch=1, context=8, new_tokens=3, prefill=prefill)
        kv_cost(model, batch=1, context=8)
    assert len(result.generated[0]) == 5
    assert "deprecated" not in capfd.readouterr().err
