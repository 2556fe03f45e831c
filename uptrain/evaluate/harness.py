"""lm-evaluation-harness style metrics, computed like its wikitext task.

Each document is tokenized as the harness's HFLM does (the tokenizer's own special tokens) and scored
on its own by `loglikelihood_rolling`: disjoint
windows of `window` targets over `[prefix] + tokens`, where the prefix is the tokenizer's BOS token
(EOS when it has none), as the harness's HFLM does. The document log-likelihoods are then
aggregated over words and bytes of the original text (the task's process_results):

    word_perplexity = exp(-sum(loglikelihood) / sum(words))   words = len(re.split(r"\\s+", doc))
    byte_perplexity = exp(-sum(loglikelihood) / sum(bytes))   bytes = len(doc.encode("utf-8"))
    bits_per_byte   = -sum(loglikelihood) / sum(bytes) / ln 2

A document is a HarnessDocument (uptrain.evaluate.documents): the scored text and the original text
that words and bytes are counted on, which differ under the wikitext task's detokenizer. Tested equal
to lm_eval's own HFLM and task on the same documents (tests/test_evaluate_lm_eval.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from uptrain.errors import UptrainError
from uptrain.evaluate.documents import HarnessDocument
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


def harness_tokens(tokenizer: Any, text: str, prefix: int) -> list[int]:
    """A document's tokens as lm_eval's HFLM.tok_encode makes them: the tokenizer's own special tokens
    (none for most, BOS for some), left out when the text already starts with the prefix token."""
    special = not text.startswith(tokenizer.decode([prefix]))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def harness_metrics(
    model: Any,
    tokenizer: Any,
    documents: str | Sequence[str] | Sequence[HarnessDocument],
    window: int,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> HarnessResult:
    """Rolling log-likelihood of each document on its own, in disjoint windows of `window` tokens
    after the prefix token, aggregated into word perplexity, byte perplexity and bits per byte over
    the words and bytes of each document's original text."""
    if isinstance(documents, str):
        documents = [documents]
    docs = [d if isinstance(d, HarnessDocument) else HarnessDocument(d, d) for d in documents]
    if not any(d.scored.strip() for d in docs):
        raise UptrainError("the text is empty; point --dataset at a file or split with text in it")
    prefix = prefix_token_id(tokenizer)
    sequences: list[int] = []
    windows: list[Window] = []
    for document in docs:
        tokens = harness_tokens(tokenizer, document.scored, prefix)
        windows += rolling_windows(len(tokens), window, offset=len(sequences))
        sequences += [prefix, *tokens]
    ids = torch.tensor(sequences, dtype=torch.long)
    scores = score_windows(model, ids, windows, batch_size=batch_size, progress=progress)
    return harness_aggregate(
        loglikelihood=-scores.total_nll,
        words=sum(count_words(d.original) for d in docs),
        n_bytes=sum(count_bytes(d.original) for d in docs),
        tokens=scores.total_targets,
        documents=len(docs),
        window=window,
    )
