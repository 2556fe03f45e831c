"""typer options generated from a config dataclass, so a command and its YAML section cannot drift.

Each field becomes `--field-name` (underscores as dashes) with the field's documentation as help
and its default; the field's `cli` metadata renames it (`name`), adds a short name, makes it required,
or makes a bool `--x/--no-x`. A nested section's fields become options of their own (report.tasks'
`num_fewshot` is `--num-fewshot`). A field with `argument` metadata is a positional argument, which
the command declares itself (`argument(cls, field)` gives its help from the field). Values are checked
by the library, which names fields in its errors (SettingError). `from_options` builds the dataclass
back from what typer parsed.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import typer

from uptrain.config.schema import _is_optional
from uptrain.errors import as_flag


def _annotation(tp: Any) -> Any:
    optional, inner = _is_optional(tp)
    if typing.get_origin(inner) is typing.Literal:  # the library checks the value and names the field
        inner = str
    return Optional[inner] if optional else inner  # noqa: UP045 - typer reads typing.Optional


def _section(tp: Any) -> type | None:
    """The dataclass a field holds, when it is a nested section."""
    inner = _is_optional(tp)[1]
    return inner if dataclasses.is_dataclass(inner) else None


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def option_fields(cls: type) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(parameter name, field, type) of every option of `cls`, nested sections' fields in their place."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        cli = f.metadata.get("cli", {})
        if "argument" in cli:
            continue
        section = _section(hints[f.name])
        if section is not None:
            yield from option_fields(section)
        else:
            yield cli.get("name", f.name), f, hints[f.name]


def option_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per option of `cls` (see option_fields)."""
    params = []
    for name, f, hint in option_fields(cls):
        cli = f.metadata.get("cli", {})
        flag = as_flag(name)
        tp = _annotation(hint)
        negatable = tp is bool and cli.get("negatable")
        decls = [f"{flag}/--no-{flag[2:]}"] if negatable else [flag]
        if "short" in cli:
            decls.append(cli["short"])
        default = ... if cli.get("required") else _default(f)
        option = typer.Option(default, *decls, help=f.metadata.get("doc", ""))
        annotation = _is_optional(tp)[1] if cli.get("required") else tp
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )
    return params


def argument(cls: type, field: str) -> Any:
    """The typer.Argument of `cls`'s positional field `field` (cli metadata `argument`: its metavar)."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == field]
    cli = f.metadata["cli"]
    default = ... if cli.get("required") else _default(f)
    return typer.Argument(default, metavar=cli["argument"], help=f.metadata.get("doc", ""))


def from_options(cls: type, options: Mapping[str, Any], **given: Any) -> Any:
    """An instance of `cls` from the options typer parsed (nested sections rebuilt) and `given` fields
    (the positional arguments)."""
    hints = typing.get_type_hints(cls)
    values = dict(given)
    for f in dataclasses.fields(cls):
        cli = f.metadata.get("cli", {})
        if f.name in given or "argument" in cli:
            continue
        section = _section(hints[f.name])
        values[f.name] = (
            from_options(section, options) if section is not None else options[cli.get("name", f.name)]
        )
    return cls(**values)


def with_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command function (taking **options) the options of `cls` after its own parameters."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func)  # the command's own annotations, resolved
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.kind != p.VAR_KEYWORD
        ]
        func.__signature__ = inspect.Signature([*own, *option_parameters(cls)])  # type: ignore[attr-defined]
        return func

    return decorate
