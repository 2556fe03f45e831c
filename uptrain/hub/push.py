"""Publishing a checkpoint directory to the Hugging Face Hub: the card, the file selection, the upload.

Only what it takes to load and understand the model goes up: safetensors weights and their index,
config.json, generation_config.json, the tokenizer files, the model card (README.md) and
uptrain.json. Only top-level files are considered, so optimizer states, checkpoints/ directories,
pickled weights and logs stay home.

The upload is huggingface_hub's own: create_repo(exist_ok=True), create_branch for --revision, then
upload_folder restricted to that exact list. Transient failures (HTTP 408/429/5xx, a dropped or
timed-out connection) are retried with exponential backoff. The token is huggingface_hub's to find
(HF_TOKEN, then the stored login); uptrain never reads it, so it cannot print, log or write it.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uptrain import __version__
from uptrain.checkpoint.provenance import FILENAME
from uptrain.checkpoint.retry import RetryPolicy, call_with_retries
from uptrain.errors import UptrainError
from uptrain.hub.card import is_generated_card, summary_line, write_model_card
from uptrain.hub.card_inputs import load_report

UPLOAD_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.tiktoken",
    "*.model",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    FILENAME,
)


@dataclass
class PushResult:
    repo_id: str
    revision: str
    files: list[tuple[str, int]]  # (name, bytes), what was (or would be) uploaded
    card: Path
    card_generated: bool  # False: a hand-written README.md was kept
    dry_run: bool
    repo_url: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UptrainError(
            f"{repo_id!r} is not a valid Hub repo id; use NAME or OWNER/NAME (letters, digits, '-', '_', "
            "'.'; no '--' or '..'; at most 96 characters)"
        ) from None


def check_checkpoint(directory: Path) -> None:
    """A directory with config.json, uptrain.json and complete safetensors weights."""
    if not directory.exists():
        raise UptrainError(f"{directory} does not exist; pass the checkpoint directory to push")
    if not directory.is_dir():
        raise UptrainError(f"{directory} is a file; pass the checkpoint directory to push")
    names = {p.name for p in directory.iterdir() if p.is_file()}
    if not any(n.endswith(".safetensors") for n in names):
        pickled = any(n.endswith((".bin", ".pt", ".pth")) for n in names)
        raise UptrainError(
            f"{directory} has no safetensors weights"
            + (" (only pickled .bin/.pt files, which push does not upload)" if pickled else "")
            + "; point at a converted or uptrained checkpoint (e.g. the final/ directory of a run)"
        )
    for required in ("config.json", FILENAME):
        if required not in names:
            raise UptrainError(
                f"{directory} has no {required}; "
                "push publishes checkpoints written by uptrain convert or train"
            )
    for index in (n for n in names if n.endswith(".safetensors.index.json")):
        try:
            shards = set(json.loads((directory / index).read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UptrainError(f"{directory / index} is not a valid weight index; regenerate it") from None
        missing = sorted(shards - names)
        if missing:
            raise UptrainError(
                f"{directory} lacks {missing[0]}, named in {index}; the checkpoint is incomplete"
            )


def upload_selection(directory: Path) -> list[tuple[str, int]]:
    """The top-level files of `directory` that push uploads, with their sizes, sorted by name."""
    files = [
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and any(fnmatch.fnmatch(p.name, pat) for pat in UPLOAD_PATTERNS)
    ]
    return sorted((p.name, p.stat().st_size) for p in files)


def refuse_leaked_token(directory: Path, files: list[tuple[str, int]], token: str) -> None:
    """Stop before uploading a file that holds the Hub token (e.g. a training config that recorded it).
    Weights are not searched; the token itself is never shown."""
    if not token:
        return
    for name, size in files:
        if name.endswith(".safetensors") or size > 50_000_000:
            continue
        if token.encode() in (directory / name).read_bytes():
            raise UptrainError(
                f"{directory / name} contains your Hub token; remove it from the file before pushing "
                "(and revoke the token if it was ever shared)"
            )


def _hub_api() -> Any:
    from huggingface_hub import HfApi, constants, get_token

    if constants.is_offline_mode():
        raise UptrainError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it to push (or use --dry-run)"
        )
    if get_token() is None:
        raise UptrainError(
            "no Hugging Face token found; set HF_TOKEN to a token with write access (or run `hf auth login`)"
        )
    return HfApi()


def _prepare_repo(api: Any, repo_id: str, private: bool, branch: str, retrying: dict[str, Any]) -> str:
    """Create the repo (and the branch) if missing, refusing a public one that --private asks for; its URL."""
    url = call_with_retries(
        "creating the repo", lambda: api.create_repo(repo_id, private=private, exist_ok=True), **retrying
    )
    if (
        private
        and not call_with_retries("reading the repo", lambda: api.repo_info(repo_id), **retrying).private
    ):
        raise UptrainError(
            f"{repo_id} already exists and is public, and --private does not change that; "
            "make it private on the Hub first, or choose another REPO_ID"
        )
    if branch != "main":
        call_with_retries(
            f"creating branch {branch}",
            lambda: api.create_branch(repo_id, branch=branch, exist_ok=True),
            **retrying,
        )
    return str(url)


def push_checkpoint(
    directory: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    report: Path | dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> PushResult:
    """Write the model card into `directory` and upload the checkpoint to the Hub model repo `repo_id`.

    `revision` is a branch (created from main if missing); `create_pr` opens a pull request against
    main instead of committing to it; `dry_run` writes the card and returns the file list without any
    network access. `report` is an evaluation report (a dict, or a report.json path) for the card.
    The Hub is huggingface_hub's endpoint (HF_ENDPOINT, default huggingface.co)."""
    directory = Path(directory)
    check_checkpoint(directory)
    check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise UptrainError("--create-pr opens a pull request against main; drop --revision or --create-pr")
    report_data = load_report(report) if isinstance(report, (str, Path)) else report
    branch = revision or "main"
    readme = directory / "README.md"

    api = None if dry_run else _hub_api()
    retrying: dict[str, Any] = dict(repo_id=repo_id, endpoint=api.endpoint if api else "", policy=retry)
    if api is not None:
        user = call_with_retries("the token check", api.whoami, **retrying)
        if "/" not in repo_id:
            repo_id = retrying["repo_id"] = f"{user['name']}/{repo_id}"

    generated = is_generated_card(readme)
    if generated:
        write_model_card(directory, repo_id, report_data)
    files = upload_selection(directory)
    result = PushResult(repo_id, branch, files, readme, generated, dry_run)
    if not generated:
        result.notes.append(f"kept the hand-written {readme}; delete it to generate the card")
    if api is None:
        return result

    from huggingface_hub import get_token

    refuse_leaked_token(directory, files, get_token() or "")
    record = json.loads((directory / FILENAME).read_text())
    message = commit_message or f"Upload {summary_line(record)} (uptrain {__version__})"
    result.repo_url = _prepare_repo(api, repo_id, private, branch, retrying)
    info = call_with_retries(
        "the upload",
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            allow_patterns=[glob.escape(name) for name, _ in files],
            commit_message=message,
            revision=revision,
            create_pr=create_pr,
        ),
        **retrying,
    )
    result.commit_url = getattr(info, "commit_url", None)
    result.pr_url = getattr(info, "pr_url", None)
    return result
