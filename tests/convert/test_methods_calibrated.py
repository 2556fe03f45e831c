"""The calibrated methods on tiny models: exact at G = KV, exact where the structure allows it,
better than mean-pooling on heads that are correlated, and the similar permutation alone changes
nothing. Errors are measured with transformers' modules (method_helpers), not with uptrain's."""

import math

import pytest
import torch
from method_helpers import (
    attention_output_errors,
    calibrate,
    random_orthogonal,
    rotate_half_pairs,
    structured_llama,
)
from safetensors.torch import load_file, save_file
from tiny_models import build_tiny
from transformers import AutoModelForCausalLM

from uptrain.checkpoint.source import open_source
from uptrain.config import ConvertSection
from uptrain.convert.convert import convert_checkpoint
from uptrain.convert.methods.similar import balanced_groups, select_heads

IDS = torch.randint(3, 96, (2, 24), generator=torch.Generator().manual_seed(7))
FAST_REFINE = {"refine_steps": 30, "refine_lr": 3e-3}


@torch.no_grad()
def logits(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()(IDS).logits


def convert(src, out, groups, method, cal, options=FAST_REFINE):
    convert_checkpoint(
        open_source(src), out, ConvertSection(groups=groups, method=method, **options), calibration=cal
    )
    return out


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "model_type,extra",
    [
        ("llama", {}),
        pytest.param("qwen2", {}, marks=pytest.mark.slow),  # q/k/v biases
        pytest.param("phi", {}, marks=pytest.mark.slow),  # partial rotary, biases, dense o
        pytest.param("cohere2", {}, marks=pytest.mark.slow),  # interleaved RoPE
    ],
)
def test_every_method_is_exact_at_the_source_kv_count(tmp_path, model_type, extra):
    src = build_tiny(model_type, tmp_path / "src", kv_heads=4, **extra)
    cal = calibrate(src)
    ref = logits(src)
    for method in ("aligned", "fit", "similar+fit+refine", "similar", "mean+refine"):
        out = convert(src, tmp_path / method, 4, method, cal)
        assert relative(logits(out), ref) < 1e-5, method


def test_similar_permutation_alone_leaves_the_model_unchanged(tmp_path):
    """The heads come in two families, alternating; similar must regroup them (a real permutation)
    and, with no merge (G = KV after the permutation), the model computes the same function."""
    from uptrain.architectures import get_architecture, get_layout, read_dims
    from uptrain.convert.methods.base import MethodContext
    from uptrain.convert.methods.fit import fit_layer
    from uptrain.convert.methods.similar import similar_grouping

    src = structured_llama(tmp_path / "src", families=2, spread=1.0)
    cal = calibrate(src)
    source = open_source(src)
    arch = get_architecture("llama")
    dims = read_dims(arch, source.config)
    layout = get_layout(arch)
    state = load_file(src / "model.safetensors")
    orders = []
    for layer in range(dims.layers):
        names = layout.layer_tensors(arch, dims, layer, set(state))
        attn = layout.to_heads(arch, dims, layer, {n: state[n] for n in names})
        ctx = MethodContext(arch=arch, dims=dims, layer=layer, calibration=cal[layer])
        permuted = similar_grouping(attn, 2, ctx, fit_layer)
        order = [int(torch.where((attn.k == permuted.k[j]).all(-1).all(-1))[0]) for j in range(8)]
        orders.append(order)
        state.update(layout.from_heads(arch, dims, layer, permuted))
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    assert all(sorted(o[:4]) in ([0, 2, 4, 6], [1, 3, 5, 7]) for o in orders), orders
    reference = tmp_path / "ref"
    structured_llama(reference, families=2, spread=1.0)  # the same seed: the unpermuted model
    torch.testing.assert_close(logits(src), logits(reference), rtol=1e-5, atol=1e-5)


def test_select_heads_permutes_query_heads_with_their_kv_head(tmp_path):
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)  # 2 query heads per KV head
    ref = logits(src)
    from uptrain.architectures import get_architecture, get_layout, read_dims

    state = load_file(src / "model.safetensors")
    k0 = state["model.layers.0.self_attn.k_proj.weight"].clone()
    arch = get_architecture("llama")
    dims = read_dims(arch, open_source(src).config)
    layout = get_layout(arch)
    for layer in range(dims.layers):
        names = layout.layer_tensors(arch, dims, layer, set(state))
        attn = layout.to_heads(arch, dims, layer, {n: state[n] for n in names})
        state.update(layout.from_heads(arch, dims, layer, select_heads(attn, [2, 0, 3, 1])))
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    torch.testing.assert_close(logits(src), ref, rtol=1e-5, atol=1e-5)
    k = load_file(src / "model.safetensors")["model.layers.0.self_attn.k_proj.weight"]
    assert torch.equal(k[:8], k0[16:24]) and torch.equal(k[8:16], k0[:8])  # KV head 2 first, then 0


def test_balanced_groups_finds_planted_groups():
    n = 6
    cost = torch.ones(n, n)
    for group in ([0, 3, 5], [1, 2, 4]):
        for a in group:
            for b in group:
                cost[a, b] = 0.1
    cost.fill_diagonal_(0)
    assert balanced_groups(cost, 2) == [[0, 3, 5], [1, 2, 4]]
    assert balanced_groups(cost, 1) == [list(range(n))]
    assert balanced_groups(torch.rand(4, 4), 4) == [[0], [1], [2], [3]]


@torch.no_grad()
def test_fit_is_exact_when_each_group_is_one_head_up_to_rope_commuting_maps(tmp_path):
    """Group heads built as K_h = c_h * K_base (a complex scale per RoPE pair) and V_h = M_h V_base
    (any invertible M_h): the group's V heads span head_dim dims, so the V fit folded into o_proj
    reproduces them, and the K fit folded into q_proj reproduces every score. Mean-pooling does not."""
    src = build_tiny("llama", tmp_path / "src", kv_heads=4)
    state = load_file(src / "model.safetensors")
    g = torch.Generator().manual_seed(5)
    hd, groups = 8, 2
    for layer in range(2):
        for role in ("k", "v"):
            name = f"model.layers.{layer}.self_attn.{role}_proj.weight"
            heads = state[name].reshape(4, hd, -1).clone()
            for h in range(4):
                base = heads[(h // 2) * 2]  # the group's first head
                if role == "k":
                    angle = torch.rand(hd // 2, generator=g) * 2 * math.pi
                    heads[h] = rotate_half_pairs(base, angle, 0.5 + torch.rand(1, generator=g).item())
                else:
                    heads[h] = (random_orthogonal(hd, g) * (0.5 + torch.rand(hd, generator=g))) @ base
            state[name] = heads.reshape(-1, heads.shape[-1]).contiguous()
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    cal = calibrate(src)
    fitted = convert(src, tmp_path / "fit", groups, "fit", cal)
    mean = convert(src, tmp_path / "mean", groups, "mean", cal)
    errors = attention_output_errors(src, fitted, IDS)
    assert max(errors) < 1e-8, errors
    assert relative(logits(fitted), logits(src)) < 1e-4
    assert min(attention_output_errors(src, mean, IDS)) > 1e-3


@pytest.mark.slow
def test_every_method_beats_mean_on_correlated_heads(tmp_path):
    """Two families of heads, alternating, each head a rotated, scaled copy of its family's plus noise."""
    src = structured_llama(tmp_path / "src", families=2)
    cal = calibrate(src, sequences=8, length=32, keep=4)
    probe = torch.randint(3, 96, (2, 32), generator=torch.Generator().manual_seed(11))  # not calibration
    mean = sum(attention_output_errors(src, convert(src, tmp_path / "mean", 2, "mean", cal), probe))
    results = {}
    for method in (
        "similar",
        "aligned",
        "fit",
        "similar+aligned",
        "similar+fit",
        "fit+refine",
        "mean+refine",
    ):
        options = {"refine_steps": 60, "refine_lr": 3e-3}
        out = convert(src, tmp_path / method.replace("+", "_"), 2, method, cal, options)
        results[method] = sum(attention_output_errors(src, out, probe))
    assert all(error < mean for error in results.values()), (mean, results)
    assert results["similar+fit"] < results["fit"] and results["fit+refine"] < results["fit"], results
