"""phi3, falcon (all three layouts) and gpt_bigcode: exact at the source's KV count, explicit group
means below it, the same function as the mean-pooled source, loading and generating without
remote code, and one-line errors where the target class cannot hold G heads."""

import json
import shutil

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from fused_models import (
    SOURCES,
    attention_layout,
    build_source,
    group_mean,
    layer_qkv,
    mean_expanded_state,
    read_config,
    read_state,
)
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from uptrain.architectures import load_table
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

IDS = torch.tensor([[1, 5, 9, 13, 17, 21]])
H = 8

# source, G, config values the output must have, whether the target is Falcon's new decoder layout,
# whose class cached K/V broadcast to all H heads before transformers 5.25 and G heads since
NEW = {"new_decoder_architecture": True}
CASES = [
    ("phi3", 4, {"num_key_value_heads": 4}, False),
    ("phi3", 2, {"num_key_value_heads": 2}, False),
    ("phi3", 1, {"num_key_value_heads": 1}, False),
    ("falcon_new", 4, {**NEW, "num_kv_heads": 4, "num_ln_in_parallel_attn": 2}, True),
    ("falcon_new", 2, {**NEW, "num_kv_heads": 2, "num_ln_in_parallel_attn": 2}, True),
    ("falcon_new", 1, {**NEW, "num_kv_heads": 1}, True),
    ("falcon_mha", 8, {"new_decoder_architecture": False, "multi_query": False, "num_kv_heads": 8}, False),
    ("falcon_mha", 4, {**NEW, "num_kv_heads": 4, "num_ln_in_parallel_attn": 1}, True),
    ("falcon_mha", 2, {**NEW, "num_kv_heads": 2, "num_ln_in_parallel_attn": 1}, True),
    ("falcon_mha", 1, {"new_decoder_architecture": False, "multi_query": True, "num_kv_heads": 1}, False),
    ("falcon_mha_sequential_alibi", 8, {"multi_query": False, "parallel_attn": False}, False),
    ("falcon_mha_sequential_alibi", 1, {"multi_query": True, "parallel_attn": False}, False),
    ("falcon_multi_query", 1, {"multi_query": True, "new_decoder_architecture": False}, False),
    ("bigcode_mha", 8, {"multi_query": False, "num_key_value_heads": 8}, False),
    ("bigcode_mha", 1, {"multi_query": True, "num_key_value_heads": 1}, False),
    ("bigcode_multi_query", 1, {"multi_query": True}, False),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_source(name, root / name)
        return built[name]

    return get


def run(path, ids=IDS):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        generated = model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, ids.shape[1] + 3)
    layers = out.past_key_values.layers
    cached_bytes = sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))
    return out.logits, [layer.keys.shape[1] for layer in layers], cached_bytes // ids.shape[1]


def logits_with_state(src, state, tmp_path):
    """Logits of the source's own class with other weights: the reference for a pooled model."""
    ref = tmp_path / "reference"
    shutil.copytree(src, ref)
    for f in ref.glob("*.safetensors*"):
        f.unlink()
    save_file(state, ref / "model.safetensors", metadata={"format": "pt"})
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("name,groups,flags,new_decoder", CASES, ids=[f"{c[0]}-G{c[1]}" for c in CASES])
def test_fused_conversion(sources, tmp_path, name, groups, flags, new_decoder):
    src = sources(name)
    src_config, src_state = read_config(src), read_state(src)
    _, kv, qkv, _ = attention_layout(src_config)
    out = tmp_path / "out"
    result = convert_checkpoint(open_source(src), out, ConvertSection(groups=groups))

    config, state = read_config(out), read_state(out)
    assert {k: config.get(k) for k in flags} == flags
    assert attention_layout(config)[1] == groups
    qkv_names = {f"{qkv.format(layer)}.{part}" for layer in range(2) for part in ("weight", "bias")}
    assert set(state) == set(src_state)
    for n in set(src_state) - qkv_names:
        assert torch.equal(state[n], src_state[n]), f"{n} changed"
    for layer in range(2):
        for part in ("weight", "bias"):
            if f"{qkv.format(layer)}.{part}" not in src_state:
                continue
            sq, sk, sv = layer_qkv(src_state, src_config, layer, part)
            oq, ok, ov = layer_qkv(state, config, layer, part)
            assert torch.equal(oq, sq), f"layer {layer} {part}: query heads changed"
            torch.testing.assert_close(ok, group_mean(sk, groups).float(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(ov, group_mean(sv, groups).float(), rtol=1e-6, atol=1e-7)

    logits, cache_heads, cached_bytes = run(out)
    src_logits, _, src_cached_bytes = run(src)
    # the cache holds G heads, or at most H where the installed class broadcasts them (Falcon's new
    # decoder layout did before transformers 5.25); whichever it is, uptrain reports what it holds
    assert set(cache_heads) <= ({groups, H} if new_decoder else {groups})
    assert (result.kv_bytes_per_token_before, result.kv_bytes_per_token_after) == (
        src_cached_bytes,
        cached_bytes,
    )
    if groups == kv:
        assert torch.equal(logits, src_logits), "converting to the source's own KV count must be exact"
    else:
        assert not torch.equal(logits, src_logits)
        reference = logits_with_state(src, mean_expanded_state(src_state, src_config, groups), tmp_path)
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,groups,fragments",
    [
        (
            "falcon_mha_sequential_alibi",
            2,
            ["--groups 2 needs falcon's new_decoder_architecture layout", "parallel_attn=false", "[1, 8]"],
        ),
        ("bigcode_mha", 4, ["gpt_bigcode holds 1 (multi_query) or all 8 (mha) KV heads", "[1, 8]"]),
        ("falcon_multi_query", 2, ["--groups 2 is invalid for a model with 1 KV heads", "[1]"]),
    ],
)
def test_groups_the_target_class_cannot_hold(sources, tmp_path, name, groups, fragments):
    r = run_cli("convert", sources(name), tmp_path / "out", "--groups", str(groups))
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "out").exists()


def test_inspect_lists_only_groups_the_class_can_hold(sources):
    import json

    for name, valid in (("falcon_mha", [1, 2, 4, 8]), ("falcon_mha_sequential_alibi", [1, 8])):
        r = run_cli("inspect", sources(name), "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["valid_groups"] == valid
    facts = json.loads(run_cli("inspect", sources("bigcode_mha"), "--json").output)
    assert facts["valid_groups"] == [1, 8] and facts["kv_heads"] == 8


def test_falcon_new_architecture_reports_the_cache_transformers_keeps(sources, tmp_path):
    """Whatever the installed FalconAttention caches (H broadcast heads before transformers 5.25, G
    since), convert and inspect report those bytes: compared with the real cache of the real model."""
    result = convert_checkpoint(open_source(sources("falcon_new")), tmp_path / "o", ConvertSection(groups=1))
    _, heads_before, before = run(sources("falcon_new"))
    _, heads_after, after = run(tmp_path / "o")
    assert (result.kv_bytes_per_token_before, result.kv_bytes_per_token_after) == (before, after)
    assert before == 2 * 2 * heads_before[0] * 8 * 4 and after == 2 * 2 * heads_after[0] * 8 * 4
    facts = json.loads(run_cli("inspect", tmp_path / "o", "--json").output)
    assert facts["kv_bytes_per_token"] == after
    mq = convert_checkpoint(open_source(sources("falcon_mha")), tmp_path / "m", ConvertSection(groups=1))
    assert mq.kv_bytes_per_token_after * H == mq.kv_bytes_per_token_before  # multi_query caches 1 of 8


@pytest.mark.parametrize("model_type", ["opt", "bloom", "mpt", "gpt_neo", "persimmon", "gpt_neox_japanese"])
def test_mha_only_families_say_why(tiny_llama, tmp_path, model_type):
    import json

    config = json.loads((tiny_llama / "config.json").read_text())
    config["model_type"] = model_type
    (tiny_llama / "config.json").write_text(json.dumps(config))
    r = run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1")
    line = assert_one_line_error(
        r, f"{model_type!r} is not supported", "holds only multi-head attention", "falcon", "gpt2", "phi3"
    )
    assert "llama" in line
    assert not (tmp_path / "out").exists()


def test_models_without_attention_say_why(tiny_llama, tmp_path):
    import json

    config = json.loads((tiny_llama / "config.json").read_text())
    config["model_type"] = "mamba"
    (tiny_llama / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("convert", tiny_llama, tmp_path / "out", "-g", "1"), "no attention layers")


def test_every_fused_entry_is_tested_here():
    fused = {m for m, a in load_table().items() if any(v.layout != "separate" for v in a.variants)}
    tested = {SOURCES[c[0]][0] for c in CASES} | {"gpt2"}  # gpt2: tests/test_convert_gpt2.py
    tested |= {"gpt_neox", "codegen"}  # into phi: tests/convert/test_convert_mha_families.py
    assert fused == tested
