"""The declarative architecture table: which tensors hold Q/K/V for each model_type, how they are
laid out, and which variant (and model_type) a converted checkpoint becomes."""

from __future__ import annotations

from uptrain.architectures.attention import AttentionDims, AttentionWeights
from uptrain.architectures.layouts import get_layout
from uptrain.architectures.route import Route, output_config, plan_route, read_dims, valid_groups
from uptrain.architectures.spec import Architecture, ConfigKeys, KVExtra, Variant
from uptrain.architectures.table import (
    get_architecture,
    load_table,
    serving_note,
    supported_model_types,
    unsupported_reasons,
)

__all__ = [
    "Architecture",
    "AttentionDims",
    "AttentionWeights",
    "ConfigKeys",
    "KVExtra",
    "Route",
    "Variant",
    "get_architecture",
    "get_layout",
    "load_table",
    "output_config",
    "plan_route",
    "read_dims",
    "serving_note",
    "supported_model_types",
    "unsupported_reasons",
    "valid_groups",
]
