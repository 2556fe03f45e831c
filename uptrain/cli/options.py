"""typer options generated from a config dataclass, so a command and its YAML section cannot drift.

Each field becomes `--field-name` (underscores as dashes) with the field's documentation as help
and its default; the field's `cli` metadata adds a short name, makes it required, or makes a bool
`--x/--no-x`. Values are checked by the library, which names fields in its errors (SettingError).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any, Optional

import typer

from uptrain.config.schema import _is_optional
from uptrain.errors import as_flag


def _annotation(tp: Any) -> Any:
    optional, inner = _is_optional(tp)
    if typing.get_origin(inner) is typing.Literal:  # the library checks the value and names the field
        inner = str
    return Optional[inner] if optional else inner  # noqa: UP045 - typer reads typing.Optional


def option_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls` that has no `argument` in its cli metadata."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        cli = f.metadata.get("cli", {})
        if "argument" in cli:
            continue
        flag = as_flag(f.name)
        tp = _annotation(hints[f.name])
        negatable = tp is bool and cli.get("negatable")
        decls = [f"{flag}/--no-{flag[2:]}"] if negatable else [flag]
        if "short" in cli:
            decls.append(cli["short"])
        default = ... if cli.get("required") else f.default
        option = typer.Option(default, *decls, help=f.metadata.get("doc", ""))
        annotation = _is_optional(tp)[1] if cli.get("required") else tp
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )
    return params


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
