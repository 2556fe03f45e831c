"""Settings checked against the model to train, from its config alone (before anything is written):
data.seq_len within its positions, train.trainable naming some of its parameters."""

from __future__ import annotations

import fnmatch
from typing import Any

from uptrain.checkpoint.positions import max_positions
from uptrain.errors import UptrainError


def check_seq_len(seq_len: int, config: dict) -> None:
    limit = max_positions(config)
    if limit is not None and seq_len > limit:
        raise UptrainError(
            f"data.seq_len {seq_len} is longer than the model's {limit} positions "
            f"(max_position_embeddings); set data.seq_len to at most {limit}"
        )


def matching(names: list[str], patterns: list[str]) -> list[str]:
    """The parameter names that train.trainable's glob patterns select (all of them without patterns)."""
    if not patterns:
        return list(names)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def check_trainable(patterns: list[str], model: Any) -> None:
    """train.trainable must select at least one parameter of `model` (a meta-device model will do)."""
    if not patterns:
        return
    names = [name for name, _ in model.named_parameters()]
    if names and not matching(names, patterns):
        example = next((n for n in names if "attn" in n), names[0])
        raise UptrainError(f"train.trainable {patterns} matches no parameter; names look like {example!r}")
