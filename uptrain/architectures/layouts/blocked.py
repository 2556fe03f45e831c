"""The blocked_qvk layout: rows in 4 model-parallel blocks, each [q | v | k] of a quarter of the rows.

CodeGen's qkv_proj, trained on 4 model-parallel shards: its output is viewed as (4, 3 * hidden/4)
and split into query, value, key (in that order), each block's query rows followed by the next
block's, so Q is the concatenation of the 4 blocks' q parts (and so for K and V). MHA only.
"""

from __future__ import annotations

import torch

from uptrain.architectures.layouts.qkv import FusedQKVLayout, Heads
from uptrain.errors import UptrainError

BLOCKS = 4  # CodeGenAttention.mp_num


class BlockedQVKLayout(FusedQKVLayout):
    def check_kv(self, heads: int, kv_heads: int) -> None:
        if kv_heads != heads:
            raise UptrainError(f"the blocked_qvk layout holds one KV head per query head, not {kv_heads}")

    def split(self, rows: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> Heads:
        rest = rows.shape[1:]
        if (heads * head_dim) % BLOCKS:
            raise UptrainError(f"{heads * head_dim} query rows do not split into {BLOCKS} blocks")
        blocks = rows.reshape(BLOCKS, 3, heads * head_dim // BLOCKS, *rest)
        q, v, k = (blocks[:, i].reshape(heads, head_dim, *rest) for i in range(3))
        return q, k, v

    def merge(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rest = q.shape[2:]
        parts = [t.reshape(BLOCKS, -1, *rest) for t in (q, v, k)]
        return torch.stack(parts, dim=1).reshape(-1, *rest)
