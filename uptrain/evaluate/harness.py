"""lm-evaluation-harness style metrics, computed like its wikitext task.

Each document is tokenized without special tokens and scored by `loglikelihood_rolling`: disjoint
windows of `window` targets over `[prefix] + tokens`, where the prefix is the tokenizer's BOS token
(EOS when it has none), as the harness's HFLM does. The document log-likelihoods are then
aggregated over words and bytes of the original text (the task's process_results):

    word_perplexity = exp(-sum(loglikelihood) / sum(words))   words = len(re.split(r"\\s+", doc))
    byte_perplexity = exp(-sum(loglikelihood) / sum(bytes))   bytes = len(doc.encode("utf-8"))
    bits_per_byte   = -sum(loglikelihood) / sum(bytes) / ln 2

Differences from `lm_eval --tasks wikitext`: the harness scores EleutherAI/wikitext_document_level
(one document per article) after its wikitext detokenizer; here the text is scored as it is, and the
caller decides what a document is (`uptrain eval` passes its whole evaluated text as one document).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from uptrain.errors import UptrainError
from uptrain.evaluate.scoring import Progress, score_windows
from uptrain.evaluate.windows import Window, rolling_windows


@dataclass(frozen=True)
class HarnessResult:
    loglikelihood: float  # summed over documents, in nats
    words: int
    bytes: int
    tokens: int  # tokens scored (every token of every document)
    documents: int
    window: int
    word_perplexity: float
    byte_perplexity: float
    bits_per_byte: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_words(document: str) -> int:
    return len(re.split(r"\s+", document))


def count_bytes(document: str) -> int:
    return len(document.encode("utf-8"))


def harness_aggregate(
    loglikelihood: float, words: int, n_bytes: int, tokens: int = 0, documents: int = 1, window: int = 0
) -> HarnessResult:
    """The task's weighted perplexities from a summed log-likelihood and the word and byte counts."""
    return HarnessResult(
        loglikelihood=loglikelihood,
        words=words,
        bytes=n_bytes,
        tokens=tokens,
        documents=documents,
        window=window,
        word_perplexity=math.exp(-loglikelihood / words),
        byte_perplexity=math.exp(-loglikelihood / n_bytes),
        bits_per_byte=-loglikelihood / n_bytes / math.log(2),
    )


def prefix_token_id(tokenizer: Any) -> int:
    """The token that the first window is conditioned on: BOS, else EOS (lm-eval's prefix_token_id)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition the first window on")


def harness_metrics(
    model: Any,
    tokenizer: Any,
    documents: str | Sequence[str],
    window: int,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> HarnessResult:
    """Rolling log-likelihood of each document in disjoint windows of `window` tokens, aggregated
    into word perplexity, byte perplexity and bits per byte."""
    documents = [documents] if isinstance(documents, str) else list(documents)
    if not any(d.strip() for d in documents):
        raise UptrainError("the text is empty; point --dataset at a file or split with text in it")
    prefix = prefix_token_id(tokenizer)
    sequences: list[int] = []
    windows: list[Window] = []
    for document in documents:
        tokens = list(tokenizer(document, add_special_tokens=False)["input_ids"])
        windows += rolling_windows(len(tokens), window, offset=len(sequences))
        sequences += [prefix, *tokens]
    ids = torch.tensor(sequences, dtype=torch.long)
    scores = score_windows(model, ids, windows, batch_size=batch_size, progress=progress)
    return harness_aggregate(
        loglikelihood=-scores.total_nll,
        words=sum(count_words(d) for d in documents),
        n_bytes=sum(count_bytes(d) for d in documents),
        tokens=scores.total_targets,
        documents=len(documents),
        window=window,
    )
