"""uptrain.architectures.route on hand-written config.json dictionaries: the dimensions it reads, the
variant a checkpoint is, where it goes at G KV heads (same variant, another variant, another model_type),
the config.json it writes, and the one-line errors. Expected values come from table.yaml's entries as
read by hand (llama: separate q/k/v; falcon: three variants; gpt2: translated to gpt_bigcode)."""

from __future__ import annotations

import pytest

from uptrain.architectures.attention import AttentionDims
from uptrain.architectures.route import (
    holds,
    output_config,
    plan_route,
    read_dims,
    source_variant,
    valid_groups,
)
from uptrain.architectures.table import get_architecture
from uptrain.errors import UptrainError

LLAMA = {
    "model_type": "llama",
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "rope_theta": 10000.0,
}
FALCON_MHA = {
    "model_type": "falcon",
    "num_attention_heads": 8,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "new_decoder_architecture": False,
    "multi_query": False,
}
GPT2 = {
    "model_type": "gpt2",
    "n_head": 4,
    "n_embd": 32,
    "n_layer": 2,
    "n_ctx": 1024,
    "summary_type": "cls_index",
}


def test_llama_dims_with_and_without_the_optional_keys():
    arch = get_architecture("llama")
    assert read_dims(arch, LLAMA) == AttentionDims(heads=8, kv_heads=4, head_dim=8, hidden=64, layers=2)
    mha = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}  # absent: one KV head per query
    assert read_dims(arch, mha).kv_heads == 8
    assert read_dims(arch, {**LLAMA, "head_dim": 16}).head_dim == 16  # explicit, not hidden / heads


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_attention_heads": None}, "no valid 'num_attention_heads' (got None)"),
        ({"hidden_size": True}, "no valid 'hidden_size' (got True)"),  # a bool is not a count
        ({"num_hidden_layers": 0}, "no valid 'num_hidden_layers' (got 0)"),
        ({"num_key_value_heads": 3}, "8 query heads and 3 KV heads, which do not divide"),
    ],
)
def test_invalid_dims_are_one_line_errors(change, message):
    with pytest.raises(UptrainError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dims(get_architecture("llama"), {**LLAMA, **change})


def test_llama_keeps_its_layout_and_writes_g_kv_heads():
    route = plan_route(LLAMA, 2)
    assert route.source is route.target and route.source_variant is route.target_variant
    assert not route.translating and not route.changes_variant
    assert output_config(route, LLAMA) == {**LLAMA, "num_key_value_heads": 2, "head_dim": 8}
    assert LLAMA["num_key_value_heads"] == 4  # the input dict is not changed
    assert valid_groups(route.source, LLAMA, route.dims) == [1, 2, 4]


@pytest.mark.parametrize("groups", [0, 3, 8])
def test_llama_groups_must_divide_its_kv_heads(groups):
    with pytest.raises(
        UptrainError, match=rf"groups {groups} is invalid .* 4 KV heads; choose one of \[1, 2, 4\]"
    ):
        plan_route(LLAMA, groups)


def test_falcon_variant_is_read_from_its_flags_and_defaults():
    arch = get_architecture("falcon")
    assert source_variant(arch, FALCON_MHA).name == "mha"
    assert (
        source_variant(arch, {**FALCON_MHA, "new_decoder_architecture": True}).name
        == "new_decoder_architecture"
    )
    bare = {k: v for k, v in FALCON_MHA.items() if k not in ("new_decoder_architecture", "multi_query")}
    assert source_variant(arch, bare).name == "multi_query"  # FalconConfig's defaults: False, True
    assert read_dims(arch, bare).kv_heads == 1 and read_dims(arch, FALCON_MHA).kv_heads == 8
    with pytest.raises(UptrainError, match="matches none of its layouts"):
        source_variant(get_architecture("gpt_bigcode"), {"multi_query": "yes"})


def test_holds_by_kind():
    dims = AttentionDims(heads=8, kv_heads=8, head_dim=8, hidden=64, layers=2)
    variants = {v.name: v for v in get_architecture("falcon").variants}
    assert [g for g in (1, 2, 4, 8) if holds(variants["multi_query"], dims, g)] == [1]
    assert [g for g in (1, 2, 4, 8) if holds(variants["mha"], dims, g)] == [8]
    assert [g for g in (1, 2, 3, 4, 8) if holds(variants["new_decoder_architecture"], dims, g)] == [
        1,
        2,
        4,
        8,
    ]


def test_falcon_mha_goes_multi_query_at_one_and_new_decoder_architecture_between():
    to_one = plan_route(FALCON_MHA, 1)
    assert (to_one.target_variant.name, to_one.changes_variant, to_one.translating) == (
        "multi_query",
        True,
        False,
    )
    assert output_config(to_one, FALCON_MHA) == {**FALCON_MHA, "multi_query": True, "num_kv_heads": 1}

    to_two = plan_route(FALCON_MHA, 2)
    assert to_two.target_variant.name == "new_decoder_architecture"
    expected = {
        **FALCON_MHA,
        "new_decoder_architecture": True,
        "num_ln_in_parallel_attn": 1,
        "num_kv_heads": 2,
    }
    assert output_config(to_two, FALCON_MHA) == expected

    same = plan_route(FALCON_MHA, 8)
    assert same.target_variant is same.source_variant and not same.changes_variant
    assert output_config(same, FALCON_MHA) == {**FALCON_MHA, "num_kv_heads": 8}


def test_falcon_without_parallel_attention_cannot_take_the_grouped_layout():
    serial = {**FALCON_MHA, "parallel_attn": False}
    dims = read_dims(get_architecture("falcon"), serial)
    assert valid_groups(get_architecture("falcon"), serial, dims) == [1, 8]
    message = (
        r"groups 2 needs falcon's new_decoder_architecture layout, which needs parallel_attn=true "
        r"\(it always runs attention in parallel with the MLP\), but this model has parallel_attn=false; "
        r"choose one of \[1, 8\]"
    )
    with pytest.raises(UptrainError, match=message):
        plan_route(serial, 2)


def test_gpt2_becomes_gpt_bigcode_with_its_defaults_written_out():
    route = plan_route(GPT2, 1)
    assert route.translating and route.target.model_type == "gpt_bigcode"
    assert route.target_variant.name == "multi_query"
    assert output_config(route, GPT2) == {
        "n_head": 4,
        "n_embd": 32,
        "n_layer": 2,
        # GPT-2's class defaults, explicit because gpt_bigcode's differ
        "activation_function": "gelu_new",
        "scale_attn_weights": True,
        "add_cross_attention": False,
        # n_ctx, summary_type, scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn: dropped
        "model_type": "gpt_bigcode",
        "architectures": ["GPTBigCodeForCausalLM"],
        "multi_query": True,
        "num_key_value_heads": 1,
    }
    mha = output_config(plan_route(GPT2, 4), GPT2)
    assert (mha["multi_query"], mha["num_key_value_heads"], mha["model_type"]) == (False, 4, "gpt_bigcode")


def test_gpt2_errors_name_what_blocks_the_translation():
    with pytest.raises(
        UptrainError,
        match=r"gpt_bigcode holds 1 \(multi_query\) or all 4 \(mha\) KV heads; choose one of \[1, 4\]",
    ):
        plan_route(GPT2, 2)
    with pytest.raises(UptrainError, match="cannot represent scale_attn_by_inverse_layer_idx=true"):
        plan_route({**GPT2, "scale_attn_by_inverse_layer_idx": True}, 1)


def test_unsupported_model_types_say_why():
    with pytest.raises(
        UptrainError, match="model_type 'opt' is not supported: its transformers class holds only"
    ):
        plan_route({"model_type": "opt"}, 1)


def test_gpt_neox_becomes_phi_only_with_its_parallel_residual():
    neox = {"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 2}
    route = plan_route(neox, 2)
    assert (route.source.model_type, route.target.model_type, route.groups) == ("gpt_neox", "phi", 2)
    with pytest.raises(UptrainError, match="cannot represent use_parallel_residual=false"):
        plan_route({**neox, "use_parallel_residual": False}, 2)
