"""Loading table.yaml: the supported model_types, and the reasons the unsupported ones are refused."""

from __future__ import annotations

import functools
from importlib import resources

import yaml

from uptrain.architectures.layouts import LAYOUTS
from uptrain.architectures.spec import Architecture, parse_entry, parse_unsupported
from uptrain.errors import UptrainError


@functools.cache
def _raw_table() -> dict:
    text = resources.files("uptrain.architectures").joinpath("table.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def load_table() -> dict[str, Architecture]:
    """Parse and validate every supported entry of table.yaml, strictly."""
    table = {
        model_type: parse_entry(model_type, entry, LAYOUTS)
        for model_type, entry in _raw_table().items()
        if not (isinstance(entry, dict) and "unsupported" in entry)
    }
    for arch in table.values():
        if arch.translate and arch.translate.model_type not in table:
            raise ValueError(f"{arch.model_type} translates to {arch.translate.model_type}, not in the table")
    return table


@functools.cache
def unsupported_reasons() -> dict[str, str]:
    """model_type -> why it cannot be converted (families whose classes hold only MHA, and others)."""
    return {
        model_type: parse_unsupported(model_type, entry)
        for model_type, entry in _raw_table().items()
        if isinstance(entry, dict) and "unsupported" in entry
    }


def supported_model_types() -> list[str]:
    return sorted(load_table())


def get_architecture(model_type: str | None) -> Architecture:
    table = load_table()
    if model_type in table:
        return table[model_type]
    reason = unsupported_reasons().get(model_type or "")
    because = f": {reason}" if reason else ""
    raise UptrainError(
        f"model_type {model_type!r} is not supported{because}; supported model types: "
        f"{', '.join(supported_model_types())}"
    )


def serving_note(model_type: str | None) -> str | None:
    """The table's word on which servers cache fewer KV heads for this model_type (None: all do)."""
    arch = load_table().get(model_type or "")
    return arch.serving if arch else None
