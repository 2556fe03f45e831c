"""A seeded mixture of text sources (data.mix): each source is packed into blocks on its own (its
documents, EOS and block boundaries exactly as a single data.dataset), every block is tagged with
its source's index, and datasets.interleave_datasets draws blocks from the sources with the weights
as probabilities and train.seed as its seed, until the first source runs out (a streamed mixture is
then repeated, a mixture on disk permuted per epoch, as a single source is)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import torch

from uptrain.config import DataSection, MixSource
from uptrain.data import TextSource

SOURCE_COLUMN = "source"


def mixture_sources(data: DataSection) -> list[MixSource]:
    """data.mix, each entry streamed when data.streaming or any entry asks (interleaving needs one kind)."""
    streaming = data.streaming or any(source.streaming for source in data.mix)
    return [replace(source, streaming=streaming) for source in data.mix]


class _SourceTag:
    """The map that tags a source's blocks with its index (a class, so datasets can fingerprint it)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {SOURCE_COLUMN: [self.index] * len(batch["input_ids"])}


def mix_blocks(sources: list[MixSource], pack: Callable[[MixSource], Any], seed: int) -> Any:
    """The blocks of every source with a weight above zero, tagged and interleaved."""
    import datasets

    drawn = [(i, source) for i, source in enumerate(sources) if source.weight > 0]
    total = sum(source.weight for _, source in drawn)
    tagged = [pack(source).map(_SourceTag(i), batched=True) for i, source in drawn]
    if len(tagged) == 1:
        return tagged[0]
    return datasets.interleave_datasets(
        tagged,
        probabilities=[source.weight / total for _, source in drawn],
        seed=seed,
        stopping_strategy="first_exhausted",
    )


def mixture_record(
    sources: list[MixSource], read: list[TextSource], blocks: list[int], seq_len: int
) -> list[dict]:
    """Each source (as data.mix names it and as it was read), its weight and what training drew from it,
    for uptrain.json and the report."""
    return [
        {
            "id": source.dataset,
            "source": text.describe(),
            "config": None if text.is_local else source.config,
            "split": text.split,
            "weight": source.weight,
            "blocks_drawn": count,
            "tokens_drawn": count * seq_len,
        }
        for source, text, count in zip(sources, read, blocks, strict=True)
    ]


class DrawnBlocks:
    """The blocks each data.mix source gave training: counted from the batches' source tags, summed over
    the processes once per optimizer step into `state.source_blocks` (a checkpoint keeps it, so a resumed
    run counts on). Without a mixture, it counts nothing and never communicates."""

    def __init__(self, accelerator: Any, state: Any, sources: int) -> None:
        self.accelerator, self.state, self.sources = accelerator, state, sources
        self.pending: torch.Tensor | None = None

    def counted(self, loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        for batch in loader:
            if self.sources and SOURCE_COLUMN in batch:
                counts = torch.bincount(batch[SOURCE_COLUMN].reshape(-1), minlength=self.sources)
                self.pending = counts if self.pending is None else self.pending + counts
            yield batch

    def step(self) -> None:
        """One optimizer step done: add what every process drew since the last one."""
        if not self.sources:
            return
        pending = self.pending if self.pending is not None else torch.zeros(self.sources, dtype=torch.long)
        drawn = self.accelerator.reduce(pending.to(self.accelerator.device), reduction="sum").tolist()
        before = self.state.source_blocks or [0] * self.sources
        self.state.source_blocks = [a + int(b) for a, b in zip(before, drawn, strict=True)]
        self.pending = None
