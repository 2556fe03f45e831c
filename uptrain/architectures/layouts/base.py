"""What every layout does, and the checks they share."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import torch

from uptrain.architectures.attention import AttentionDims, AttentionWeights
from uptrain.architectures.spec import Architecture
from uptrain.errors import UptrainError


class Layout(Protocol):
    """How a checkpoint stores one layer's Q/K/V/O, and the way to and from AttentionWeights.

    `fields` names the table keys that hold its tensor names (q/k/v or qkv); o is always read."""

    fields: tuple[str, ...]
    supports_kv_extras: bool

    def layer_tensors(
        self, arch: Architecture, dims: AttentionDims, layer: int, available: Collection[str]
    ) -> list[str]: ...

    def to_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, tensors: dict[str, torch.Tensor]
    ) -> AttentionWeights: ...

    def from_heads(
        self, arch: Architecture, dims: AttentionDims, layer: int, attn: AttentionWeights
    ) -> dict[str, torch.Tensor]: ...


def expect_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Fail with a clear message when a checkpoint tensor does not have the shape config.json implies."""
    if tuple(tensor.shape) != tuple(shape):
        raise UptrainError(
            f"tensor {name} has shape {tuple(tensor.shape)} but config.json implies {tuple(shape)}; "
            "the weights do not match their config"
        )


def require_tensors(arch: Architecture, names: list[str], available: Collection[str]) -> None:
    missing = [n for n in names if n not in available]
    if missing:
        raise UptrainError(
            f"the checkpoint has no tensor {missing[0]} that model_type {arch.model_type!r} needs; "
            "the weights do not match config.json"
        )


def weight_names(arch: Architecture, layer: int, roles: tuple[str, ...]) -> dict[str, str]:
    """role -> weight name and role_bias -> bias name, for the table keys in `roles`."""
    p = arch.prefix(layer)
    names = {}
    for role in roles:
        names[role] = f"{p}.{getattr(arch, role)}.weight"
        names[role + "_bias"] = f"{p}.{getattr(arch, role)}.bias"
    return names


def as_linear(arch: Architecture, weight: torch.Tensor) -> torch.Tensor:
    """A stored 2-D weight as nn.Linear holds it, (out, in): Conv1D stores (in, out)."""
    return weight.T if arch.conv1d else weight


def as_stored(arch: Architecture, weight: torch.Tensor) -> torch.Tensor:
    """An (out, in) weight as this architecture stores it."""
    return weight.T.contiguous() if arch.conv1d else weight


def stored_shape(arch: Architecture, out_features: int, in_features: int) -> tuple[int, int]:
    return (in_features, out_features) if arch.conv1d else (out_features, in_features)


def output_heads(
    arch: Architecture, names: dict[str, str], dims: AttentionDims, tensors: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output projection split into query heads, (out, H, hd), and its bias."""
    stored = tensors[names["o"]]
    if stored.ndim != 2:
        raise UptrainError(f"tensor {names['o']} has shape {tuple(stored.shape)}, not a matrix")
    o = as_linear(arch, stored)
    expect_shape(names["o"], stored, stored_shape(arch, o.shape[0], dims.heads * dims.head_dim))
    return o.reshape(o.shape[0], dims.heads, dims.head_dim), tensors.get(names["o_bias"])


def output_tensors(
    arch: Architecture, names: dict[str, str], attn: AttentionWeights
) -> dict[str, torch.Tensor]:
    out = {names["o"]: as_stored(arch, attn.o.reshape(attn.o.shape[0], -1))}
    if attn.o_bias is not None:
        out[names["o_bias"]] = attn.o_bias
    return out
