"""Layouts: how a checkpoint stores one layer's Q/K/V/O, and the way to and from AttentionWeights.

A table entry's `layout` (or each of its `variants`) names one. Each answers three questions:
which tensors hold layer i's attention, how to split them into heads, and how to put heads back.
"""

from __future__ import annotations

from uptrain.architectures.layouts.base import Layout, expect_shape
from uptrain.architectures.layouts.blocked import BlockedQVKLayout
from uptrain.architectures.layouts.fused import FusedLayout
from uptrain.architectures.layouts.grouped import GroupedLayout, InterleavedLayout
from uptrain.architectures.layouts.separate import SeparateLayout
from uptrain.architectures.spec import Architecture

LAYOUTS: dict[str, Layout] = {
    "separate": SeparateLayout(),
    "fused": FusedLayout(),
    "grouped": GroupedLayout(),
    "interleaved": InterleavedLayout(),
    "blocked_qvk": BlockedQVKLayout(),
}

__all__ = ["LAYOUTS", "Layout", "expect_shape", "get_layout"]


def get_layout(layout: str | Architecture) -> Layout:
    """A layout by name, or the layout of a single-variant architecture."""
    return LAYOUTS[layout if isinstance(layout, str) else layout.layout]
