"""The grouped layout: per KV group j, rows [q_{j*r} .. q_{j*r+r-1}, k_j, v_j] with r = H/KV.

Falcon's new_decoder_architecture at any KV count. With KV = H (r = 1) it is the interleaved layout,
per head [q_h, k_h, v_h]: MHA Falcon and GPTBigCode's MHA c_attn, viewed as (H, 3, head_dim).
With KV = 1 it is the fused [Q | k | v]. Group j serves the consecutive query heads j*r ... j*r+r-1,
as transformers' repeat_kv does.
"""

from __future__ import annotations

import torch

from uptrain.architectures.layouts.qkv import FusedQKVLayout, Heads
from uptrain.errors import UptrainError


class GroupedLayout(FusedQKVLayout):
    def split(self, rows: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> Heads:
        rest = rows.shape[1:]
        r = heads // kv_heads
        groups = rows.reshape(kv_heads, r + 2, head_dim, *rest)
        return groups[:, :r].reshape(heads, head_dim, *rest), groups[:, r], groups[:, r + 1]

    def merge(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv_heads, rest = k.shape[0], q.shape[2:]
        r = q.shape[0] // kv_heads
        per_group = q.reshape(kv_heads, r, *q.shape[1:])
        return torch.cat([per_group, k.unsqueeze(1), v.unsqueeze(1)], dim=1).reshape(-1, *rest)


class InterleavedLayout(GroupedLayout):
    """Per head [q_h, k_h, v_h]: the grouped layout with one query head per group (MHA only)."""

    def check_kv(self, heads: int, kv_heads: int) -> None:
        if kv_heads != heads:
            raise UptrainError(f"the interleaved layout holds one KV head per query head, not {kv_heads}")
