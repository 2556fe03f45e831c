"""Strict YAML -> dataclass loading: every key known, every value of its declared type.

A config is a tree of dataclasses whose fields are declared with `setting(default, doc)`. Loading
walks the YAML mapping against that tree: an unknown key or a value of the wrong type is a one-line
UptrainError that names the key (`optim.lr`), with a suggestion for a misspelt one. `--set a.b=v`
overrides go through the same checks, their value parsed as YAML (so `3` is an int, `null` is None).
Supported field types: bool, int, float, str, X | None, Literal[...], list[X], nested dataclasses and
classes with a `from_config_value` classmethod (e.g. a token count written "2T").
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import yaml

from uptrain.errors import UptrainError


def setting(default: Any = None, doc: str = "", *, factory: Any = None, cli: dict | None = None) -> Any:
    """A documented dataclass field. `factory` builds mutable or nested defaults; `cli` says how a
    command line that is generated from the dataclass spells it (see uptrain/config/conversion.py)."""
    metadata = {"doc": doc, "cli": cli or {}}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def override(cls: type, name: str, default: Any, *, cli: dict | None = None) -> Any:
    """Field `name` of dataclass `cls`, redeclared in a subclass with another default (its documentation
    kept, its cli metadata kept unless given). Say beside it why that subclass's users need it."""
    (inherited,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return setting(default, inherited.metadata["doc"], cli=inherited.metadata["cli"] if cli is None else cli)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def type_name(tp: Any) -> str:
    """How a field type reads in an error or in the docs."""
    optional, inner = _is_optional(tp)
    if optional:
        return f"{type_name(inner)} or null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list, each item {type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return f"section (or its {tp.shorthand})" if getattr(tp, "shorthand", None) else "section"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "type_label", getattr(tp, "__name__", str(tp))))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def convert_value(tp: Any, value: Any, key: str, where: str) -> Any:
    """`value` as type `tp`, or a one-line error naming `key`."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise UptrainError(f"{where}{key} must be {type_name(tp)}, not null; set a value or remove the key")
    tp = inner
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and getattr(tp, "shorthand", None):  # `eval.dataset: valid.txt`
            value = {tp.shorthand: value}
        if not isinstance(value, Mapping):
            raise UptrainError(f"{where}{key} must be a section (key: value lines), not {_show(value)}")
        return load_dataclass(tp, value, f"{key}.", where)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise UptrainError(
                f"{where}{key} must be one of {', '.join(map(str, choices))}, not {_show(value)}"
            )
        return value
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise UptrainError(f"{where}{key} must be {type_name(tp)}, not {_show(value)}")
        (item,) = typing.get_args(tp)
        return [convert_value(item, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if hasattr(tp, "from_config_value"):
        try:
            return tp.from_config_value(value)
        except (TypeError, ValueError) as exc:
            raise UptrainError(f"{where}{key}: {exc}") from None
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):  # .nan, .inf, 1e999
        raise UptrainError(f"{where}{key} must be a finite number, not {_show(value)}")
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise UptrainError(f"{where}{key} must be {type_name(tp)}, not {_show(value)}")
    return float(value) if tp is float else value


def load_dataclass(cls: type, raw: Mapping, prefix: str = "", where: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, strictly: see the module docstring."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(names)}"
            raise UptrainError(f"{where}unknown key {prefix}{key}{hint}")
        values[key] = convert_value(hints[key], value, f"{prefix}{key}", where)
    return cls(**values)


def to_plain(obj: Any) -> Any:
    """A config as plain dicts, lists and scalars (what YAML writes back)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "to_config_value"):
        return obj.to_config_value()
    return obj


def field_type(cls: type, dotted: str) -> Any:
    """The declared type of a dotted key, or a one-line error naming the unknown part."""
    tp: Any = cls
    walked = []
    for part in dotted.split("."):
        _, tp = _is_optional(tp)
        if not dataclasses.is_dataclass(tp) or part not in _hints(tp):
            names = [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []
            close = difflib.get_close_matches(part, names, n=1)
            if close:
                hint = f"; did you mean {'.'.join([*walked, close[0]])}?"
            else:
                hint = (
                    f"; known keys here: {', '.join(names)}" if names else "; see --print-config for the keys"
                )
            raise UptrainError(f"--set: unknown key {dotted}{hint}")
        tp = _hints(tp)[part]
        walked.append(part)
    return tp


def apply_override(cls: type, raw: dict, assignment: str) -> None:
    """Apply one `key.sub=value` to the raw mapping, the value parsed as YAML (text for string keys)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UptrainError(f"--set {assignment!r} is not key=value; write e.g. --set optim.lr=3e-4")
    tp = field_type(cls, key)
    _, inner = _is_optional(tp)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if inner is str and value is not None and not isinstance(value, (dict, list)):
        value = text  # `--set model.path=007` stays the string "007"
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        merges = any(key_node.tag == "tag:yaml.org,2002:merge" for key_node, _ in node.value)
        for key_node, _ in [] if merges else node.value:  # `<<: *base` then a key overrides on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping's own error names it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {_show(key)} appears twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(text: str, where: str) -> dict:
    """A YAML document that must be a mapping (an empty file is an empty mapping), with no key twice."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UptrainError(f"{where}is not valid YAML{at} ({problem}); fix the file") from None
    except RecursionError:
        raise UptrainError(f"{where}is nested too deeply to be a config; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UptrainError(f"{where}must be a mapping of sections (model:, data:, ...), not {_show(data)}")
    return data


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) of every leaf setting, in declaration order."""
    rows = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        _, inner = _is_optional(tp)
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(inner):
            rows.append((f"{prefix}{f.name}", "section", None, doc))
            rows.extend(describe_fields(inner, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append((f"{prefix}{f.name}", type_name(tp), to_plain(default), doc))
        if typing.get_origin(inner) is list and dataclasses.is_dataclass(typing.get_args(inner)[0]):
            rows.extend(describe_fields(typing.get_args(inner)[0], f"{prefix}{f.name}[]."))
    return rows
