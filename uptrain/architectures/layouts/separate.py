"""The separate layout: q_proj, k_proj, v_proj and o_proj as their own weights (Llama and most others)."""

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
from uptrain.architectures.spec import Architecture, KVExtra
from uptrain.errors import UptrainError


def _extra_names(prefix: str, extra: KVExtra, kv_heads: int) -> list[str]:
    if extra.per_head:
        return [f"{prefix}.{extra.tensor.format(head=h)}" for h in range(kv_heads)]
    return [f"{prefix}.{extra.tensor}"]


class SeparateLayout:
    fields = ("q", "k", "v")
    supports_kv_extras = True

    def _names(self, arch: Architecture, layer: int) -> dict[str, str]:
        return weight_names(arch, layer, ("q", "k", "v", "o"))

    def layer_tensors(
        self, arch: Architecture, dims: AttentionDims, layer: int, available: Collection[str]
    ) -> list[str]:
        names = self._names(arch, layer)
        require_tensors(arch, [names[r] for r in ("q", "k", "v", "o")], available)
        found = [n for n in names.values() if n in available]
        for extra in arch.kv_extras:
            extra_names = _extra_names(arch.prefix(layer), extra, dims.kv_heads)
            present = [n for n in extra_names if n in available]
            if present and len(present) != len(extra_names):
                raise UptrainError(f"layer {layer} has only some of the per-head tensors {extra.tensor}")
            found += present
        return found

    def to_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, tensors: dict[str, torch.Tensor]
    ) -> AttentionWeights:
        names = self._names(arch, layer)
        H, KV, hd = dims.heads, dims.kv_heads, dims.head_dim

        def heads(role: str, count: int) -> torch.Tensor:
            stored = tensors[names[role]]
            if stored.ndim != 2:
                raise UptrainError(f"tensor {names[role]} has shape {tuple(stored.shape)}, not a matrix")
            w = as_linear(arch, stored)
            expect_shape(names[role], stored, stored_shape(arch, count * hd, w.shape[1]))
            return w.reshape(count, hd, -1)

        def bias(role: str, count: int) -> torch.Tensor | None:
            t = tensors.get(names[role + "_bias"])
            if t is None:
                return None
            expect_shape(names[role + "_bias"], t, (count * hd,))
            return t.reshape(count, hd)

        extras = {}
        for extra in arch.kv_extras:
            extra_names = _extra_names(arch.prefix(layer), extra, KV)
            if extra_names[0] not in tensors:
                continue
            if extra.per_head:
                extras[extra.tensor] = torch.stack([tensors[n] for n in extra_names])
            else:
                t = tensors[extra_names[0]]
                if t.ndim == 0 or t.shape[0] % KV:
                    raise UptrainError(
                        f"tensor {extra_names[0]} of shape {tuple(t.shape)} is not split by {KV} heads"
                    )
                extras[extra.tensor] = t.reshape(KV, t.shape[0] // KV, *t.shape[1:])
        o, o_bias = output_heads(arch, names, dims, tensors)
        return AttentionWeights(
            q=heads("q", H),
            k=heads("k", KV),
            v=heads("v", KV),
            o=o,
            q_bias=bias("q", H),
            k_bias=bias("k", KV),
            v_bias=bias("v", KV),
            o_bias=o_bias,
            kv_extras=extras,
        )

    def from_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, attn: AttentionWeights
    ) -> dict[str, torch.Tensor]:
        names = self._names(arch, layer)
        out = {}
        for role in ("q", "k", "v"):
            w = getattr(attn, role)
            out[names[role]] = as_stored(arch, w.reshape(-1, w.shape[-1]))
            b = getattr(attn, role + "_bias")
            if b is not None:
                out[names[role + "_bias"]] = b.reshape(-1)
        out.update(output_tensors(arch, names, attn))
        for extra in arch.kv_extras:
            t = attn.kv_extras.get(extra.tensor)
            if t is None:
                continue
            extra_names = _extra_names(arch.prefix(layer), extra, attn.kv_heads)
            if extra.per_head:
                out.update({n: t[h] for h, n in enumerate(extra_names)})
            else:
                out[extra_names[0]] = t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
        return out
