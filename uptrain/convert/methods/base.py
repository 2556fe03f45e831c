"""What a conversion method is: a function from one layer's heads to the same layer with G KV heads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uptrain.architectures import Architecture, AttentionDims, AttentionWeights


@dataclass(frozen=True)
class MethodContext:
    """What a method may know beyond the weights of the layer it converts."""

    arch: Architecture
    dims: AttentionDims  # the source's dimensions
    layer: int
    seed: int = 0
    init_std: float = 0.02
    calibration: Any = None  # per-layer calibration statistics, for methods that need them
    report: dict[str, float] | None = None  # where a method may note figures about this layer


LayerFn = Callable[[AttentionWeights, int, MethodContext], AttentionWeights]


@dataclass(frozen=True)
class ConversionMethod:
    name: str
    convert_layer: LayerFn  # (heads in float32, groups, context) -> heads with `groups` KV heads
    description: str
    needs_calibration: bool = False
