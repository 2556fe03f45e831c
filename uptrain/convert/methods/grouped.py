"""The per-group scaffold the calibrated merges (aligned, fit) share.

A layer's projections are taken as rows over the calibration inputs x~ (metric.py: with its bias as
a last column, transferred to these inputs under sequential calibration); its KV heads are grouped
exactly as mean pooling groups them (pooling.group_slices), each group with the query heads that read
it; a merge fills one shared K and V row block per group and may rewrite the group's queries and
o_proj columns (where it folds per-head maps); `result` puts the layer back together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.methods.base import MethodContext
from uptrain.convert.methods.metric import LayerSetup, calibrated_setup, split_bias
from uptrain.convert.pooling import group_slices


@dataclass
class Group:
    index: int
    heads: slice  # its source KV heads
    queries: slice  # the query heads that read them


@dataclass
class GroupedLayer:
    attn: AttentionWeights
    setup: LayerSetup
    keys: torch.Tensor  # (KV, hd, in[+1]) float64 rows over x~
    values: torch.Tensor  # (KV, hd, in[+1])
    queries: torch.Tensor  # (H, hd, in[+1]); merges may rewrite a group's rows
    o: torch.Tensor  # (out, H, hd) float64; merges may rewrite a group's columns
    new_k: torch.Tensor  # (G, hd, in[+1]): each group's shared key rows, filled by the merge
    new_v: torch.Tensor  # (G, hd, in[+1])
    groups: list[Group]

    @property
    def has_bias(self) -> tuple[bool, bool, bool]:
        """Whether K, V and Q have biases (their rows then end with the bias column)."""
        a = self.attn
        return a.k_bias is not None, a.v_bias is not None, a.q_bias is not None

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def result(self) -> AttentionWeights:
        kb, vb, qb = self.has_bias
        q, q_bias = split_bias(self.queries, qb)
        k, k_bias = split_bias(self.new_k, kb)
        v, v_bias = split_bias(self.new_v, vb)
        new = self.attn.replace(q=q, q_bias=q_bias, k=k, k_bias=k_bias, v=v, v_bias=v_bias, o=self.o)
        return new.to(self.attn.k.dtype)


def grouped_layer(attn: AttentionWeights, groups: int, ctx: MethodContext, method: str) -> GroupedLayer:
    """`attn` as rows over the calibration inputs, grouped into `groups` KV heads."""
    setup = calibrated_setup(attn, ctx, method)
    per_kv = setup.heads_per_kv
    keys = setup.rows(attn.k, attn.k_bias)
    values = setup.rows(attn.v, attn.v_bias)
    queries = setup.rows(attn.q, attn.q_bias).clone()  # merges rewrite these: never the caller's q
    hd = attn.k.shape[1]
    members = [
        Group(g, heads, slice(heads.start * per_kv, heads.stop * per_kv))
        for g, heads in enumerate(group_slices(attn.kv_heads, groups))
    ]
    return GroupedLayer(
        attn=attn,
        setup=setup,
        keys=keys,
        values=values,
        queries=queries,
        o=attn.o.double().clone(),
        new_k=keys.new_zeros(groups, hd, keys.shape[-1]),
        new_v=values.new_zeros(groups, hd, values.shape[-1]),
        groups=members,
    )
