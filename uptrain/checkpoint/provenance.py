"""uptrain.json: where a checkpoint came from and what was done to it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from uptrain import __version__
from uptrain.checkpoint.atomic import atomic_write_text

FILENAME = "uptrain.json"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_provenance(directory: Path) -> dict[str, Any]:
    path = Path(directory) / FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def write_provenance(directory: Path, record: dict[str, Any]) -> None:
    """Write uptrain.json atomically, stamped with the tool version."""
    record = {"uptrain_version": __version__, **record}
    atomic_write_text(Path(directory) / FILENAME, json.dumps(record, indent=2, sort_keys=False) + "\n")


def update_provenance(directory: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Add or replace one section (e.g. "training") of an existing uptrain.json."""
    record = read_provenance(directory)
    record[section] = values
    record.pop("uptrain_version", None)
    write_provenance(directory, record)
    return record


def pretraining_tokens(record: dict[str, Any]) -> int | None:
    """The source model's pre-training tokens, where some uptrain.json along the chain recorded them."""
    while record:
        if isinstance(record.get("pretraining_tokens"), int):
            return record["pretraining_tokens"]
        record = record.get("source", {}).get("uptrain", {})
    return None
