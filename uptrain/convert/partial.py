"""A calibrated conversion's progress on disk, beside OUT, so a killed run continues where it
stopped: each finished layer's output tensors (with the figures its method noted), and the hidden
states carried to the next layer. Every file is written to a temporary name and renamed, so a kill
leaves the previous state whole. The state is keyed by everything that decides the output (the
source, the settings, the calibration pass); a run with other settings discards it and starts over.
A finished conversion removes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.calibration.layerwise import Carry

STATE_SUFFIX = ".uptrain-partial"


def state_directory(out: Path) -> Path:
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}{STATE_SUFFIX}"


def fingerprint(*parts: Any) -> str:
    """A digest of everything that decides a conversion's output."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return value

    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_files(source: SourceCheckpoint) -> list[tuple[str, Any]]:
    """The source's weight files as they are now: name, size and modification time."""
    files = []
    for shard in source.shards:
        path = getattr(shard, "path", None)
        stat = path.stat() if path is not None else None
        files.append((shard.label, stat and (stat.st_size, stat.st_mtime_ns)))
    return files


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


class PartialConversion:
    """The state directory of one conversion (see the module docstring)."""

    def __init__(self, out: Path, key: str) -> None:
        self.directory = state_directory(out)
        self.key = key
        self.resumed_from = 0  # layers already done when this run started

    def open(self) -> None:
        """Keep a state with this key; discard one with another; create the directory."""
        stamp = self.directory / "key"
        if self.directory.exists() and (not stamp.is_file() or stamp.read_text() != self.key):
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            tmp = stamp.with_name("key.tmp")
            tmp.write_text(self.key)
            os.replace(tmp, stamp)

    def _layer_path(self, layer: int) -> Path:
        return self.directory / f"layer-{layer:05d}.safetensors"

    def save_layer(self, layer: int, tensors: dict[str, torch.Tensor], report: dict[str, float]) -> None:
        _save(tensors, self._layer_path(layer), {"report": json.dumps(report)})

    def load_layer(self, layer: int) -> dict[str, torch.Tensor]:
        return load_file(str(self._layer_path(layer)))

    def report(self, layer: int) -> dict[str, float]:
        with safe_open(str(self._layer_path(layer)), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("report", "{}"))

    def save_carry(self, carry: Carry) -> None:
        tensors = {f"source.{b}": t for b, t in enumerate(carry.source)}
        tensors.update({f"converted.{b}": t for b, t in enumerate(carry.converted or [])})
        _save(tensors, self.directory / "carry.safetensors", {"done": str(carry.done)})

    def carry(self, device: torch.device) -> Carry | None:
        """The saved carry, on `device`; None when no layer is done."""
        path = self.directory / "carry.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            done = int((f.metadata() or {})["done"])
        tensors = load_file(str(path), device=str(device))

        def stream(name: str) -> list[torch.Tensor]:
            return [tensors[f"{name}.{b}"] for b in range(sum(k.startswith(name + ".") for k in tensors))]

        converted = stream("converted")
        self.resumed_from = done
        return Carry(done, stream("source"), converted or None)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
