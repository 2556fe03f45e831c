"""Which variant a checkpoint is, and which variant (and model_type) its G-KV-head version becomes.

A model keeps its variant when that variant can hold G KV heads. Otherwise it takes the first
variant of the table entry that can, provided the config meets that variant's `requires` (the
resulting model must compute the same function). A model_type with a `translate` section always
becomes the target model_type, in the first of its variants that holds G.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uptrain.architectures.attention import AttentionDims
from uptrain.architectures.spec import Architecture, Requirement, Variant
from uptrain.architectures.table import get_architecture, load_table
from uptrain.architectures.translation import translated_config
from uptrain.errors import SettingError, UptrainError


def _json(value: Any) -> str:
    return json.dumps(value)


def source_variant(arch: Architecture, config: Mapping[str, Any]) -> Variant:
    """The variant whose `when` flags the config has (absent keys take the class defaults)."""
    for variant in arch.variants:
        if all(arch.config_value(config, key) == value for key, value in variant.when.items()):
            return variant
    flags = sorted({key for v in arch.variants for key in v.when})
    found = ", ".join(f"{k}={_json(arch.config_value(config, k))}" for k in flags)
    raise UptrainError(
        f"config.json of this {arch.model_type} model ({found}) matches none of its layouts "
        f"({', '.join(v.name for v in arch.variants)}); fix the config"
    )


def read_dims(arch: Architecture, config: Mapping[str, Any]) -> AttentionDims:
    """Read H, KV, head_dim, hidden size and layer count from a config.json dictionary."""
    keys = arch.config

    def need(key: str) -> int:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UptrainError(
                f"config.json has no valid {key!r} (got {value!r}) for model_type {arch.model_type!r}; "
                "fix the config or point to the right checkpoint"
            )
        return value

    heads, hidden, layers = need(keys.heads), need(keys.hidden), need(keys.layers)
    holds = source_variant(arch, config).holds
    if holds == "one":
        kv_heads = 1
    elif holds == "all":
        kv_heads = heads
    else:  # absent means multi-head attention
        kv_heads = (config.get(keys.kv_heads) if keys.kv_heads else None) or heads
    head_dim = (config.get(keys.head_dim) if keys.head_dim else None) or hidden // heads
    if not isinstance(kv_heads, int) or kv_heads < 1 or heads % kv_heads:
        raise UptrainError(
            f"config.json says {heads} query heads and {kv_heads} KV heads, which do not divide"
        )
    return AttentionDims(heads=heads, kv_heads=kv_heads, head_dim=head_dim, hidden=hidden, layers=layers)


def holds(variant: Variant, dims: AttentionDims, groups: int) -> bool:
    """Whether the variant can store `groups` KV heads for a model of these dims."""
    if variant.holds == "one":
        return groups == 1
    if variant.holds == "all":
        return groups == dims.heads
    return dims.heads % groups == 0


def _unmet(arch: Architecture, config: Mapping[str, Any], requires: tuple[Requirement, ...]) -> list:
    return [r for r in requires if arch.config_value(config, r.key) != r.equals]


@dataclass(frozen=True)
class Route:
    """Read with the source's variant, written with the target's (another model_type if translating)."""

    source: Architecture
    source_variant: Variant
    target: Architecture
    target_variant: Variant
    dims: AttentionDims  # the source's
    groups: int

    @property
    def translating(self) -> bool:
        return self.target is not self.source

    @property
    def changes_variant(self) -> bool:
        return self.translating or self.target_variant is not self.source_variant


def _choose(
    source: Architecture, variant: Variant, config: Mapping[str, Any], dims: AttentionDims, groups: int
) -> tuple[Architecture, Variant | None, list[tuple[Variant, Requirement]]]:
    """The target architecture and variant for `groups`, or None and the requirements that blocked it."""
    target = load_table()[source.translate.model_type] if source.translate else source
    if not source.translate and holds(variant, dims, groups):
        return target, variant, []
    blocked = []
    for candidate in target.variants:
        if not holds(candidate, dims, groups):
            continue
        unmet = _unmet(source, config, candidate.requires)
        if not unmet:
            return target, candidate, []
        blocked.append((candidate, unmet[0]))
    return target, None, blocked


def _divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def valid_groups(arch: Architecture, config: Mapping[str, Any], dims: AttentionDims) -> list[int]:
    """Every G a conversion of this checkpoint can produce."""
    variant = source_variant(arch, config)
    return [g for g in _divisors(dims.kv_heads) if _choose(arch, variant, config, dims, g)[1] is not None]


def _describe(variant: Variant, dims: AttentionDims) -> str:
    count = {"one": "1", "all": f"all {dims.heads}", "any": "any divisor of H"}[variant.holds]
    return f"{count} ({variant.name})"


def plan_route(config: Mapping[str, Any], groups: int) -> Route:
    """Where a checkpoint with this config.json goes at `groups` KV heads; one-line errors otherwise."""
    source = get_architecture(config.get("model_type"))
    variant = source_variant(source, config)
    dims = read_dims(source, config)
    if source.translate:
        t = source.translate
        unmet = _unmet(source, config, t.requires)
        if unmet:
            req = unmet[0]
            raise UptrainError(
                f"{source.model_type} converts by becoming {t.model_type}, which cannot represent "
                f"{req.key}={_json(source.config_value(config, req.key))}: {req.reason}; "
                "this checkpoint cannot be converted"
            )
    valid = valid_groups(source, config, dims)
    if groups < 1 or groups > dims.kv_heads or dims.kv_heads % groups:
        raise SettingError(
            f"<groups> {groups} is invalid for a model with {dims.kv_heads} KV heads; choose one of {valid}"
        )
    target, target_variant, blocked = _choose(source, variant, config, dims, groups)
    if target_variant is None:
        if blocked:
            candidate, req = blocked[0]
            actual = _json(source.config_value(config, req.key))
            raise SettingError(
                f"<groups> {groups} needs {target.model_type}'s {candidate.name} layout, which needs "
                f"{req.key}={_json(req.equals)} ({req.reason}), but this model has {req.key}={actual}; "
                f"choose one of {valid}"
            )
        kinds = " or ".join(_describe(v, dims) for v in target.variants)
        raise SettingError(
            f"<groups> {groups} is invalid: {target.model_type} holds {kinds} KV heads; choose one of {valid}"
        )
    return Route(source, variant, target, target_variant, dims, groups)


def output_config(route: Route, config: Mapping[str, Any]) -> dict:
    """config.json for the output: model_type and flags of the target variant, G KV heads, head_dim."""
    new = dict(config)
    if route.translating:  # the source's defaults, explicit: the target's differ
        new = translated_config(route.source.translate, config, route.source.defaults, route.dims.head_dim)
    new.update(route.target_variant.when)
    if route.changes_variant:
        new.update(route.target_variant.set)
    keys = route.target.config
    if keys.kv_heads:
        new[keys.kv_heads] = route.groups
    if keys.head_dim:
        new[keys.head_dim] = route.dims.head_dim
    return new
