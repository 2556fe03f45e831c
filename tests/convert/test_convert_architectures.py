"""Every supported architecture: identity at G=KV, explicit group means at smaller G, loads and generates."""

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_tiny
from transformers import AutoModelForCausalLM

from uptrain.architectures import load_table, supported_model_types
from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint

KV = 4

# Fused-QKV entries (phi3, falcon, gpt_bigcode, gpt2) store K and V inside one matrix, may change
# their config flags or model_type, and some hold only 1 or H KV heads: tests/test_convert_fused.py
# checks them against explicit per-layout computations instead.
# Entries that translate into another model_type (gptj -> phi): tests/convert/test_convert_mha_families.py.
SEPARATE = [
    m
    for m in supported_model_types()
    if load_table()[m].variants[0].layout == "separate" and not load_table()[m].translate
]


def read_state(path):
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def group_mean_rows(t: torch.Tensor, kv: int, groups: int) -> torch.Tensor:
    """The test's own pooling: split the first dim into kv heads, average consecutive runs in float64."""
    heads = t.double().reshape(kv, t.shape[0] // kv, *t.shape[1:])
    r = kv // groups
    pooled = [sum(heads[g * r + i] for i in range(r)) / r for g in range(groups)]
    return torch.cat(pooled).to(t.dtype)


def cache_shapes(model, ids):
    out = model(input_ids=ids, use_cache=True)
    return [tuple(layer.keys.shape) for layer in out.past_key_values.layers]


@pytest.mark.parametrize("model_type", SEPARATE)
def test_architecture_converts(model_type, tmp_path):
    src = build_tiny(model_type, tmp_path / "src", kv_heads=KV)
    source_state = read_state(src)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        ref_logits = ref(input_ids=ids).logits
        ref_cache = cache_shapes(ref, ids)

    for groups in (KV, 2, 1):
        out = tmp_path / f"g{groups}"
        convert_checkpoint(open_source(src), out, ConvertSection(groups=groups))
        state = read_state(out)
        dropped = {
            n
            for n in source_state
            if ".norms." in n and int(n.split(".norms.")[1].split(".")[0]) >= groups and "k_layernorm" in n
        }
        assert set(state) == set(source_state) - dropped
        per_head = {n for n in state if ".norms." in n}  # stablelm: one k_layernorm per KV head
        for name, t in state.items():
            s = source_state[name]
            if name in per_head and "k_layernorm" in name:
                j = int(name.split(".norms.")[1].split(".")[0])
                stem, tail = name.split(".norms.")[0], name.split(".norms.")[1].split(".", 1)[1]
                r = KV // groups
                expected = (
                    sum(source_state[f"{stem}.norms.{j * r + i}.{tail}"].double() for i in range(r)) / r
                )
                torch.testing.assert_close(t, expected.float(), rtol=1e-6, atol=1e-7)
            elif t.shape == s.shape:
                assert torch.equal(t, s), f"{name} changed although its shape did not"
            else:
                torch.testing.assert_close(t, group_mean_rows(s, KV, groups), rtol=1e-6, atol=1e-7)

        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert model.config.num_key_value_heads == groups
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            shapes = cache_shapes(model, ids)
            generated = model.generate(
                ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0
            )
        assert generated.shape == (1, ids.shape[1] + 3)
        for before, after in zip(ref_cache, shapes, strict=True):
            assert after[1] * (KV // groups) == before[1] == KV
        if groups == KV:
            assert torch.equal(logits, ref_logits), "converting to the source's own KV count must be exact"
        else:
            assert not torch.equal(logits, ref_logits)


def test_every_table_entry_is_tested_here():
    # The parametrization above covers exactly the table; a new entry gets tested automatically.
    assert len(supported_model_types()) >= 12
    required = "llama mistral qwen2 qwen3 gemma gemma2 phi stablelm olmo olmo2 granite starcoder2"
    assert set(required.split()) <= set(supported_model_types())
