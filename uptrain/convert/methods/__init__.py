"""Conversion methods: `--method` names one step or a `+`-joined composition of them, built from the
step registry (uptrain.config.methods: each step's options and what it needs) into the ConversionMethod
that pipeline.py assembles, e.g. mean, fit, similar+fit+refine."""

from __future__ import annotations

from uptrain.config.methods import STEPS, ComposedMethod, compose
from uptrain.convert.methods.base import ConversionMethod, MethodContext
from uptrain.convert.methods.pipeline import build_method

__all__ = ["STEPS", "ComposedMethod", "ConversionMethod", "MethodContext", "build_method", "compose"]
