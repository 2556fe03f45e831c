"""The architecture table's schema: YAML in, frozen dataclasses out, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

EXTRA_INITS = ("ones", "zeros")
ROPE_STYLES = ("half", "interleaved", "none")
QK_NORMS = ("none", "shared", "per_head", "full")


@dataclass(frozen=True)
class KVExtra:
    """A per-KV-head tensor (a norm sized by the KV count) that is pooled like K."""

    tensor: str
    init: str = "ones"

    @property
    def per_head(self) -> bool:
        return "{head}" in self.tensor


@dataclass(frozen=True)
class ConfigKeys:
    """Where config.json keeps each attention dimension."""

    heads: str = "num_attention_heads"
    kv_heads: str = "num_key_value_heads"
    head_dim: str | None = "head_dim"
    hidden: str = "hidden_size"
    layers: str = "num_hidden_layers"
    init_std: str = "initializer_range"


@dataclass(frozen=True)
class Architecture:
    """One model_type: where its attention tensors are and how they are laid out."""

    model_type: str
    layout: str
    attention: str
    q: str
    k: str
    v: str
    o: str
    kv_extras: tuple[KVExtra, ...] = ()
    config: ConfigKeys = field(default_factory=ConfigKeys)
    rope: str = "half"  # which key dims RoPE rotates together: half (j, j+d/2), interleaved (2j, 2j+1), none
    qk_norm: str = "none"  # a norm on q and k after the projection: none, shared, per_head, full
    qk_norm_flag: str | None = None  # config key that switches qk_norm on (None: always on)

    def prefix(self, layer: int) -> str:
        return self.attention.format(layer=layer)

    def normalizes_keys(self, config: dict) -> bool:
        """Whether keys pass through a norm after k_proj in a model with this config.json."""
        if self.qk_norm == "none":
            return False
        return self.qk_norm_flag is None or bool(config.get(self.qk_norm_flag))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**raw)
    except TypeError as exc:  # a required key is missing
        raise ValueError(f"{where}: {exc}") from None


def parse_entry(model_type: str, raw: Any, layouts: Collection[str]) -> Architecture:
    """Validate one table entry strictly and return it as an Architecture."""
    where = f"architecture table entry {model_type!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping")
    raw = dict(raw)
    extras = tuple(
        _build(KVExtra, e, f"{where} kv_extras[{i}]") for i, e in enumerate(raw.pop("kv_extras", []) or [])
    )
    config = _build(ConfigKeys, raw.pop("config", {}) or {}, f"{where} config")
    arch = _build(
        Architecture, {**raw, "model_type": model_type, "kv_extras": extras, "config": config}, where
    )
    if arch.layout not in layouts:
        raise ValueError(f"{where}: layout {arch.layout!r} is not one of {sorted(layouts)}")
    if "{layer}" not in arch.attention:
        raise ValueError(f"{where}: attention {arch.attention!r} must contain '{{layer}}'")
    if arch.rope not in ROPE_STYLES:
        raise ValueError(f"{where}: rope {arch.rope!r} is not one of {ROPE_STYLES}")
    if arch.qk_norm not in QK_NORMS:
        raise ValueError(f"{where}: qk_norm {arch.qk_norm!r} is not one of {QK_NORMS}")
    for extra in extras:
        if extra.init not in EXTRA_INITS:
            raise ValueError(f"{where}: kv_extras init {extra.init!r} is not one of {EXTRA_INITS}")
    return arch
