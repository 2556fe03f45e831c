"""Resolving SRC (a local directory or a Hub id) into a SourceCheckpoint, without loading a model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

from uptrain.card_inputs import front_matter_license
from uptrain.convert.checkpoint import SourceCheckpoint, find_weight_shards
from uptrain.convert.gguf import open_gguf_source
from uptrain.errors import UptrainError
from uptrain.hub_retry import http_status, network_failure

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_DOWNLOAD_PATTERNS = [
    "README.md",
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.tiktoken",
    "tokenizer*",
    "*.jinja",
]


def is_hub_id(src: str) -> bool:
    """Whether SRC has the shape of a Hub repo id (`name` or `owner/name`), as opposed to a path."""
    return bool(_HUB_ID.match(src)) and ".." not in src and not src.endswith((".", "-"))


def download_snapshot(
    repo_id: str,
    revision: str | None,
    allow_pickle: bool,
    gguf_file: str | None = None,
    with_code: bool = False,
) -> Path:
    """Download (or find in the cache) a model repository's config, weights and tokenizer files
    (or, for a GGUF repo, that one file); its Python files only `with_code` (--trust-remote-code)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [gguf_file] if gguf_file else _DOWNLOAD_PATTERNS + (["*.bin"] if allow_pickle else [])
    if with_code and not gguf_file:
        patterns.append("*.py")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except RevisionNotFoundError:
        raise UptrainError(f"the Hub repo {repo_id} has no revision {revision!r}; check --revision") from None
    except GatedRepoError:
        raise UptrainError(f"{repo_id} is gated; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UptrainError(
            f"{repo_id!r} is neither a local directory nor a Hub model you can access; "
            "check the path or id, or set HF_TOKEN for a private repo"
        ) from None
    except LocalEntryNotFoundError as exc:
        raise _not_downloaded(repo_id, exc) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise UptrainError(
            f"downloading {repo_id} failed with HTTP {status}; retry later or check HF_TOKEN"
        ) from None
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, the HTTP client's own errors
        if isinstance(exc, (OSError, ValueError)) or network_failure(exc) is not None:
            raise UptrainError(
                f"downloading {repo_id} failed ({type(network_failure(exc) or exc).__name__}); "
                "check your network and retry"
            ) from None
        raise


def _not_downloaded(repo_id: str, exc: BaseException) -> UptrainError:
    """Why a Hub model that is not in the local cache could not be downloaded, as one line."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return UptrainError(
            f"{repo_id!r} is not a local directory and HF_HUB_OFFLINE is set, so it cannot be downloaded; "
            "check the path, or unset HF_HUB_OFFLINE"
        )
    status = http_status(exc)
    if status is not None:
        return UptrainError(
            f"the Hub answered HTTP {status} for {repo_id} and it is not in the local cache; retry later"
        )
    network = network_failure(exc)
    reason = f" ({type(network).__name__})" if network is not None else ""
    return UptrainError(
        f"{repo_id!r} is not a local directory and the Hub at {constants.ENDPOINT} cannot be reached to "
        f"download it{reason}; check the path, your network or HF_ENDPOINT"
    )


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
