"""The architecture table's schema: YAML in, frozen dataclasses out, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uptrain.architectures.translation import (
    Fold,
    Multiple,
    Rename,
    Requirement,
    RopeRule,
    Translation,
    Zeros,
    check_templates,
)

EXTRA_INITS = ("ones", "zeros")
ROPE_STYLES = ("half", "interleaved", "none")
QK_NORMS = ("none", "shared", "per_head", "full")
HOLDS = ("any", "all", "one")  # how many KV heads a variant holds: any count, one per query head, or one


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
    """Where config.json keeps each attention dimension (None: the config has no such key)."""

    heads: str = "num_attention_heads"
    kv_heads: str | None = "num_key_value_heads"
    head_dim: str | None = "head_dim"
    hidden: str = "hidden_size"
    layers: str = "num_hidden_layers"
    init_std: str = "initializer_range"


@dataclass(frozen=True)
class Variant:
    """One way a model_type stores attention, chosen by config flags.

    holds: `any` KV count (read from and written to the config's KV key), `all` (one KV head per
    query head: MHA) or `one` (MQA). `when` identifies the variant in a config and is written to the
    output's; `set` is written, and `requires` checked, only when a model enters this variant from
    another one (or from another model_type)."""

    name: str
    layout: str
    holds: str = "any"
    when: Mapping[str, Any] = field(default_factory=dict)
    set: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class Architecture:
    """One model_type: where its attention tensors are and how they are laid out."""

    model_type: str
    attention: str
    o: str
    variants: tuple[Variant, ...]
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    conv1d: bool = False  # attention weights stored (in, out), as GPT-2's Conv1D
    kv_extras: tuple[KVExtra, ...] = ()
    config: ConfigKeys = field(default_factory=ConfigKeys)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # what transformers assumes for absent keys
    translate: Translation | None = None
    rope: str = "half"  # which key dims RoPE rotates together: half (j, j+d/2), interleaved (2j, 2j+1), none
    qk_norm: str = "none"  # a norm on q and k after the projection: none, shared, per_head, full
    qk_norm_flag: str | None = None  # config key that switches qk_norm on (None: always on)
    serving: str | None = None  # what serves a checkpoint with fewer KV than query heads, where not all do

    def prefix(self, layer: int) -> str:
        return self.attention.format(layer=layer)

    def normalizes_keys(self, config: dict) -> bool:
        """Whether keys pass through a norm after k_proj in a model with this config.json."""
        if self.qk_norm == "none":
            return False
        return self.qk_norm_flag is None or bool(config.get(self.qk_norm_flag))

    def config_value(self, config: Mapping[str, Any], key: str) -> Any:
        """A config.json value, or the class default transformers uses when the key is absent."""
        return config[key] if key in config else self.defaults.get(key)

    @property
    def layout(self) -> str:
        """The layout of a single-variant architecture."""
        if len(self.variants) != 1:
            raise ValueError(f"{self.model_type} has several layouts; choose a variant by its config")
        return self.variants[0].layout


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


def _build_list(cls: type, raw: Any, where: str) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list")
    return tuple(_build(cls, item, f"{where}[{i}]") for i, item in enumerate(raw))


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
        raise ValueError(f"{where}: expected a list of names")
    return tuple(raw)


def _mapping(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping")
    return dict(raw)


def _parse_variant(raw: Any, where: str) -> Variant:
    raw = _mapping(raw, where)
    requires = _build_list(Requirement, raw.pop("requires", None), f"{where} requires")
    when, sets = (
        _mapping(raw.pop("when", None), f"{where} when"),
        _mapping(raw.pop("set", None), f"{where} set"),
    )
    variant = _build(Variant, {**raw, "when": when, "set": sets, "requires": requires}, where)
    if variant.holds not in HOLDS:
        raise ValueError(f"{where}: holds {variant.holds!r} is not one of {HOLDS}")
    return variant


def _parse_translation(raw: Any, where: str) -> Translation:
    raw = _mapping(raw, where)
    folds = []
    for i, item in enumerate(raw.pop("fold", None) or []):
        item = _mapping(item, f"{where} fold[{i}]")
        into = _strings(item.pop("into", None), f"{where} fold[{i}] into")
        folds.append(_build(Fold, {**item, "into": into}, f"{where} fold[{i}]"))
    rope = raw.pop("rope", None)
    if rope is not None:
        rope = _mapping(rope, f"{where} rope")
        for key in ("theta", "fraction"):
            rope[key] = _strings(rope.get(key), f"{where} rope {key}")
        rope = _build(RopeRule, rope, f"{where} rope")
    multiples = _mapping(raw.pop("config_multiple", None), f"{where} config_multiple")
    parts = {
        "rename": _build_list(Rename, raw.pop("rename", None), f"{where} rename"),
        "zeros": _build_list(Zeros, raw.pop("zeros", None), f"{where} zeros"),
        "fold": tuple(folds),
        "rope": rope,
        "requires": _build_list(Requirement, raw.pop("requires", None), f"{where} requires"),
        "config_rename": _mapping(raw.pop("config_rename", None), f"{where} config_rename"),
        "config_set": _mapping(raw.pop("config_set", None), f"{where} config_set"),
        "config_multiple": {
            k: _build(Multiple, v, f"{where} config_multiple {k}") for k, v in multiples.items()
        },
        **{
            key: _strings(raw.pop(key, None), f"{where} {key}")
            for key in ("drop", "transpose", "drop_config")
        },
        "architectures": _strings(raw.pop("architectures", None), f"{where} architectures"),
    }
    translation = _build(Translation, {**raw, **parts}, where)
    check_templates(translation, where)
    return translation


def parse_entry(model_type: str, raw: Any, layouts: Mapping[str, Any]) -> Architecture:
    """Validate one table entry strictly and return it as an Architecture.

    `layouts` maps each layout name to an object whose `fields` names the tensor keys it reads
    (q/k/v or qkv) and whose `supports_kv_extras` says whether it reads kv_extras."""
    where = f"architecture table entry {model_type!r}"
    raw = _mapping(raw, where)
    extras = _build_list(KVExtra, raw.pop("kv_extras", None), f"{where} kv_extras")
    config = _build(ConfigKeys, _mapping(raw.pop("config", None), f"{where} config"), f"{where} config")
    layout = raw.pop("layout", None)
    variants = tuple(
        _parse_variant(v, f"{where} variants[{i}]") for i, v in enumerate(raw.pop("variants", None) or [])
    )
    if (layout is None) == (not variants):
        raise ValueError(f"{where}: give exactly one of `layout` or `variants`")
    if layout is not None:
        variants = (Variant(name=str(layout), layout=str(layout)),)
    translate = raw.pop("translate", None)
    defaults = _mapping(raw.pop("defaults", None), f"{where} defaults")
    arch = _build(
        Architecture,
        {
            **raw,
            "model_type": model_type,
            "variants": variants,
            "kv_extras": extras,
            "config": config,
            "defaults": defaults,
            "translate": None if translate is None else _parse_translation(translate, f"{where} translate"),
        },
        where,
    )
    if "{layer}" not in arch.attention:
        raise ValueError(f"{where}: attention {arch.attention!r} must contain '{{layer}}'")
    if arch.rope not in ROPE_STYLES:
        raise ValueError(f"{where}: rope {arch.rope!r} is not one of {ROPE_STYLES}")
    if arch.qk_norm not in QK_NORMS:
        raise ValueError(f"{where}: qk_norm {arch.qk_norm!r} is not one of {QK_NORMS}")
    for variant in arch.variants:
        if variant.layout not in layouts:
            raise ValueError(f"{where}: layout {variant.layout!r} is not one of {sorted(layouts)}")
        fields = set(layouts[variant.layout].fields)
        missing = [f for f in sorted(fields) if not getattr(arch, f)]
        unused = [f for f in ("q", "k", "v", "qkv") if getattr(arch, f) and f not in fields]
        if missing or unused:
            raise ValueError(
                f"{where}: layout {variant.layout!r} reads {sorted(fields)}; "
                f"missing {missing}, not applicable {unused}"
            )
        if extras and not getattr(layouts[variant.layout], "supports_kv_extras", False):
            raise ValueError(f"{where}: layout {variant.layout!r} does not support kv_extras")
    if arch.config.kv_heads is None and any(v.holds == "any" for v in arch.variants):
        raise ValueError(f"{where}: a variant that holds any KV count needs config.kv_heads")
    for extra in extras:
        if extra.init not in EXTRA_INITS:
            raise ValueError(f"{where}: kv_extras init {extra.init!r} is not one of {EXTRA_INITS}")
    return arch


def parse_unsupported(model_type: str, raw: Any) -> str:
    """An `unsupported` entry: its one key is the reason, said in the error."""
    where = f"architecture table entry {model_type!r}"
    if set(raw) != {"unsupported"} or not isinstance(raw["unsupported"], str) or not raw["unsupported"]:
        raise ValueError(f"{where}: an `unsupported` entry has only that key, a non-empty reason")
    return raw["unsupported"]
