"""RoPE pairings across a translation: a source that rotates interleaved pairs (2j, 2j+1), as
GPT-J's rotate_every_two, becomes a target that rotates (j, j + r/2), transformers' rotate_half,
by one fixed permutation of the q and k rows inside each head's r rotated dims. Scores q.k sum
over the same permuted dims on both sides, so they do not change; v and o are untouched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from uptrain.architectures.attention import AttentionWeights
from uptrain.architectures.route import Route
from uptrain.architectures.translation import rotary_dims


def interleaved_to_half(head_dim: int, rotary: int) -> torch.Tensor:
    """Row j of the new head is row perm[j] of the old: (0, 2, .., r-2, 1, 3, .., r-1, r, .., hd-1)."""
    return torch.cat([torch.arange(0, rotary, 2), torch.arange(1, rotary, 2), torch.arange(rotary, head_dim)])


def to_target_rope(route: Route, config: Mapping[str, Any], attn: AttentionWeights) -> AttentionWeights:
    """The source's heads with q and k rows in the order the target's RoPE pairs them."""
    source, target = route.source, route.target
    if not route.translating or source.rope == target.rope or attn.q.is_meta:  # meta: planning
        return attn
    rule = source.translate.rope
    if (source.rope, target.rope) != ("interleaved", "half") or rule is None:
        raise ValueError(f"no RoPE reordering from {source.rope} to {target.rope} for {source.model_type}")
    hd = route.dims.head_dim
    perm = interleaved_to_half(hd, rotary_dims(rule, config, source.defaults, hd))

    def rows(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[:, perm]

    return attn.replace(q=rows(attn.q), k=rows(attn.k), q_bias=rows(attn.q_bias), k_bias=rows(attn.k_bias))
