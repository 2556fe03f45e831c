"""What serving engines read from a converted checkpoint: config.json's `architectures` is the class plain
transformers instantiates (vLLM, SGLang and llama.cpp's convert_hf_to_gguf.py choose their code by it),
and dtype, KV heads, head_dim, tie_word_embeddings, the tokenizer and the generation config match the
weights, for every family the tests build and every source kind (directory, pickle; GGUF in
tests/checkpoint/test_gguf.py). Every source here says `architectures: null`, as transformers' config
of a GGUF file does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fused_models import SOURCES, attention_layout, build_source, heads_of, layer_qkv, read_state
from method_helpers import save_char_tokenizer
from safetensors.torch import load_file
from serving_checks import assert_serving_keys
from tiny_models import build_tiny

from uptrain.architectures import load_table, supported_model_types
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint
from uptrain.convert.serving import check_serving

SEPARATE = [
    m
    for m in supported_model_types()
    if load_table()[m].variants[0].layout == "separate" and not load_table()[m].translate
]
FUSED_GROUPS = {  # a G that each fused source takes (and that changes its KV count, where it can)
    "phi3": 2,
    "falcon_new": 2,
    "falcon_mha": 1,
    "falcon_mha_sequential_alibi": 1,
    "falcon_multi_query": 1,
    "bigcode_mha": 1,
    "bigcode_multi_query": 1,
    "gpt2": 1,
}
MHA_FAMILIES = {  # the families that become phi (tests/convert/test_convert_mha_families.py)
    "gpt_neox": dict(
        hidden_size=64, num_attention_heads=8, num_hidden_layers=2, intermediate_size=96, rotary_pct=0.5
    ),
    "gptj": dict(n_embd=64, n_head=8, n_layer=2, n_inner=96, rotary_dim=4),
    "codegen": dict(n_embd=64, n_head=8, n_layer=2, rotary_dim=4),
}


def as_gguf_config(src: Path) -> Path:
    """The source's config.json without a class name (transformers' GGUF config has none), with a
    tokenizer of 64 tokens (some families' tokenizer classes add a few of their own; the models hold 96)."""
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = None
    (src / "config.json").write_text(json.dumps(config))
    save_char_tokenizer(src, vocab_size=64)
    return src


def convert(src: Path, out: Path, groups: int, **settings) -> Path:
    convert_checkpoint(open_source(src, allow_pickle=settings.pop("allow_pickle", False)), out,
                       ConvertSection(groups=groups, **settings))  # fmt: skip
    return out


def assert_clean(out: Path) -> None:
    check = check_serving(out)
    assert (check.errors, check.warnings) == ([], [])


@pytest.mark.parametrize("model_type", SEPARATE)
def test_separate_families(model_type, tmp_path):
    src = as_gguf_config(build_tiny(model_type, tmp_path / "src", kv_heads=4))
    out = convert(src, tmp_path / "out", 2)
    assert_serving_keys(out, groups=2)
    assert_clean(out)


@pytest.mark.parametrize("name", sorted(FUSED_GROUPS))
def test_fused_families(name, tmp_path):
    assert set(FUSED_GROUPS) == set(SOURCES)
    src = as_gguf_config(build_source(name, tmp_path / "src"))
    out = convert(src, tmp_path / "out", FUSED_GROUPS[name])
    config = assert_serving_keys(out)
    kind, kv, _, _ = attention_layout(config)  # the KV count the config says, read as transformers does
    hd = (config.get("hidden_size") or config["n_embd"]) // heads_of(config)
    q, k, v = layer_qkv(read_state(out), config, 0)  # splits only if the rows are H + 2 KV heads
    assert (q.shape[:2], k.shape[:2], v.shape[:2]) == ((heads_of(config), hd), (kv, hd), (kv, hd))
    assert kv == FUSED_GROUPS[name]
    assert_clean(out)


@pytest.mark.parametrize("model_type", sorted(MHA_FAMILIES))
def test_families_that_become_phi(model_type, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=96, bos_token_id=1, eos_token_id=2,
                                  **MHA_FAMILIES[model_type])  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "src")
    out = convert(as_gguf_config(tmp_path / "src"), tmp_path / "out", 2)
    assert assert_serving_keys(out, groups=2)["model_type"] == "phi"
    assert_clean(out)


def test_a_pickled_source(tmp_path):
    src = as_gguf_config(build_tiny("llama", tmp_path / "src", kv_heads=4))
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    out = convert(src, tmp_path / "out", 1, allow_pickle=True)
    assert assert_serving_keys(out, groups=1)["architectures"] == ["LlamaForCausalLM"]
    assert_clean(out)


def test_dtype_follows_the_weights(tmp_path):
    """A bf16 source whose config names no dtype, and a float32 one converted with --dtype bf16."""
    src = as_gguf_config(build_tiny("qwen2", tmp_path / "src", kv_heads=4, dtype=torch.bfloat16))
    config = json.loads((src / "config.json").read_text())
    del config["dtype"]
    (src / "config.json").write_text(json.dumps(config))
    assert assert_serving_keys(convert(src, tmp_path / "a", 2))["dtype"] == "bfloat16"
    src32 = as_gguf_config(build_tiny("mistral", tmp_path / "src32", kv_heads=4))
    config = assert_serving_keys(convert(src32, tmp_path / "b", 2, dtype="bf16"))
    assert config["dtype"] == "bfloat16"


def test_a_source_without_generation_config_gets_one(tmp_path):
    src = as_gguf_config(build_tiny("llama", tmp_path / "src", kv_heads=4, bos_token_id=5, eos_token_id=7))
    (src / "generation_config.json").unlink()
    out = convert(src, tmp_path / "out", 2)
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (5, 7)
    assert_clean(out)


@pytest.fixture
def good(tmp_path):
    return convert(as_gguf_config(build_tiny("llama", tmp_path / "src", kv_heads=4)), tmp_path / "good", 2)


def _edit(out: Path, **changes) -> None:
    config = json.loads((out / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    (out / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"architectures": None}, ("no `architectures`", '["LlamaForCausalLM"]')),
        ({"architectures": ["MistralForCausalLM"]}, ("MistralForCausalLM", '["LlamaForCausalLM"]')),
        ({"dtype": ...}, ("names no dtype", "float32")),
        ({"dtype": "bfloat16"}, ("dtype bfloat16", "weights are float32")),
        ({"torch_dtype": "float16"}, ("disagree",)),
        ({"num_key_value_heads": 4}, ("k_proj.weight", "config.json implies")),
        ({"num_key_value_heads": ...}, ("no num_key_value_heads",)),
        ({"head_dim": ...}, ("no head_dim",)),
        ({"head_dim": 4}, ("has shape (64, 64)", "config.json implies (64, 32)")),
        ({"tie_word_embeddings": True}, ("tie_word_embeddings true", "lm_head.weight differs")),
        ({"vocab_size": 48}, ("model.embed_tokens.weight of shape (48, 64)", "(96, 64)", "vocab_size")),
    ],
)
def test_verify_finds_each_missing_or_inconsistent_key(good, changes, words):
    _edit(good, **changes)
    check = check_serving(good)
    assert check.errors and all(w in check.errors[0] for w in words), check.errors


def test_untied_without_lm_head_is_an_error(good):
    from safetensors.torch import save_file

    tensors = load_file(good / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, good / "model.safetensors", metadata={"format": "pt"})
    check = check_serving(good)
    assert any("tie_word_embeddings false" in e and "no lm_head.weight" in e for e in check.errors)


def test_a_tokenizer_larger_than_the_embedding_is_an_error(good):
    from tiny_tokenizer import add_tokenizer
    from transformers import AutoTokenizer

    add_tokenizer(good, vocab_size=320)  # byte-level BPE: at least 256 tokens
    size = len(AutoTokenizer.from_pretrained(good))
    assert (
        size > 96
        and f"the tokenizer has {size} tokens but the embedding only 96 rows" in check_serving(good).errors
    )


def test_missing_files_are_warnings(good):
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (good / name).unlink()
    check = check_serving(good)
    assert check.errors == [] and len(check.warnings) == 2
    assert "no tokenizer files" in check.warnings[0] and "generation_config.json" in check.warnings[1]


def test_convert_verify_fails_on_a_serving_error(tmp_path, monkeypatch):
    """--verify prints each problem and exits with one error line naming the first."""
    from cli_helpers import assert_one_line_error, run_cli

    import uptrain.convert.serving as serving

    def broken(directory):
        return serving.ServingCheck(errors=["config.json has no `architectures`", "second"], warnings=["w"])

    monkeypatch.setattr(serving, "check_serving", broken)
    src = as_gguf_config(build_tiny("llama", tmp_path / "src", kv_heads=4))
    r = run_cli("convert", src, tmp_path / "out", "-g", "2", "--verify")
    assert "warning: w" in r.output and "serving: second" in r.output
    assert_one_line_error(r, "not what serving engines expect", "no `architectures`", "1 more")
