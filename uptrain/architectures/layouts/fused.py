"""The fused layout: rows [Q of all heads | K of all KV heads | V of all KV heads].

Phi-3's qkv_proj at any KV count; with one KV head, [Q | k | v], it is the multi_query layout of
Falcon-7B and GPTBigCode (and GPT-2's c_attn is this layout at KV = H, stored as Conv1D).
"""

from __future__ import annotations

import torch

from uptrain.architectures.layouts.qkv import FusedQKVLayout, Heads


class FusedLayout(FusedQKVLayout):
    def split(self, rows: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> Heads:
        rest = rows.shape[1:]
        q, k, v = rows.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])
        return (
            q.reshape(heads, head_dim, *rest),
            k.reshape(kv_heads, head_dim, *rest),
            v.reshape(kv_heads, head_dim, *rest),
        )

    def merge(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rest = q.shape[2:]
        return torch.cat([q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)])
