"""RoPE and the complex scales that fit/aligned fold into queries: they must commute, on a tiny
Llama and on every architecture the table says has linear keys (which checks the table's `rope`
and `qk_norm` data against transformers' real modules)."""

import math

import pytest
import torch
from method_helpers import rotate_half_pairs
from tiny_models import tiny_config

from uptrain.architectures import get_architecture, supported_model_types
from uptrain.convert.methods.rope import rotary_pairs, scale_pairs

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37]])


def tiny_model(model_type: str, **extra):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(model_type, kv_heads=4, **extra)).eval()


def attention_of(model, layer: int):
    arch = get_architecture(model.config.model_type)
    return arch, model.get_submodule(arch.prefix(layer))


@torch.no_grad()
def test_folded_complex_scale_preserves_scores_on_tiny_llama():
    """Write KV head 1's keys as k = c * k_hat per RoPE pair (the test's own real arithmetic) and
    keep k_hat, folding c into the queries that read the head as conj(c): every attention score,
    hence the attention pattern, is unchanged; without the query fold it is not."""
    model = tiny_model("llama", attn_implementation="eager")
    attn = model.model.layers[0].self_attn
    hd, per_kv = 8, 2  # 8 query heads, 4 KV heads
    ref = model(IDS, output_attentions=True)
    g = torch.Generator().manual_seed(1)
    angle, scale = torch.rand(hd // 2, generator=g) * 2 * math.pi, 1.7
    k = attn.k_proj.weight.view(4, hd, -1)
    k[1] = rotate_half_pairs(k[1].clone(), -angle, 1 / scale)  # k_hat = k / c, c = scale e^{i angle}
    keys_only = model(IDS, output_attentions=True)
    q = attn.q_proj.weight.view(8, hd, -1)
    for i in range(per_kv, 2 * per_kv):  # the query heads that read KV head 1 take conj(c)
        q[i] = rotate_half_pairs(q[i].clone(), -angle, scale)
    both = model(IDS, output_attentions=True)
    torch.testing.assert_close(both.attentions[0], ref.attentions[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both.logits, ref.logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(keys_only.attentions[0], ref.attentions[0], atol=1e-3)


def test_scale_pairs_matches_the_real_arithmetic():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 5, generator=g)
    angle = torch.rand(4, generator=g) * 6
    c = 0.8 * torch.polar(torch.ones(4), angle)
    ours = scale_pairs(w, rotary_pairs("half", 8, 8), c)
    torch.testing.assert_close(ours, rotate_half_pairs(w, angle, 0.8))


def test_partial_and_interleaved_pairs():
    half = rotary_pairs("half", 4, 8)
    assert (
        half.real.tolist() == [0, 1] and half.imag.tolist() == [2, 3] and half.plain.tolist() == [4, 5, 6, 7]
    )
    inter = rotary_pairs("interleaved", 8, 8)
    assert inter.real.tolist() == [0, 2, 4, 6] and inter.imag.tolist() == [1, 3, 5, 7]
    assert rotary_pairs("none", 8, 8).count == 0


def _has_qk_norm(model) -> bool:
    arch, attn = attention_of(model, 0)
    projections = {arch.q, arch.k, arch.v, arch.o}
    return any(name not in projections and "rotary" not in name for name, _ in attn.named_children())


@pytest.mark.slow
@pytest.mark.parametrize(  # separate q/k/v projections (fused and translated layouts: not this test)
    "model_type",
    [
        t
        for t in supported_model_types()
        if get_architecture(t).q is not None and not get_architecture(t).translate
    ],
)
@torch.no_grad()
def test_table_rope_and_qk_norm_match_transformers(model_type):
    """The table says whether keys are normalized after k_proj (then fit/aligned refuse) and how
    RoPE pairs dims; folding random per-pair complex scales (and a random map on the dims RoPE
    leaves alone) into Q must leave the logits unchanged when K is divided by them."""
    model = tiny_model(model_type)
    arch = get_architecture(model_type)
    config = model.config.to_dict()
    assert arch.normalizes_keys(config) == _has_qk_norm(model), "table.yaml qk_norm is wrong"
    if arch.normalizes_keys(config):
        return
    ref = model(IDS).logits
    rotary = model.model.rotary_emb.inv_freq.numel() * 2 if arch.rope != "none" else 0
    hd, kv, h = config["head_dim"], 4, config["num_attention_heads"]
    pairs = rotary_pairs(arch.rope, rotary, hd)
    g = torch.Generator().manual_seed(3)
    for layer in range(config["num_hidden_layers"]):
        _, attn = attention_of(model, layer)
        k_lin, q_lin = getattr(attn, arch.k), getattr(attn, arch.q)
        k = k_lin.weight.view(kv, hd, -1)
        q = q_lin.weight.view(h, hd, -1)
        c = torch.polar(
            0.5 + torch.rand(kv, pairs.count, generator=g), torch.rand(kv, pairs.count, generator=g) * 6
        )
        m = torch.eye(hd - rotary) + 0.3 * torch.randn(kv, hd - rotary, hd - rotary, generator=g)
        k.copy_(scale_pairs(k, pairs, 1 / c))
        q.copy_(scale_pairs(q, pairs, c.conj().repeat_interleave(h // kv, 0)))
        p = pairs.plain
        k[:, p] = m @ k[:, p]
        q[:, p] = torch.linalg.inv(m).mT.repeat_interleave(h // kv, 0) @ q[:, p]
        for lin, heads in ((k_lin, kv), (q_lin, h)):
            if lin.bias is not None:  # biases are one more input column
                b = lin.bias.view(heads, hd, 1)
                cc = 1 / c if heads == kv else c.conj().repeat_interleave(h // kv, 0)
                b.copy_(scale_pairs(b, pairs, cc))
                mm = m if heads == kv else torch.linalg.inv(m).mT.repeat_interleave(h // kv, 0)
                b[:, p] = mm @ b[:, p]
    torch.testing.assert_close(model(IDS).logits, ref, rtol=1e-4, atol=1e-4)
