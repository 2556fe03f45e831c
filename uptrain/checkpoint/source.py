"""Resolving SRC (a local directory, a Hub id or a .gguf file) into a SourceCheckpoint, without
loading a model."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from uptrain.checkpoint.gguf import open_gguf_source
from uptrain.checkpoint.license import front_matter_license
from uptrain.checkpoint.shards import SourceCheckpoint, find_weight_shards
from uptrain.checkpoint.snapshot import download_snapshot, is_hub_id
from uptrain.errors import UptrainError


def read_config(root: Path) -> dict:
    path = root / "config.json"
    if not path.is_file():
        raise UptrainError(f"{root} has no config.json; point SRC at a Hugging Face model directory")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise UptrainError(f"{path} is not valid JSON ({exc}); re-download it") from None
    if not isinstance(config, dict):
        raise UptrainError(f"{path} is not a JSON object; re-download it")
    return config


def open_source(
    src: str | Path,
    revision: str | None = None,
    allow_pickle: bool = False,
    gguf_file: str | None = None,
    dtype: str | None = None,
    with_code: bool = False,
) -> SourceCheckpoint:
    """A local checkpoint directory, a Hub id, or a GGUF file (SRC itself, or `gguf_file` inside the
    SRC directory or Hub repo), as a SourceCheckpoint. `dtype` only matters for GGUF, which is
    dequantized on loading; `with_code` downloads a Hub repo's Python files too."""
    src = str(src)
    path = Path(src).expanduser()
    if path.is_dir():
        root, provenance = path.resolve(), {"path": str(path.resolve())}
        if revision:
            raise UptrainError("--revision applies to Hub ids only; drop it for a local directory")
    elif path.is_file() and path.suffix == ".gguf":
        if gguf_file:
            raise UptrainError("SRC is already a .gguf file; drop --gguf-file")
        return open_gguf_source(path, dtype)
    elif path.exists():
        raise UptrainError(f"{src} is a file; SRC must be a model directory, a .gguf file or a Hub id")
    elif is_hub_id(src):
        root = download_snapshot(src, revision, allow_pickle, gguf_file, with_code)
        provenance = {"hub_id": src, "revision": revision or "main", "commit": root.name}
    else:
        raise UptrainError(f"{src} does not exist and is not a valid Hub id; check the path")
    if gguf_file:
        return open_gguf_source(root / gguf_file, dtype, provenance)
    if not (root / "config.json").is_file():
        ggufs = sorted(p.name for p in root.glob("*.gguf"))
        if ggufs:
            raise UptrainError(f"{root} has no config.json but holds {ggufs[0]}; pass --gguf-file {ggufs[0]}")
    config = read_config(root)
    provenance["config_sha256"] = hashlib.sha256((root / "config.json").read_bytes()).hexdigest()
    if (root / "README.md").is_file():
        provenance.update(front_matter_license(root / "README.md"))
    previous = root / "uptrain.json"
    if previous.is_file():
        with contextlib.suppress(ValueError):
            provenance["uptrain"] = json.loads(previous.read_text())
    return SourceCheckpoint(
        config=config, shards=find_weight_shards(root, allow_pickle), root=root, provenance=provenance
    )
