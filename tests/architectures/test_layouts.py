"""Fused-QKV layouts against hand-labelled rows, and their round trips at 70B size on the meta device.

Every row of a labelled matrix holds a code for (role, head, dim), written here from the layout's
definition in transformers, so a layout that puts a row in the wrong place is caught whatever the
code under test believes.
"""

import pytest
import torch

from uptrain.architectures import AttentionDims, get_layout, load_table

Q, K, V = 1, 2, 3


def code(role: int, head: int, dim: int) -> float:
    return role * 10_000 + head * 100 + dim


def labelled(order: list[tuple[int, int]], head_dim: int, in_features: int) -> torch.Tensor:
    """Rows for each (role, head) in `order`, head_dim rows each; every column holds the row's code."""
    codes = [code(role, head, d) for role, head in order for d in range(head_dim)]
    return torch.tensor(codes, dtype=torch.float64).unsqueeze(1).repeat(1, in_features)


def fused_order(H: int, KV: int) -> list[tuple[int, int]]:  # phi3 qkv_proj: [Q all heads | K | V]
    return [(Q, h) for h in range(H)] + [(K, j) for j in range(KV)] + [(V, j) for j in range(KV)]


def grouped_order(H: int, KV: int) -> list[tuple[int, int]]:  # falcon new arch: per group [q.., k, v]
    r = H // KV
    return [item for j in range(KV) for item in [(Q, j * r + i) for i in range(r)] + [(K, j), (V, j)]]


def interleaved_order(H: int, KV: int) -> list[tuple[int, int]]:  # per head [q, k, v]
    assert KV == H
    return [(role, h) for h in range(H) for role in (Q, K, V)]


def codegen_order(H: int, KV: int) -> list[tuple[int, int]]:
    """CodeGen qkv_proj: 4 model-parallel blocks, each [q | v | k] of H/4 heads (CodeGenAttention
    views the output as (4, 3 * hidden/4) and splits it into query, value, key)."""
    assert KV == H and H % 4 == 0
    per = H // 4
    block = lambda m: range(m * per, (m + 1) * per)  # noqa: E731
    return [(role, h) for m in range(4) for role in (Q, V, K) for h in block(m)]


def check_heads(attn, H, KV, hd):
    for h in range(H):
        for d in range(hd):
            assert (attn.q[h, d] == code(Q, h, d)).all(), (h, d)
    for j in range(KV):
        for d in range(hd):
            assert (attn.k[j, d] == code(K, j, d)).all() and (attn.v[j, d] == code(V, j, d)).all()
            assert attn.k_bias[j, d] == code(K, j, d) and attn.v_bias[j, d] == code(V, j, d)


CASES = [  # model_type, variant index, order, H, KV
    ("phi3", 0, fused_order, 8, 2),
    ("falcon", 0, fused_order, 4, 1),  # multi_query: [Q | k | v]
    ("falcon", 1, interleaved_order, 4, 4),
    ("falcon", 2, grouped_order, 8, 2),
    ("falcon", 2, grouped_order, 4, 4),  # grouped with KV = H is the interleaved order
    ("gpt_bigcode", 0, fused_order, 4, 1),
    ("gpt_bigcode", 1, interleaved_order, 4, 4),
    ("gpt_neox", 0, interleaved_order, 4, 4),  # query_key_value viewed as (H, 3 * head_dim)
    ("codegen", 0, codegen_order, 8, 8),
]


@pytest.mark.parametrize("model_type,index,order,H,KV", CASES)
def test_labelled_rows_land_in_their_heads(model_type, index, order, H, KV):
    arch = load_table()[model_type]
    variant = arch.variants[index]
    hd, hidden = 3, 5
    dims = AttentionDims(heads=H, kv_heads=KV, head_dim=hd, hidden=hidden, layers=1)
    p = arch.prefix(0)
    weight = labelled(order(H, KV), hd, hidden)
    bias = weight[:, 0].clone()
    o = torch.randn(hidden, H * hd, dtype=torch.float64)
    tensors = {f"{p}.{arch.qkv}.weight": weight, f"{p}.{arch.qkv}.bias": bias, f"{p}.{arch.o}.weight": o}
    layout = get_layout(variant.layout)
    attn = layout.to_heads(arch, dims, 0, tensors)
    check_heads(attn, H, KV, hd)
    assert torch.equal(attn.o.reshape(hidden, -1), o)
    back = layout.from_heads(arch, dims, 0, attn)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert torch.equal(back[name], t), name


def test_gpt2_conv1d_is_the_fused_order_transposed():
    arch = load_table()["gpt2"]
    H, hd, hidden = 4, 3, 5
    dims = AttentionDims(heads=H, kv_heads=H, head_dim=hd, hidden=hidden, layers=1)
    p = arch.prefix(0)
    stored = labelled(fused_order(H, H), hd, hidden).T.contiguous()  # Conv1D: (in, 3 * hidden)
    bias = stored[0].clone()
    o = torch.randn(H * hd, hidden, dtype=torch.float64)  # Conv1D c_proj: (in = H*hd, out)
    tensors = {f"{p}.c_attn.weight": stored, f"{p}.c_attn.bias": bias, f"{p}.c_proj.weight": o}
    layout = get_layout(arch.variants[0].layout)
    attn = layout.to_heads(arch, dims, 0, tensors)
    check_heads(attn, H, H, hd)
    assert torch.equal(attn.o.reshape(hidden, -1), o.T)
    back = layout.from_heads(arch, dims, 0, attn)
    assert all(torch.equal(back[n], t) for n, t in tensors.items())


def test_grouped_output_at_fewer_heads_is_ordered_per_group():
    """from_heads at G KV heads writes each group's query heads, then its k and v."""
    arch = load_table()["falcon"]
    H, KV, hd, hidden = 8, 4, 2, 3
    dims = AttentionDims(heads=H, kv_heads=KV, head_dim=hd, hidden=hidden, layers=1)
    p = arch.prefix(0)
    tensors = {
        f"{p}.query_key_value.weight": labelled(grouped_order(H, KV), hd, hidden),
        f"{p}.dense.weight": torch.zeros(hidden, H * hd, dtype=torch.float64),
    }
    layout = get_layout("grouped")
    attn = layout.to_heads(arch, dims, 0, tensors)
    pooled = attn.replace(k=attn.k[::2].clone(), v=attn.v[::2].clone())  # keep KV heads 0 and 2: G = 2
    out = layout.from_heads(arch, dims, 0, pooled)[f"{p}.query_key_value.weight"][:, 0]
    expected = [code(Q, h, d) for h in range(4) for d in range(hd)]
    expected += [code(K, 0, d) for d in range(hd)] + [code(V, 0, d) for d in range(hd)]
    expected += [code(Q, h, d) for h in range(4, 8) for d in range(hd)]
    expected += [code(K, 2, d) for d in range(hd)] + [code(V, 2, d) for d in range(hd)]
    assert out.tolist() == expected


# 70B-size shapes (Llama-2-70B: 64 query heads of 128, 8 KV heads, width 8192) on the meta device.
BIG = dict(heads=64, head_dim=128, hidden=8192, layers=80)


@pytest.mark.parametrize(
    "model_type,index,KV",
    [
        ("llama", 0, 8),
        ("phi3", 0, 8),
        ("falcon", 2, 8),
        ("falcon", 1, 64),
        ("falcon", 0, 1),
        ("gpt_bigcode", 1, 64),
        ("gpt2", 0, 64),
    ],
)
def test_round_trip_shapes_at_70b_on_meta(model_type, index, KV):
    arch = load_table()[model_type]
    variant = arch.variants[index]
    dims = AttentionDims(kv_heads=KV, **BIG)
    H, hd, hidden = dims.heads, dims.head_dim, dims.hidden
    p = arch.prefix(79)

    def stored(out_features, in_features):
        shape = (in_features, out_features) if arch.conv1d else (out_features, in_features)
        return torch.empty(shape, device="meta", dtype=torch.bfloat16)

    if variant.layout == "separate":
        tensors = {
            f"{p}.{arch.q}.weight": stored(H * hd, hidden),
            f"{p}.{arch.k}.weight": stored(KV * hd, hidden),
            f"{p}.{arch.v}.weight": stored(KV * hd, hidden),
        }
    else:
        tensors = {
            f"{p}.{arch.qkv}.weight": stored((H + 2 * KV) * hd, hidden),
            f"{p}.{arch.qkv}.bias": torch.empty((H + 2 * KV) * hd, device="meta"),
        }
    tensors[f"{p}.{arch.o}.weight"] = stored(hidden, H * hd)
    layout = get_layout(variant.layout)
    assert sorted(layout.layer_tensors(arch, dims, 79, set(tensors))) == sorted(tensors)
    attn = layout.to_heads(arch, dims, 79, tensors)
    assert attn.q.shape == (H, hd, hidden) and attn.k.shape == attn.v.shape == (KV, hd, hidden)
    assert attn.o.shape == (hidden, H, hd)
    back = layout.from_heads(arch, dims, 79, attn)
    assert {n: tuple(t.shape) for n, t in back.items()} == {n: tuple(t.shape) for n, t in tensors.items()}
    assert all(t.device.type == "meta" for t in back.values())
    if variant.layout in ("fused", "grouped"):  # the fused kinds at G = 1
        single = attn.replace(k=attn.k[:1], v=attn.v[:1], k_bias=attn.k_bias[:1], v_bias=attn.v_bias[:1])
        pooled = layout.from_heads(arch, dims, 79, single)
        rows = (H + 2) * hd
        expected = (hidden, rows) if arch.conv1d else (rows, hidden)
        assert tuple(pooled[f"{p}.{arch.qkv}.weight"].shape) == expected
