"""`--target mla` at its exact limit: an MQA Llama (one KV head) at full RoPE (qk_rope_dim = head_dim)
and full rank (kv_lora_rank = head_dim: [K_nope; V] is V alone, head_dim rows) becomes a DeepseekV3
that plain transformers loads and that computes the source's logits.

Tolerance, in float64: every matrix product is float64 (rounding ~1e-16), except that both models'
RMSNorms compute in float32 (transformers casts to float32 inside the norm). The source and the output
share their input/post-attention/final norms, so those round alike as long as their inputs agree;
the output's one extra float32 step is kv_a_layernorm on the latent, a relative error <= 2^-24 ~ 6e-8
per latent element per layer, plus the norm's distance from linear, <= 5e-9 relative by construction
(factor.LINEAR_TOLERANCE). Two layers with random weights amplify a relative input error by O(10) at
most into logits of size O(1): 1e-5 absolute is over 10x that bound. A wrong pairing of RoPE dims or a
wrong head order moves logits by far more than 1e-2 (checked below: the test can fail).
"""

from __future__ import annotations

import json

import pytest
import torch
from method_helpers import save_char_tokenizer
from tiny_models import build_tiny

from uptrain.architectures.kv_cache import measure_kv_cache_elements_per_token
from uptrain.checkpoint.source import open_source
from uptrain.config.conversion import ConvertSection
from uptrain.convert.convert import convert_checkpoint

TOLERANCE = 1e-5
HEAD_DIM = 8
TEXT = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 40


def mla_settings(text, rank, rope, **extra):
    return ConvertSection(
        target="mla", kv_lora_rank=rank, qk_rope_dim=rope, calibration_data=str(text),
        calibration_tokens=512, calibration_seq_len=64, **extra,
    )  # fmt: skip


@pytest.fixture
def mqa_llama(tmp_path):
    path = build_tiny("llama", tmp_path / "src", kv_heads=1, dtype=torch.float64)
    save_char_tokenizer(path)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    return path, text


def logits(path, ids, **config_changes):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    for key, value in config_changes.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float64).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits, model


@pytest.mark.parametrize("factor", ["care", "svd", "aware"])
def test_mqa_at_full_rank_and_full_rope_is_exact(mqa_llama, tmp_path, factor):
    src, text = mqa_llama
    out = tmp_path / f"mla-{factor}"
    result = convert_checkpoint(
        open_source(src), out, mla_settings(text, HEAD_DIM, HEAD_DIM, mla_factor=factor)
    )
    ids = torch.randint(3, 96, (2, 40), generator=torch.Generator().manual_seed(0))
    expected, _ = logits(src, ids)
    got, model = logits(out, ids)
    assert type(model).__name__ == "DeepseekV3ForCausalLM"
    assert (got - expected).abs().max() < TOLERANCE
    record = json.loads((out / "uptrain.json").read_text())["conversion"]
    assert record["approximations"]["exact"] is True
    assert result.kv_bytes_per_token_after == 2 * (HEAD_DIM + HEAD_DIM) * 8  # 2 layers x (R + D) x float64
    # the same weights read with the other RoPE layout (rotate_half instead of interleaved pairs) are wrong
    wrong, _ = logits(out, ids, rope_interleave=False)
    assert (wrong - expected).abs().max() > 1e-2


def test_plain_transformers_loads_generates_and_caches_the_latent(mqa_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    src, text = mqa_llama
    out = tmp_path / "mla"
    rank, rope = 6, 4  # below the exact limit: still a valid model
    result = convert_checkpoint(open_source(src), out, mla_settings(text, rank, rope, dtype="fp32"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"] and "auto_map" not in config
    assert config["first_k_dense_replace"] == config["num_hidden_layers"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)  # no trust_remote_code
    assert type(model).__name__ == "DeepseekV3ForCausalLM"
    assert all(type(layer.mlp).__name__ == "DeepseekV3MLP" for layer in model.model.layers)
    ids = torch.tensor([[5, 6, 7, 8]])
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 9)
    per_token = measure_kv_cache_elements_per_token(model)  # what DeepseekV3's cache really holds
    assert per_token == 2 * (rank + rope)
    assert result.kv_bytes_per_token_after == per_token * 4
    assert result.kv_bytes_per_token_before == 2 * 2 * 1 * HEAD_DIM * 8  # K and V, 2 layers, float64


def test_the_command_line_converts_reports_and_verifies(mqa_llama, tmp_path):
    from cli_helpers import run_cli

    src, text = mqa_llama
    args = ["--target", "mla", "--kv-lora-rank", "8", "--qk-rope-dim", "8", "--calibration-data", str(text)]
    r = run_cli("convert", src, tmp_path / "out", *args, "--calibration-seq-len", "64", "--verify")
    assert r.exit_code == 0, r.output
    assert "latent 8 + RoPE" in r.output and "KV cache per token: 256 B -> 256 B" in r.output
    assert "serving: not checked for DeepseekV3" in r.output
