"""A `translate` section: how a model_type whose class cannot hold fewer KV heads becomes one that can.

Tensor rules (applied in this order to each source tensor, convert/tensor_rules.py):
  rename     regular-expression substitutions of tensor names (the first that matches);
  drop       name templates (with `{layer}`) of renamed tensors that the target has no place for;
  zeros      biases the target always has: a zero vector, as long as `rows_of`'s first dimension,
             where the source has none;
  fold       a LayerNorm that feeds only linear layers: its scale g and shift b go into them
             (W' = W diag(g), c' = c + W b); the norm then becomes the identity (scale 1, shift 0)
             where the target keeps it (`reset`), or goes (it is also in `drop`);
  transpose  2-D weights stored (in, out), as GPT-2's Conv1D: written (out, in).
Config rules (route.output_config): `drop_config` keys go, `config_rename` keys are renamed,
`config_set` values written, `config_multiple` fills a key the source leaves null, and `rope`
writes the target's rope_parameters. `requires` must hold for the translation to be exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uptrain.errors import UptrainError


@dataclass(frozen=True)
class Rename:
    """A regular-expression substitution applied to source tensor names (the first that matches)."""

    pattern: str
    replace: str


@dataclass(frozen=True)
class Zeros:
    """A bias the target model always has: zeros of length `rows_of`'s first dim where it is absent."""

    tensor: str
    rows_of: str


@dataclass(frozen=True)
class Fold:
    """A LayerNorm (`norm`.weight, `norm`.bias) folded into the linear layers it alone feeds."""

    norm: str
    into: tuple[str, ...]
    reset: bool = False  # the target keeps the norm: it becomes scale 1, shift 0


@dataclass(frozen=True)
class Multiple:
    """A config key the source may leave null, that then means `times` x `of` (GPT-J's n_inner)."""

    of: str
    times: int


@dataclass(frozen=True)
class RopeRule:
    """Where the source keeps RoPE's base and rotated fraction; the first key present wins.
    `dims`: a key holding the rotated dims per head (the fraction is dims / head_dim)."""

    theta: tuple[str, ...] = ()
    fraction: tuple[str, ...] = ()
    dims: str | None = None
    base: float = 10000.0  # the theta when no key holds one (GPT-J's and CodeGen's is fixed)
    default_fraction: float = 1.0  # the fraction when no key holds one


@dataclass(frozen=True)
class Requirement:
    """A config value a model must have, and why (said in the error when it does not)."""

    key: str
    equals: Any
    reason: str


@dataclass(frozen=True)
class Translation:
    model_type: str
    architectures: tuple[str, ...]
    rename: tuple[Rename, ...] = ()
    drop: tuple[str, ...] = ()
    zeros: tuple[Zeros, ...] = ()
    fold: tuple[Fold, ...] = ()
    transpose: tuple[str, ...] = ()
    drop_config: tuple[str, ...] = ()
    config_rename: Mapping[str, str | list[str]] = field(default_factory=dict)
    config_set: Mapping[str, Any] = field(default_factory=dict)
    config_multiple: Mapping[str, Multiple] = field(default_factory=dict)
    rope: RopeRule | None = None
    requires: tuple[Requirement, ...] = ()


def lookup(config: Mapping[str, Any], defaults: Mapping[str, Any], path: str) -> Any:
    """A config value by dotted path (`rope_parameters.rope_theta`); None when absent."""
    head, _, rest = path.partition(".")
    value = config[head] if head in config else defaults.get(head)
    for part in rest.split(".") if rest else ():
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _first(config: Mapping[str, Any], defaults: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    for path in paths:
        value = lookup(config, defaults, path)
        if value is not None:
            return value
    return None


def rotary_dims(rule: RopeRule, config: Mapping[str, Any], defaults: Mapping[str, Any], head_dim: int) -> int:
    """How many dims of each head RoPE rotates in the source model."""
    if rule.dims:
        dims = lookup(config, defaults, rule.dims)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 0 < dims <= head_dim or dims % 2:
            raise UptrainError(
                f"config.json's {rule.dims} is {dims!r}, not an even number of dims up to the head size "
                f"{head_dim}; fix the config"
            )
        return dims
    fraction = _first(config, defaults, rule.fraction)
    return int(head_dim * float(rule.default_fraction if fraction is None else fraction))


def rope_parameters(
    rule: RopeRule, config: Mapping[str, Any], defaults: Mapping[str, Any], head_dim: int
) -> dict[str, Any]:
    """The target's rope_parameters: the source's (type, scaling), its base and rotated fraction."""
    theta = _first(config, defaults, rule.theta)
    dims = rotary_dims(rule, config, defaults, head_dim)
    fraction = dims / head_dim
    if int(head_dim * fraction) != dims:  # the target computes int(head_dim * fraction) again
        raise UptrainError(f"{dims} rotary dims of {head_dim} cannot be written as a fraction exactly")
    given = config.get("rope_parameters")
    params = dict(given) if isinstance(given, Mapping) else {}
    params.setdefault("rope_type", "default")
    params["rope_theta"] = float(rule.base if theta is None else theta)
    params["partial_rotary_factor"] = fraction
    return params


def translated_config(
    t: Translation, config: Mapping[str, Any], defaults: Mapping[str, Any], head_dim: int
) -> dict[str, Any]:
    """The source's config.json (its defaults written out) under the translation's config rules."""
    new = {**defaults, **config}
    for key in t.drop_config:
        new.pop(key, None)
    for old, keys in t.config_rename.items():  # one key, or a list of keys that get its value
        if old in new:
            value = new.pop(old)
            new.update(dict.fromkeys([keys] if isinstance(keys, str) else keys, value))
    for key, rule in t.config_multiple.items():
        if new.get(key) is None:
            new[key] = rule.times * new[rule.of]
    if t.rope is not None:
        new["rope_parameters"] = rope_parameters(t.rope, config, defaults, head_dim)
        new["partial_rotary_factor"] = new["rope_parameters"]["partial_rotary_factor"]
    new.update(t.config_set)
    new["model_type"] = t.model_type
    new["architectures"] = list(t.architectures)
    return new


def check_templates(t: Translation, where: str) -> None:
    """Rename patterns compile; per-layer templates name their layer."""
    for rule in t.rename:
        try:
            re.compile(rule.pattern)
        except re.error as exc:
            raise ValueError(f"{where}: rename pattern {rule.pattern!r} is invalid ({exc})") from None
    for template in t.drop + t.transpose:
        if "{layer}" not in template:
            raise ValueError(f"{where}: tensor template {template!r} must contain '{{layer}}'")
    for fold in t.fold:
        if not fold.into:
            raise ValueError(f"{where}: fold of {fold.norm!r} names no layer to fold into")
