"""Token perplexity by the sliding-window method of the Hugging Face guide, batched.

`perplexity_of_ids` scores exactly the tokens that the guide's one-window-at-a-time loop scores
(see uptrain.evaluate.windows) and returns their token-weighted mean NLL: the sum of every scored
token's -log p divided by the number of scored tokens. The guide instead multiplies each window's
mean loss by `valid labels - 1`, which is the true count only for a window without context (where
transformers' internal label shift drops the first label); for later windows it is one short. We
count the labels that are actually scored, so the result equals the guide's loop with that count
corrected, and differs from the printed recipe by a tiny reweighting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from uptrain.checkpoint.positions import max_positions
from uptrain.data import join_documents
from uptrain.errors import UptrainError
from uptrain.evaluate.scoring import Progress, score_windows
from uptrain.evaluate.windows import sliding_windows

DEFAULT_MAX_WINDOW = 2048
_TOKENIZE_MARGIN = 64  # tokens beyond --max-tokens, so the cut cannot change the tokens kept


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token, in nats
    nll_sum: float
    tokens_scored: int
    tokens: int  # tokens in the evaluated text
    windows: int
    window: int
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_window(model: Any) -> int:
    """min(the model's max positions, 2048)."""
    limit = max_positions(model)
    return min(limit, DEFAULT_MAX_WINDOW) if limit else DEFAULT_MAX_WINDOW


def check_window_fits(model: Any, window: int, name: str = "the model") -> None:
    limit = max_positions(model)
    if limit is not None and window > limit:
        raise UptrainError(
            f"--window {window} is larger than {name}'s {limit} positions; use --window {limit}"
        )


def perplexity_of_ids(
    model: Any,
    ids: torch.Tensor | Sequence[int],
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> PerplexityResult:
    """Sliding-window perplexity of already tokenized ids (1-D). Defaults: window
    min(max positions, 2048), stride window // 2."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    window = window or default_window(model)
    stride = stride or max(1, window // 2)
    check_window_fits(model, window)
    windows = sliding_windows(ids.numel(), window, stride)
    scores = score_windows(model, ids, windows, batch_size=batch_size, progress=progress)
    mean = scores.total_nll / scores.total_targets
    return PerplexityResult(
        perplexity=math.exp(mean),
        nll=mean,
        nll_sum=scores.total_nll,
        tokens_scored=scores.total_targets,
        tokens=ids.numel(),
        windows=len(windows),
        window=window,
        stride=stride,
    )


def perplexity_of_blocks(
    model: Any, blocks: torch.Tensor, batch_size: int = 4, progress: Progress | None = None
) -> PerplexityResult:
    """Perplexity of independent token blocks (rows of a 2-D tensor, e.g. held-out training blocks):
    each row is one window and every token but its first is scored."""
    if blocks.ndim != 2 or blocks.shape[1] < 2:
        raise UptrainError("blocks must be a 2-D tensor of rows with at least 2 tokens each")
    width = blocks.shape[1]
    return perplexity_of_ids(model, blocks.reshape(-1), width, width, batch_size, progress)


def tokenize_text(tokenizer: Any, text: str, max_tokens: int | None = None) -> tuple[torch.Tensor, str]:
    """The text's token ids (with the tokenizer's default special tokens, as the guide does),
    cut to `max_tokens`, and the part of the text those tokens cover (for word and byte counts).
    Only a prefix of a long text is tokenized when max_tokens is small."""
    if max_tokens is not None and max_tokens < 2:
        raise UptrainError(f"--max-tokens {max_tokens} is too small; score at least 2 tokens")
    chars = len(text) if max_tokens is None else max(4096, 8 * (max_tokens + _TOKENIZE_MARGIN))
    while True:
        part = text[:chars]
        offsets = getattr(tokenizer, "is_fast", False) and max_tokens is not None
        encoding = tokenizer(part, return_offsets_mapping=True) if offsets else tokenizer(part)
        ids = list(encoding["input_ids"])
        if chars >= len(text) or max_tokens is None or len(ids) >= max_tokens + _TOKENIZE_MARGIN:
            break
        chars *= 2
    if not ids:
        raise UptrainError("the text has no tokens; point --dataset at a file or split with text in it")
    if max_tokens is None or len(ids) <= max_tokens:
        return torch.tensor(ids, dtype=torch.long), part
    ids = ids[:max_tokens]
    if offsets:
        covered = part[: max(end for _, end in encoding["offset_mapping"][:max_tokens])]
    else:  # slow tokenizers have no offsets: decode the kept tokens instead
        covered = tokenizer.decode(ids, skip_special_tokens=True)
    return torch.tensor(ids, dtype=torch.long), covered


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: str | Sequence[str],
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    progress: Progress | None = None,
) -> PerplexityResult:
    """Sliding-window perplexity of a text, or of documents joined with a blank line."""
    text = texts if isinstance(texts, str) else join_documents(texts)
    ids, _ = tokenize_text(tokenizer, text, max_tokens)
    return perplexity_of_ids(model, ids, window, stride, batch_size, progress)
