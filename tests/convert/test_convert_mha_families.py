"""Pythia (gpt_neox), GPT-J and CodeGen become phi: at --groups H the same logits as the source's own
class, at G < H an explicit per-head mean of that translation, and the calibrated methods run on
the translation. Every model here is a tiny random one with non-trivial norms, biases and partial
rotary; the references are transformers' source classes and arithmetic written in the tests."""

import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from method_helpers import save_char_tokenizer
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

H, HIDDEN, HD = 8, 64, 8
IDS = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(3))
CONFIGS = {
    # rotary_pct 0.5 (4 of 8 dims), a non-default base, parallel residual (Pythia's)
    "gpt_neox": dict(
        hidden_size=HIDDEN, num_attention_heads=H, num_hidden_layers=2, intermediate_size=96,
        rotary_pct=0.5, rotary_emb_base=500, hidden_act="gelu", use_parallel_residual=True,
    ),
    "gptj": dict(n_embd=HIDDEN, n_head=H, n_layer=2, n_inner=96, rotary_dim=4),  # interleaved RoPE
    "codegen": dict(n_embd=HIDDEN, n_head=H, n_layer=2, rotary_dim=4),  # n_inner null: 4 x n_embd
}  # fmt: skip
TEXT = "The quick brown fox jumps over the lazy dog. Grouped-query attention shares keys and values.\n" * 30
# float32 rounding only: folding a LayerNorm into the next layer, W(g*n + b) + c = (W g) n + (c + W b),
# and splitting a fused projection change the order of sums of ~100 terms of size ~1, each off by
# ~6e-8 relatively; logits are O(1), so 1e-5 is some 30x above what that can add up to and far below
# any real error (a wrong permutation or a lost shift moves logits by ~1e-1).
ATOL = 1e-5


def build(model_type, path, **extra):
    """A random source model with larger-than-default weights and random norm scales, shifts and
    biases (so folding them matters), saved with a character tokenizer."""
    config = AutoConfig.for_model(
        model_type, vocab_size=96, bos_token_id=1, eos_token_id=2, initializer_range=0.1,
        **{**CONFIGS[model_type], **extra},
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("norm.weight") or ".ln_" in name and "weight" in name else 0.0)
                        + 0.3 * torch.randn_like(p))  # fmt: skip
    model.save_pretrained(path)
    save_char_tokenizer(path)
    return path


@torch.no_grad()
def logits(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model(input_ids=IDS).logits, model


def cache_bytes(model):
    out = model(input_ids=IDS[:, :5], use_cache=True)
    return sum(t.nbytes for layer in out.past_key_values.layers for t in (layer.keys, layer.values))


CASES = [
    pytest.param("gpt_neox", {}, id="gpt_neox"),
    pytest.param("gpt_neox", {"attention_bias": False}, id="gpt_neox-no-attention-bias"),
    pytest.param("gpt_neox", {"tie_word_embeddings": True}, id="gpt_neox-tied"),
    pytest.param("gptj", {}, id="gptj"),
    pytest.param("codegen", {}, id="codegen"),
]


@pytest.mark.parametrize("model_type,extra", CASES)
def test_groups_h_gives_the_source_logits(tmp_path, model_type, extra):
    src = build(model_type, tmp_path / "src", **extra)
    ref, source_model = logits(src)
    assert type(source_model).__name__.lower().startswith(model_type.replace("_", ""))
    out = tmp_path / "out"
    result = convert_checkpoint(open_source(src), out, ConvertSection(groups=H))
    assert (result.model_type, result.target_model_type) == (model_type, "phi")
    got, model = logits(out)
    assert type(model).__name__ == "PhiForCausalLM"
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == H and config["partial_rotary_factor"] == 0.5
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)
    assert ref.std() > 0.3  # logits that a lost shift or a wrong RoPE order would visibly change
    assert (out / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("model_type", ["gpt_neox", "gptj", "codegen"])
def test_fewer_groups_is_the_per_head_mean_of_the_translation(tmp_path, model_type):
    src = build(model_type, tmp_path / "src")
    translated, pooled = tmp_path / "translated", tmp_path / "pooled"
    convert_checkpoint(open_source(src), translated, ConvertSection(groups=H))
    result = convert_checkpoint(open_source(src), pooled, ConvertSection(groups=2))
    full, state = load_file(translated / "model.safetensors"), load_file(pooled / "model.safetensors")
    assert set(full) == set(state)
    for name, t in full.items():
        if ".k_proj." in name or ".v_proj." in name:  # 8 heads of 8 rows -> 2 groups, each a mean of 4
            expected = t.reshape(2, H // 2, HD, *t.shape[1:]).mean(dim=1).reshape(-1, *t.shape[1:])
            torch.testing.assert_close(state[name], expected, rtol=0, atol=1e-6)  # one float32 mean
        else:
            assert torch.equal(state[name], t), name
    model = AutoModelForCausalLM.from_pretrained(pooled, dtype=torch.float32).eval()  # no remote code
    assert model.config.num_key_value_heads == 2
    generated = model.generate(IDS[:1, :4], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 9)
    with torch.no_grad():
        before = cache_bytes(AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval())
        after = cache_bytes(model)
    assert before == 4 * after  # H / G = 8 / 2, measured from the caches transformers fills
    assert result.kv_bytes_per_token_before == 4 * result.kv_bytes_per_token_after


def test_sequential_gpt_neox_is_refused_with_its_reason(tmp_path):
    src = build("gpt_neox", tmp_path / "src", use_parallel_residual=False)
    r = run_cli("convert", src, tmp_path / "out", "--groups", "2")
    assert_one_line_error(r, "use_parallel_residual=false", "phi", "cannot be converted")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model_type", ["gpt_neox", "gptj", "codegen"])
def test_calibrated_methods_run_on_the_translation(tmp_path, model_type):
    """fit at G = H must give the source's function back (it is exact at the source KV count); at
    G = 2 fit+refine writes a phi model whose record names the real source."""
    src = build(model_type, tmp_path / "src")
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    ref, _ = logits(src)
    flags = ["--calibration-data", text, "--calibration-tokens", "400", "--calibration-seq-len", "50"]
    r = run_cli("convert", src, tmp_path / "exact", "-g", str(H), "--method", "fit", *flags)
    assert r.exit_code == 0, r.output
    got, _ = logits(tmp_path / "exact")
    assert float((got - ref).norm() / ref.norm()) < 1e-4  # fit's least squares in float64, at G = KV
    out = tmp_path / "out"
    r = run_cli("convert", src, out, "-g", "2", "--method", "fit+refine", "--refine-steps", "2", *flags)
    assert r.exit_code == 0, r.output
    assert f"{model_type} -> phi" in r.output
    record = json.loads((out / "uptrain.json").read_text())
    assert record["source"]["model_type"] == model_type
    assert record["conversion"]["translated_first"]["to"] == "phi"
    assert record["conversion"]["method_steps"] == ["fit", "refine"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary copy is gone
    got, model = logits(out)
    assert model.config.num_key_value_heads == 2 and torch.isfinite(got).all()
