"""The training corpus: text -> packed blocks -> a held-out part and a seeded, resumable order.

Held out: the first `eval.blocks` blocks of the packed training split, or of `eval.split` when
given. Training order: for a dataset on disk, one seeded permutation of the blocks per epoch, laid
out up front for the whole budget, so batch k is the same in every run and a resumed run skips the
first k batches without reading them. A streamed dataset is shuffled in a seeded buffer and repeated;
resuming it reads and discards the batches already trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.config import BUILTIN_PREFIX, DataSection, EvalSection
from uptrain.data import TextSource, builtin_text, load_text_dataset
from uptrain.errors import UptrainError
from uptrain.train.packing import tokenize_and_pack

# load_text_dataset names the flags of `uptrain eval`; a config names its keys.
_FLAG_TO_KEY = (
    ("--dataset-config", "data.config"),
    ("--text-column", "data.text_column"),
    ("--split", "data.split / eval.split"),
    ("--dataset", "data.dataset"),
)


@dataclass
class Corpus:
    blocks: Any  # datasets.Dataset or IterableDataset of {"input_ids"}: the training blocks
    heldout: torch.Tensor  # (n, seq_len) int64
    seq_len: int

    @property
    def streaming(self) -> bool:
        import datasets

        return isinstance(self.blocks, datasets.IterableDataset)

    @property
    def block_count(self) -> int | None:
        return None if self.streaming else len(self.blocks)


def text_source(data: DataSection, split: str, data_dir: Path) -> TextSource:
    """The TextSource behind data.dataset; a builtin: corpus is written to data_dir first."""
    if data.dataset.startswith(BUILTIN_PREFIX):
        name = data.dataset[len(BUILTIN_PREFIX) :]
        path = data_dir / f"{name}.txt"
        text = builtin_text(name)
        if not path.is_file() or path.read_text() != text:
            data_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        return TextSource(dataset=str(path), split="train", text_column="text", streaming=data.streaming)
    return TextSource(
        dataset=data.dataset,
        config=data.config,
        split=split,
        text_column=data.text_column,
        streaming=data.streaming,
    )


def check_data_source(data: DataSection) -> None:
    """Fail early on a local dataset file that is not there (Hub ids are checked when loaded)."""
    if data.dataset.startswith(BUILTIN_PREFIX):
        return
    source = text_source(data, data.split, Path("."))
    if source.is_local and not Path(data.dataset).is_file():
        raise UptrainError(f"data.dataset: {data.dataset} does not exist or is not a file; fix the path")


def _load(source: TextSource) -> Any:
    try:
        return load_text_dataset(source)
    except UptrainError as exc:
        message = str(exc)
        for flag, key in _FLAG_TO_KEY:
            message = message.replace(flag, key)
        raise UptrainError(message) from None


def _first_blocks(blocks: Any, n: int) -> list[list[int]]:
    if hasattr(blocks, "take") and not hasattr(blocks, "select"):  # streamed
        return [row["input_ids"] for row in blocks.take(n)]
    return blocks.select(range(min(n, len(blocks))))["input_ids"]


def load_corpus(data: DataSection, evaluation: EvalSection, tokenizer: Any, data_dir: Path) -> Corpus:
    """Tokenize, pack and split. Run it on the main process first (it writes the datasets cache)."""
    if evaluation.split is not None and data.dataset.startswith(BUILTIN_PREFIX):
        raise UptrainError(f"eval.split does not apply to {data.dataset}; remove it (blocks are held out)")

    def packed(split: str) -> Any:
        source = text_source(data, split, data_dir)
        return tokenize_and_pack(
            _load(source), tokenizer, data.seq_len, source.text_column, data.add_eos, data.num_proc
        ), source

    blocks, source = packed(data.split)
    carved = evaluation.split is None
    heldout = _first_blocks(blocks if carved else packed(evaluation.split)[0], evaluation.blocks)
    where = f"{source.describe()} in {data.seq_len}-token blocks"
    if len(heldout) < evaluation.blocks:
        raise UptrainError(
            f"{where} gives {len(heldout)} held-out blocks, fewer than eval.blocks {evaluation.blocks}; "
            "lower eval.blocks or data.seq_len, or use more text"
        )
    if data.streaming:
        blocks = blocks.skip(len(heldout)) if carved else blocks
    else:
        start = len(heldout) if carved else 0
        if len(blocks) <= start:
            raise UptrainError(
                f"{where} leaves no training blocks after holding out {len(heldout)}; "
                "lower eval.blocks or data.seq_len, or use more text"
            )
        blocks = blocks.select(range(start, len(blocks)))
    return Corpus(blocks, torch.tensor(heldout, dtype=torch.long), data.seq_len)


def epoch_order(block_count: int, samples: int, seed: int) -> np.ndarray:
    """Block indices for `samples` draws: a fresh seeded permutation for each pass over the data."""
    passes = -(-samples // block_count)
    order = [np.random.default_rng([seed, epoch]).permutation(block_count) for epoch in range(passes)]
    return np.concatenate(order)[:samples]


class OrderedBlocks(Dataset):
    """Blocks read in a fixed order, a batch at a time (one Arrow read per batch)."""

    def __init__(self, blocks: Any, order: np.ndarray) -> None:
        self.blocks = blocks.with_format("numpy")
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self.blocks[self.order[indices]]["input_ids"]
        return {"input_ids": torch.from_numpy(np.asarray(rows, dtype=np.int64))}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class StreamedBlocks(IterableDataset):
    """The first `samples` blocks of a shuffled, repeated stream."""

    def __init__(self, blocks: Any, samples: int, seed: int, buffer: int) -> None:
        self.stream = blocks.shuffle(seed=seed, buffer_size=buffer).repeat(None).take(samples)
        self.samples = samples

    def __len__(self) -> int:
        return self.samples

    def __iter__(self):
        for row in self.stream:
            yield {"input_ids": torch.tensor(row["input_ids"], dtype=torch.long)}


def collate_blocks(batch: Any) -> dict[str, torch.Tensor]:
    """Batches come whole from OrderedBlocks.__getitems__; single rows (streaming) are stacked."""
    if isinstance(batch, dict):
        return batch
    return {"input_ids": torch.stack([row["input_ids"] for row in batch])}


def training_loader(corpus: Corpus, samples: int, batch_size: int, seed: int, buffer: int) -> DataLoader:
    """A DataLoader over exactly `samples` blocks in the seeded order, `batch_size` at a time."""
    if corpus.streaming:
        dataset: Dataset = StreamedBlocks(corpus.blocks, samples, seed, buffer)
    else:
        dataset = OrderedBlocks(corpus.blocks, epoch_order(len(corpus.blocks), samples, seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_blocks,
        drop_last=True,
        generator=_own_generator(),
    )


def _own_generator() -> torch.Generator:
    """A DataLoader's own generator: starting an iteration then draws its base seed from it, not from
    torch's global RNG, which dropout (e.g. train.lora.dropout) draws from; so a resumed run, which starts
    one more iteration than the run it continues, still draws the same dropout masks."""
    return torch.Generator().manual_seed(0)


def heldout_loader(corpus: Corpus, batch_size: int) -> DataLoader:
    blocks = corpus.heldout
    return DataLoader(
        [{"input_ids": row} for row in blocks],
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_blocks,
        generator=_own_generator(),
    )
