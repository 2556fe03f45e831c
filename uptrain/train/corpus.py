"""The training corpus: text -> packed blocks -> a held-out part and a seeded, resumable order.

Held out: the first `eval.blocks` blocks of the packed training split, or of `eval.split` when
given. Training order: for a dataset on disk, one seeded permutation of the blocks per epoch, laid
out up front for the whole budget, so batch k is the same in every run and a resumed run skips the
first k batches without reading them. A streamed dataset is repeated and shuffled in seeded windows
(streamed.py); a checkpoint keeps its position, so a resumed run reads on from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.config import BUILTIN_PREFIX, DataSection, EvalSection, TextSourceSection
from uptrain.data import TextSource, builtin_text, load_text_dataset
from uptrain.errors import UptrainError
from uptrain.train.heldout_set import HeldOut, heldout_of_blocks, heldout_of_text
from uptrain.train.mixture import SOURCE_COLUMN, mix_blocks, mixture_sources
from uptrain.train.packing import tokenize_and_pack
from uptrain.train.streamed import StreamedBlocks

# load_text_dataset names the flags of `uptrain eval`; a config names its keys.
_FLAG_TO_KEY = (
    ("--dataset-config", "data.config"),
    ("--text-column", "data.text_column"),
    ("--split", "data.split / eval.split"),
    ("--dataset", "data.dataset"),
)


@dataclass
class Corpus:
    blocks: Any  # datasets.Dataset or IterableDataset of {"input_ids"[, "source"]}: the training blocks
    # (n, data.seq_len) int64: the blocks held out of the training text (n = 0 with eval.dataset)
    heldout: torch.Tensor
    heldout_text: HeldOut | None = None  # eval.dataset's tokens and windows
    sources: list[TextSource] = field(default_factory=list)  # data.mix: each source as it was read

    @property
    def streaming(self) -> bool:
        import datasets

        return isinstance(self.blocks, datasets.IterableDataset)

    @property
    def block_count(self) -> int | None:
        return None if self.streaming else len(self.blocks)

    def heldout_set(self) -> HeldOut:
        """What the held-out curve scores: eval.dataset's windows, else each held-out block."""
        return self.heldout_text or heldout_of_blocks(self.heldout, "held-out blocks of the training text")


def text_source(data: TextSourceSection, split: str, data_dir: Path) -> TextSource:
    """The TextSource behind a text source section; a builtin: corpus is written to data_dir first."""
    assert data.dataset is not None  # check_config: data.dataset, each data.mix entry, eval.dataset
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


def check_data_source(data: DataSection, evaluation: EvalSection | None = None) -> None:
    """Fail early on a local dataset file that is not there (Hub ids are checked when loaded)."""
    named = [("data.dataset", data)] if not data.mix else []
    named += [(f"data.mix[{i}].dataset", source) for i, source in enumerate(data.mix)]
    if evaluation is not None and evaluation.dataset is not None:
        named.append(("eval.dataset", evaluation.dataset))
    for key, section in named:
        assert section.dataset is not None  # check_config
        if section.dataset.startswith(BUILTIN_PREFIX):
            continue
        source = text_source(section, section.split, Path("."))
        if source.is_local and not Path(section.dataset).is_file():
            raise UptrainError(f"{key}: {section.dataset} does not exist or is not a file; fix the path")


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


def load_corpus(
    data: DataSection, evaluation: EvalSection, tokenizer: Any, data_dir: Path, seed: int = 0
) -> Corpus:
    """Tokenize, pack and split. Run it on the main process first (it writes the datasets cache).
    `seed` (train.seed) draws a data.mix mixture."""
    if evaluation.split is not None and (data.dataset or "").startswith(BUILTIN_PREFIX):
        raise UptrainError(f"eval.split does not apply to {data.dataset}; remove it (blocks are held out)")

    def packed(section: TextSourceSection, split: str) -> Any:
        source = text_source(section, split, data_dir)
        return tokenize_and_pack(
            _load(source), tokenizer, data.seq_len, source.text_column, data.add_eos, data.num_proc
        )

    if data.mix:
        sources = mixture_sources(data)
        blocks = mix_blocks(sources, lambda s: packed(s, s.split), seed)
        read = [text_source(s, s.split, data_dir) for s in sources]
        where = f"the mixture of {', '.join(r.describe() for r in read)} in {data.seq_len}-token blocks"
        streaming = sources[0].streaming
    else:
        blocks, read = packed(data, data.split), []
        where = f"{text_source(data, data.split, data_dir).describe()} in {data.seq_len}-token blocks"
        streaming = data.streaming
    heldout_text = None
    if evaluation.dataset is not None:
        source = text_source(evaluation.dataset, evaluation.dataset.split, data_dir)
        try:
            heldout_text = heldout_of_text(source, tokenizer, data.seq_len, evaluation.blocks)
        except UptrainError as exc:
            raise UptrainError(f"eval.dataset: {exc}") from None
        heldout: list[list[int]] = []
    else:
        carved_from = blocks if evaluation.split is None else packed(data, evaluation.split)
        heldout = _first_blocks(carved_from, evaluation.blocks)
        if len(heldout) < evaluation.blocks:
            raise UptrainError(
                f"{where} gives {len(heldout)} held-out blocks, fewer than eval.blocks {evaluation.blocks}; "
                "lower eval.blocks or data.seq_len, or use more text"
            )
    carved = evaluation.split is None and evaluation.dataset is None
    if streaming:
        blocks = blocks.skip(len(heldout)) if carved else blocks
    else:
        start = len(heldout) if carved else 0
        if len(blocks) <= start:
            raise UptrainError(
                f"{where} leaves no training blocks after holding out {len(heldout)}; "
                "lower eval.blocks or data.seq_len, or use more text"
            )
        blocks = blocks.select(range(start, len(blocks)))
    ids = torch.tensor(heldout, dtype=torch.long).reshape(len(heldout), data.seq_len)
    return Corpus(blocks, ids, heldout_text, read)


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
        rows = self.blocks[self.order[indices]]
        batch = {"input_ids": torch.from_numpy(np.asarray(rows["input_ids"], dtype=np.int64))}
        if SOURCE_COLUMN in rows:  # data.mix: which source each block came from
            batch[SOURCE_COLUMN] = torch.from_numpy(np.asarray(rows[SOURCE_COLUMN], dtype=np.int64))
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_blocks(batch: Any) -> dict[str, torch.Tensor]:
    """Batches come whole from OrderedBlocks.__getitems__; single rows (streaming) are stacked."""
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([row[key] for row in batch]) for key in batch[0]}


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
