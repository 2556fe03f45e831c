"""uptrain.convert.pooling on small explicit tensors: which heads form a group, their mean (accumulated
wide, rounded once), the first head of each group, and map_kv touching only the per-KV-head tensors.
Every expected value is written out by hand."""

from __future__ import annotations

import pytest
import torch

from uptrain.architectures.attention import AttentionWeights
from uptrain.convert.pooling import first_pool, group_heads, group_slices, map_kv, mean_pool

# 4 KV heads of 2 values: head j holds (2j+1, 2j+2)
FOUR = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])


def test_groups_are_runs_of_consecutive_heads():
    x = torch.arange(12).reshape(6, 2)  # 6 heads: head j holds (2j, 2j+1)
    assert group_heads(x, 3).tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]]
    assert group_heads(x, 2).tolist() == [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]
    assert group_heads(x, 6).shape == (6, 1, 2)
    assert group_slices(6, 3) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert group_slices(6, 1) == [slice(0, 6)]


@pytest.mark.parametrize("groups", [0, 4, 5, 7])
def test_groups_must_divide_the_heads(groups):
    with pytest.raises(ValueError, match=f"{groups} groups do not divide 6 heads"):
        group_heads(torch.zeros(6, 2), groups)
    with pytest.raises(ValueError, match=f"{groups} groups do not divide 6 heads"):
        group_slices(6, groups)


def test_mean_pool_averages_each_group():
    assert mean_pool(FOUR, 2).tolist() == [[2.0, 3.0], [6.0, 7.0]]  # (1+3)/2, (2+4)/2; (5+7)/2, (6+8)/2
    assert mean_pool(FOUR, 1).tolist() == [[4.0, 5.0]]  # (1+3+5+7)/4, (2+4+6+8)/4
    assert torch.equal(mean_pool(FOUR, 4), FOUR)  # one head per group: unchanged
    assert mean_pool(FOUR, 2).dtype == torch.float32


def test_mean_pool_of_three_dimensional_heads():
    x = torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]], [[10.0, 20.0]], [[30.0, 40.0]]])  # (KV=4, hd=1, in=2)
    assert mean_pool(x, 2).tolist() == [[[2.0, 4.0]], [[20.0, 30.0]]]


def test_bf16_mean_is_rounded_once_from_the_exact_mean():
    """Heads 256, 1, 1, 1. Exact mean 259/4 = 64.75, halfway between the bf16 neighbours 64.5 and 65
    (spacing 0.5 in [64, 128)): round-half-to-even gives 65. Summed in bf16 instead, 256 + 1 = 257 is a tie
    between 256 and 258 (spacing 2) and rounds to 256, every time: 256 / 4 = 64."""
    x = torch.tensor([256.0, 1.0, 1.0, 1.0], dtype=torch.bfloat16).reshape(4, 1)
    pooled = mean_pool(x, 1)
    assert pooled.dtype == torch.bfloat16
    assert pooled.item() == 65.0
    running = x[0]
    for head in x[1:]:
        running = running + head  # each sum rounded to bf16
    assert (running / 4).item() == 64.0  # what a bf16 accumulation would give


def test_bf16_mean_near_bf16s_maximum_does_not_overflow():
    """Four values near bf16's largest finite value (about 3.39e38): their sum, 1.24e39, is past float32's
    maximum (3.40e38) too, so only a wider accumulation finds the mean."""
    x = torch.tensor([3.0e38, 3.2e38, 2.8e38, 3.3e38], dtype=torch.bfloat16).reshape(4, 1)
    values = [float(v) for v in x.flatten()]  # the bf16 values, as Python (float64) numbers
    expected = torch.tensor(sum(values) / 4, dtype=torch.float64).to(torch.bfloat16)
    assert torch.isinf(x.float().sum())  # a float32 sum overflows
    pooled = mean_pool(x, 1)
    assert torch.isfinite(pooled).all()
    assert pooled.item() == expected.item()
    assert 2.8e38 < pooled.item() < 3.3e38


def test_first_pool_keeps_the_first_head_of_each_group_as_a_copy():
    assert first_pool(FOUR, 2).tolist() == [[1.0, 2.0], [5.0, 6.0]]  # heads 0 and 2
    assert first_pool(FOUR, 1).tolist() == [[1.0, 2.0]]
    kept = first_pool(FOUR, 4)
    kept[0, 0] = 99.0
    assert FOUR[0, 0].item() == 1.0  # the source is not modified through the result


def test_map_kv_applies_to_k_v_their_biases_and_kv_extras_only():
    q = torch.ones(4, 1, 2)  # H=4, hd=1, in=2
    o = torch.ones(2, 4, 1)
    attn = AttentionWeights(
        q=q,
        k=FOUR.reshape(4, 1, 2),
        v=FOUR.reshape(4, 1, 2) * 10,
        o=o,
        q_bias=torch.zeros(4, 1),
        k_bias=torch.tensor([[1.0], [2.0], [3.0], [4.0]]),
        v_bias=None,
        kv_extras={"k_norm.weight": torch.tensor([[1.0], [3.0], [5.0], [7.0]])},
    )
    pooled = map_kv(attn, lambda t: mean_pool(t, 2))
    assert pooled.k.tolist() == [[[2.0, 3.0]], [[6.0, 7.0]]]
    assert pooled.v.tolist() == [[[20.0, 30.0]], [[60.0, 70.0]]]
    assert pooled.k_bias.tolist() == [[1.5], [3.5]]
    assert pooled.v_bias is None
    assert pooled.kv_extras["k_norm.weight"].tolist() == [[2.0], [6.0]]
    assert pooled.q is q and pooled.o is o and pooled.q_bias is attn.q_bias  # queries and output untouched
    assert (pooled.heads, pooled.kv_heads) == (4, 2)
    assert attn.k.shape == (4, 1, 2)  # the input is not changed
