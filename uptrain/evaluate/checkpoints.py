"""What `uptrain eval` compares: checkpoints given as a local directory, a .gguf file or a Hub id,
loaded with plain transformers, and the check that they all read the text as the same tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.loading import check_remote_code, load_causal_lm, load_error, load_tokenizer
from uptrain.checkpoint.shards import find_weight_shards
from uptrain.checkpoint.snapshot import download_snapshot, is_hub_id
from uptrain.checkpoint.source import read_config
from uptrain.errors import UptrainError
from uptrain.evaluate.token_perplexity import tokenize_text


@dataclass(frozen=True)
class Checkpoint:
    name: str  # as the user gave it
    root: Path  # the model directory (for a .gguf file, its folder)
    gguf_file: str | None = None
    trust_remote_code: bool = False  # run the checkpoint's own Python code (auto_map)
    allow_pickle: bool = False  # load pickled .bin weights

    @property
    def path(self) -> Path:
        return self.root / self.gguf_file if self.gguf_file else self.root

    def load_model(
        self, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None
    ) -> Any:
        return load_causal_lm(
            self.root,
            dtype=dtype,
            device=device,
            trust_remote_code=self.trust_remote_code,
            gguf_file=self.gguf_file,
            allow_pickle=self.allow_pickle,
        )

    def load_tokenizer(self) -> Any:
        try:
            return load_tokenizer(self.root, self.trust_remote_code, gguf_file=self.gguf_file)
        except UptrainError as exc:
            if "--trust-remote-code" in str(exc):
                raise
            raise UptrainError(
                f"{exc}; pass --tokenizer with the directory of the model's tokenizer"
            ) from None

    def config(self) -> Any:
        from transformers import AutoConfig

        try:  # trust_remote_code passed explicitly: left as None, transformers would prompt on stdin
            return AutoConfig.from_pretrained(
                str(self.root), gguf_file=self.gguf_file, trust_remote_code=self.trust_remote_code
            )
        except (OSError, ValueError, KeyError) as exc:
            if "trust_remote_code" in str(exc):
                raise load_error("config", self.name, exc) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UptrainError(f"cannot read the config of {self.name}: {first}") from None


def resolve_checkpoint(name: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> Checkpoint:
    """A model directory (checked for a config and safetensors weights), a .gguf file, or a Hub id
    (downloaded); pickled weights only with allow_pickle, the checkpoint's own code only with
    trust_remote_code."""
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UptrainError(f"model file {name} does not exist; check the path")
        return Checkpoint(name, path.resolve().parent, path.name, trust_remote_code=trust_remote_code)
    if path.is_dir():
        root = path.resolve()
    elif path.exists():
        raise UptrainError(f"{name} is a file; MODEL must be a model directory, a .gguf file or a Hub id")
    elif is_hub_id(name):
        root = download_snapshot(name, None, allow_pickle, with_code=trust_remote_code)
    else:
        raise UptrainError(f"model {name} does not exist; check the path")
    check_remote_code(read_config(root), name, trust_remote_code)
    find_weight_shards(root, allow_pickle)
    return Checkpoint(name, root, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def shared_tokens(
    checkpoints: Sequence[Checkpoint],
    text: str,
    max_tokens: int | None = None,
    tokenizer: Any = None,
) -> tuple[Any, torch.Tensor, str]:
    """The tokenizer, the token ids of the text (cut to max_tokens) and the text they cover. With no
    tokenizer given, each checkpoint's own must turn the text into the same ids as the first's."""
    if tokenizer is not None:
        ids, covered = tokenize_text(tokenizer, text, max_tokens)
        return tokenizer, ids, covered
    first = checkpoints[0].load_tokenizer()
    ids, covered = tokenize_text(first, text, max_tokens)
    for other in checkpoints[1:]:
        other_ids, _ = tokenize_text(other.load_tokenizer(), text, max_tokens)
        if not torch.equal(other_ids, ids):
            n = min(len(ids), len(other_ids))
            diff = next((i for i in range(n) if ids[i] != other_ids[i]), n)
            raise UptrainError(
                f"{other.name} and {checkpoints[0].name} have different tokenizers (their tokens differ "
                f"from token {diff} of the text); compare models that share a tokenizer"
            )
    return first, ids, covered


def check_vocabulary(model: Any, ids: torch.Tensor, name: str) -> None:
    vocab = model.get_input_embeddings().weight.shape[0]
    if ids.numel() and int(ids.max()) >= vocab:
        raise UptrainError(
            f"the text has token id {int(ids.max())} but {name} has only {vocab} embeddings; "
            "use the tokenizer that belongs to the model (--tokenizer)"
        )
