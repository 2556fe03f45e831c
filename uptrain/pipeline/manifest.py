"""Stage manifests: what each finished stage of `uptrain run` was made from, so that a rerun skips it.

OUTPUT/stages/<stage>.json holds a stage's inputs (the part of the resolved config it reads, and the
identities of the files, checkpoints and earlier stages it reads), their SHA-256 digest, its outputs
(paths relative to OUTPUT), its status and when it finished. A stage is up to date when its manifest
says finished, its digest equals the digest of its inputs now, and its outputs exist. A stage's inputs
name the digests of the stages before it, so a change anywhere reruns everything downstream of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.checkpoint.provenance import now
from uptrain.train.run_dir import flatten

STARTED, FINISHED = "started", "finished"


def digest_of(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    name: str
    inputs: dict[str, Any]  # JSON-able
    outputs: list[str] = field(default_factory=list)  # relative to OUTPUT; all must exist when done

    @property
    def digest(self) -> str:
        return digest_of(self.inputs)


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two stages' inputs."""
    a, b = (
        flatten(json.loads(json.dumps(old, default=str))),
        flatten(json.loads(json.dumps(new, default=str))),
    )
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class Manifests:
    """The manifests of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "stages"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def up_to_date(self, stage: Stage) -> bool:
        recorded = self.read(stage.name)
        return (
            recorded is not None
            and recorded.get("status") == FINISHED
            and recorded.get("digest") == stage.digest
            and all((self.root / out).exists() for out in stage.outputs)
        )

    def write(self, stage: Stage, status: str = FINISHED, **extra: Any) -> dict[str, Any]:
        record = {
            "stage": stage.name,
            "status": status,
            "digest": stage.digest,
            "inputs": stage.inputs,
            "outputs": stage.outputs,
            ("finished" if status == FINISHED else "started"): now(),
            **extra,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(stage.name), json.dumps(record, indent=2, default=str) + "\n")
        return record


def file_identity(path: Path) -> dict[str, Any]:
    """A file as make would see it: where it is, its size and its modification time."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def checkpoint_identity(directory: Path) -> dict[str, Any]:
    """A checkpoint directory: its config.json's SHA-256 and the identity of each weight file."""
    directory = Path(directory)
    config = directory / "config.json"
    weights = sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith((".safetensors", ".bin", ".gguf"))
    )
    return {
        "path": str(directory.resolve()),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": [{**file_identity(p), "path": p.name} for p in weights],
    }
