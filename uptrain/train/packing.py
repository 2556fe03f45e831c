"""Tokenize and pack text into fixed-length blocks with datasets.map: no padding, nothing wasted
but the tail of each map batch (as in transformers' run_clm example).

Each row is one document: its tokens (with the tokenizer's own special tokens, e.g. Llama's BOS),
then EOS unless the tokenizer already ended it with one or `add_eos` is off. Empty rows are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAP_BATCH_ROWS = 1000


def pack_token_lists(token_lists: Sequence[Sequence[int]], seq_len: int) -> list[list[int]]:
    """Concatenate the lists and cut them into blocks of seq_len tokens; the remainder is dropped."""
    flat = [t for tokens in token_lists for t in tokens]
    return [flat[i : i + seq_len] for i in range(0, len(flat) - seq_len + 1, seq_len)]


def document_tokens(tokenizer: Any, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
    """Token ids of each non-empty text, each followed by EOS (when add_eos and the tokenizer has one)."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None:
        ids = [x if x and x[-1] == eos else [*x, eos] for x in ids]
    return ids


class _TokenizeAndPack:
    """The map function (a class, so datasets can fingerprint it for its cache)."""

    def __init__(self, tokenizer: Any, text_column: str, seq_len: int, add_eos: bool) -> None:
        self.tokenizer, self.text_column, self.seq_len, self.add_eos = (
            tokenizer,
            text_column,
            seq_len,
            add_eos,
        )

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        tokens = document_tokens(self.tokenizer, batch[self.text_column], self.add_eos)
        return {"input_ids": pack_token_lists(tokens, self.seq_len)}


def tokenize_and_pack(
    dataset: Any,
    tokenizer: Any,
    seq_len: int,
    text_column: str = "text",
    add_eos: bool = True,
    num_proc: int | None = None,
) -> Any:
    """A dataset (or streamed IterableDataset) of {"input_ids": [seq_len ints]} blocks."""
    import datasets

    columns = dataset.column_names
    if columns is None:  # some streamed datasets only know their columns once read
        columns = list(next(iter(dataset)).keys())
    fn = _TokenizeAndPack(tokenizer, text_column, seq_len, add_eos)
    kwargs: dict[str, Any] = {"batched": True, "batch_size": MAP_BATCH_ROWS, "remove_columns": columns}
    if isinstance(dataset, datasets.Dataset):
        kwargs.update(num_proc=num_proc, desc=f"tokenizing and packing into {seq_len}-token blocks")
    return dataset.map(fn, **kwargs)
