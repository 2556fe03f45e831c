"""Pure tensor math for pooling key/value heads into groups. No I/O.

transformers' repeat_kv serves KV head j to query heads j*H/G ... (j+1)*H/G - 1, so a group of
source heads is a run of consecutive heads: group j holds heads j*r ... (j+1)*r - 1 with r = KV/G.
"""

from __future__ import annotations

import torch

from uptrain.architectures.attention import AttentionWeights


def group_slices(kv: int, groups: int) -> list[slice]:
    """The heads of each group: group j is the consecutive heads j*KV/G ... (j+1)*KV/G - 1."""
    if groups < 1 or kv % groups:
        raise ValueError(f"{groups} groups do not divide {kv} heads")
    size = kv // groups
    return [slice(j * size, (j + 1) * size) for j in range(groups)]


def group_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(KV, ...) -> (G, KV/G, ...): row j stacks the heads of group_slices(KV, G)[j]."""
    kv = x.shape[0]
    group_slices(kv, groups)  # the same grouping, the same check
    return x.reshape(groups, kv // groups, *x.shape[1:])


def mean_pool(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Average each group's heads, accumulating in float64: half-precision sums lose bits, and bf16
    shares float32's exponent range, so a float32 sum of large bf16 weights can overflow to inf."""
    return group_heads(x, groups).to(torch.float64).mean(dim=1).to(x.dtype)


def first_pool(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Keep the first head of each group."""
    return group_heads(x, groups)[:, 0].clone()


def map_kv(attn: AttentionWeights, fn) -> AttentionWeights:  # noqa: ANN001 - fn: (Tensor) -> Tensor
    """Apply fn to every per-KV-head tensor (K, V, their biases and the KV-sized norms)."""
    return attn.replace(
        k=fn(attn.k),
        v=fn(attn.v),
        k_bias=None if attn.k_bias is None else fn(attn.k_bias),
        v_bias=None if attn.v_bias is None else fn(attn.v_bias),
        kv_extras={name: fn(t) for name, t in attn.kv_extras.items()},
    )
