"""Hub ids and snapshots: whether SRC names a Hub repo, and downloading one (or finding it in the cache)."""

from __future__ import annotations

import re
from pathlib import Path

from uptrain.checkpoint.retry import http_status, network_failure
from uptrain.errors import UptrainError

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
