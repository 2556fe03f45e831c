"""The table's schema is strict, and its data agrees with the installed transformers."""

import pytest
from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from uptrain.architectures import load_table, unsupported_reasons
from uptrain.architectures.layouts import LAYOUTS
from uptrain.architectures.spec import parse_entry, parse_unsupported

FALCON_LIKE = {
    "attention": "transformer.h.{layer}.self_attention",
    "qkv": "query_key_value",
    "o": "dense",
    "config": {"kv_heads": "num_kv_heads", "head_dim": None},
    "variants": [{"name": "g", "layout": "grouped", "when": {"new_decoder_architecture": True}}],
}


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"variants": [{"name": "g", "layout": "grouped", "colour": "red"}]}, "unknown key(s) ['colour']"),
        ({"variants": [{"name": "g", "layout": "grouped", "holds": "some"}]}, "holds 'some'"),
        ({"variants": [{"name": "g", "layout": "zigzag"}]}, "layout 'zigzag'"),
        ({"qkv": None}, "missing ['qkv']"),
        ({"q": "q_proj"}, "not applicable ['q']"),
        ({"layout": "fused"}, "exactly one of `layout` or `variants`"),
        ({"translate": {"model_type": "x", "architectures": ["X"], "speed": 1}}, "unknown key(s) ['speed']"),
        ({"translate": {"model_type": "x", "architectures": ["X"], "drop": ["a.bias"]}}, "'{layer}'"),
        (
            {
                "translate": {
                    "model_type": "x",
                    "architectures": ["X"],
                    "rename": [{"pattern": "(", "replace": ""}],
                }
            },
            "invalid",
        ),
        ({"kv_extras": [{"tensor": "k_norm.weight"}]}, "does not support kv_extras"),
        ({"config": {"kv_heads": None, "head_dim": None}}, "needs config.kv_heads"),
    ],
)
def test_schema_rejects(change, fragment):
    entry = {**FALCON_LIKE, **change}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ValueError) as info:
        parse_entry("falcon_like", entry, LAYOUTS)
    assert fragment in str(info.value)


def test_unsupported_entries_have_only_a_reason():
    with pytest.raises(ValueError, match="only that key"):
        parse_unsupported("opt", {"unsupported": "why", "layout": "separate"})
    assert parse_unsupported("opt", {"unsupported": "why"}) == "why"


def test_defaults_are_the_transformers_class_defaults():
    checked = 0
    for model_type, arch in load_table().items():
        if not arch.defaults:
            continue
        config = AutoConfig.for_model(model_type)
        for key, value in arch.defaults.items():
            assert getattr(config, key) == value, (model_type, key)
            checked += 1
    assert checked >= 10


def test_unsupported_model_types_exist_in_transformers():
    reasons = unsupported_reasons()
    assert {"opt", "bloom", "mpt", "gpt_neo"} <= set(reasons)
    assert {"gpt_neox", "gptj", "codegen"} <= set(load_table())  # translated into phi
    assert not set(reasons) & set(load_table())
    for model_type in reasons:
        assert model_type in CONFIG_MAPPING_NAMES, model_type
