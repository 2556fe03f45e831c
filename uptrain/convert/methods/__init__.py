"""The registry of conversion methods: `--method` names one step or a `+`-joined pipeline of them
(pipeline.py), e.g. mean, fit, similar+fit+refine."""

from __future__ import annotations

from uptrain.convert.methods.base import ConversionMethod, MethodContext
from uptrain.convert.methods.pipeline import STEPS, MethodOptions, build_method, parse_method

__all__ = ["STEPS", "ConversionMethod", "MethodContext", "MethodOptions", "get_method", "parse_method"]


def get_method(spec: str, options: MethodOptions | None = None) -> ConversionMethod:
    """The method a `--method` spec names (one-line UptrainError when it names none)."""
    return build_method(spec, options)
