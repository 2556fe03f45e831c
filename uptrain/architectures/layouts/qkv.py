"""What the fused layouts share: one `qkv` weight (and bias) holding Q, K and V rows, and `o`.

A fused layout only says how the rows are ordered: `split` takes rows (N, *rest) apart into
q (H, hd, *rest), k and v (KV, hd, *rest); `merge` puts them back. The same two functions serve
the weight (rest = in_features) and the bias (rest = ()).
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from uptrain.architectures.attention import AttentionDims, AttentionWeights
from uptrain.architectures.layouts.base import (
    as_linear,
    as_stored,
    expect_shape,
    output_heads,
    output_tensors,
    require_tensors,
    stored_shape,
    weight_names,
)
from uptrain.architectures.spec import Architecture
from uptrain.errors import UptrainError

Heads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FusedQKVLayout:
    fields = ("qkv",)
    supports_kv_extras = False

    def split(self, rows: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> Heads:
        raise NotImplementedError

    def merge(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_kv(self, heads: int, kv_heads: int) -> None:
        """Refuse KV counts this layout cannot store (the route never asks for one)."""
        if kv_heads < 1 or heads % kv_heads:
            raise UptrainError(f"{heads} query heads cannot share {kv_heads} KV heads")

    def _names(self, arch: Architecture, layer: int) -> dict[str, str]:
        return weight_names(arch, layer, ("qkv", "o"))

    def layer_tensors(
        self, arch: Architecture, dims: AttentionDims, layer: int, available: Collection[str]
    ) -> list[str]:
        names = self._names(arch, layer)
        require_tensors(arch, [names["qkv"], names["o"]], available)
        return [n for n in names.values() if n in available]

    def to_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, tensors: dict[str, torch.Tensor]
    ) -> AttentionWeights:
        names = self._names(arch, layer)
        H, KV, hd = dims.heads, dims.kv_heads, dims.head_dim
        self.check_kv(H, KV)
        rows = (H + 2 * KV) * hd
        stored = tensors[names["qkv"]]
        if stored.ndim != 2:
            raise UptrainError(f"tensor {names['qkv']} has shape {tuple(stored.shape)}, not a matrix")
        weight = as_linear(arch, stored)
        expect_shape(names["qkv"], stored, stored_shape(arch, rows, weight.shape[1]))
        q, k, v = self.split(weight, H, KV, hd)
        q_bias = k_bias = v_bias = None
        if names["qkv_bias"] in tensors:
            expect_shape(names["qkv_bias"], tensors[names["qkv_bias"]], (rows,))
            q_bias, k_bias, v_bias = self.split(tensors[names["qkv_bias"]], H, KV, hd)
        o, o_bias = output_heads(arch, names, dims, tensors)
        return AttentionWeights(
            q=q, k=k, v=v, o=o, q_bias=q_bias, k_bias=k_bias, v_bias=v_bias, o_bias=o_bias
        )

    def from_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, attn: AttentionWeights
    ) -> dict[str, torch.Tensor]:
        names = self._names(arch, layer)
        self.check_kv(attn.heads, attn.kv_heads)
        out = {names["qkv"]: as_stored(arch, self.merge(attn.q, attn.k, attn.v))}
        biases = (attn.q_bias, attn.k_bias, attn.v_bias)
        if any(b is not None for b in biases):
            if any(b is None for b in biases):
                raise UptrainError(f"{names['qkv_bias']} needs Q, K and V biases alike")
            out[names["qkv_bias"]] = self.merge(*biases)
        out.update(output_tensors(arch, names, attn))
        return out
