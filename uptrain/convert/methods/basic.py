"""The three starting points the GQA paper compares (its Figure 4): mean, first and random."""

from __future__ import annotations

import torch

from uptrain.architectures import AttentionWeights
from uptrain.config.methods import First, Mean, Random
from uptrain.convert.methods.base import ConversionMethod, MethodContext
from uptrain.convert.pooling import first_pool, map_kv, mean_pool


def mean_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    return map_kv(attn, lambda x: mean_pool(x, groups))


def first_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    return map_kv(attn, lambda x: first_pool(x, groups))


def random_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    """Fresh K/V heads as a newly built module would have them: N(0, initializer_range) weights,
    zero biases, and norms at their init value. Seeded per layer, so the order layers are
    processed in does not matter."""
    generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + ctx.layer)

    def fresh(x: torch.Tensor) -> torch.Tensor:
        return torch.empty(groups, *x.shape[1:], dtype=x.dtype).normal_(
            0.0, ctx.init_std, generator=generator
        )

    def zeros(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.new_zeros(groups, *x.shape[1:])

    init = {extra.tensor: extra.init for extra in ctx.arch.kv_extras}
    extras = {
        name: (t.new_ones if init[name] == "ones" else t.new_zeros)(groups, *t.shape[1:])
        for name, t in attn.kv_extras.items()
    }
    return attn.replace(
        k=fresh(attn.k),
        v=fresh(attn.v),
        k_bias=zeros(attn.k_bias),
        v_bias=zeros(attn.v_bias),
        kv_extras=extras,
    )


MEAN = ConversionMethod(Mean.name, mean_layer, Mean.description)
FIRST = ConversionMethod(First.name, first_layer, First.description)
RANDOM = ConversionMethod(Random.name, random_layer, Random.description)
