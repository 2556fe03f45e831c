"""What the held-out curve is scored on: token ids and the windows over them.

Carved blocks (the default, or eval.split): each packed block is one window whose tokens after the
first are scored. eval.dataset: another text, read and tokenized as `uptrain eval` reads it (documents
joined with a blank line, the tokenizer's special tokens), its first eval.blocks x data.seq_len
tokens scored in the guide's sliding windows of data.seq_len tokens, stride half a window (`uptrain
eval`'s default stride)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uptrain.data import TextSource, join_documents, load_documents
from uptrain.evaluate.token_perplexity import tokenize_text
from uptrain.evaluate.windows import Window, sliding_windows


@dataclass(frozen=True)
class HeldOut:
    ids: torch.Tensor  # 1-D int64
    windows: list[Window]
    text: str  # what the tokens are, for the record

    @property
    def tokens_scored(self) -> int:
        return sum(w.targets for w in self.windows)


def heldout_of_blocks(blocks: torch.Tensor, text: str) -> HeldOut:
    """Each row of `blocks` (n, width) as a window of its own."""
    n, width = blocks.shape
    windows = [Window(i * width, (i + 1) * width, i * width + 1, (i + 1) * width) for i in range(n)]
    return HeldOut(blocks.reshape(-1).to(torch.long), windows, text)


def heldout_of_text(source: TextSource, tokenizer: Any, seq_len: int, blocks: int) -> HeldOut:
    """The first blocks x seq_len tokens of `source`, in sliding windows of seq_len, stride seq_len // 2."""
    ids, _ = tokenize_text(tokenizer, join_documents(load_documents(source)), blocks * seq_len)
    windows = sliding_windows(len(ids), seq_len, max(1, seq_len // 2))
    return HeldOut(ids, windows, f"{source.describe()}, first {len(ids):,} tokens")
