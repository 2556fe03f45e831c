"""A streamed dataset's training order, and its position in a checkpoint.

The stream (one source, or a data.mix interleaving) is repeated and shuffled a window at a time: a
window of `data.shuffle_buffer` blocks is read whole, then permuted with a generator seeded by
(train.seed, window index), so the order does not depend on anything but the stream, the seed and
the window size. A checkpoint keeps the stream's position after the current window (datasets'
IterableDataset.state_dict(), which also restores a mixture's sampling generator) and the blocks of
that window not yet trained on. A resumed run yields those, then reads on: the same blocks as an
uninterrupted run, and no block trained on is read again.

datasets' own shuffle (IterableDataset.shuffle) is not used: its state_dict restores the position in
the stream but refills the shuffle buffer from there (datasets 5.2, BufferShuffledExamplesIterable),
so the batches after a resume would differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from uptrain.errors import UptrainError

# column -> (n, ...) int32, one row per block (token ids fit: half the memory and checkpoint of int64)
Rows = dict[str, np.ndarray]
# accelerate's file for the first object registered for checkpointing (the only one uptrain registers)
POSITION_FILE = "custom_checkpoint_0.pkl"
# Windows kept after a newer one is read, in blocks: what the loader may have read ahead of training.
READ_AHEAD = 4096


def _length(rows: Rows) -> int:
    return len(next(iter(rows.values()))) if rows else 0


class StreamedBlocks(IterableDataset):
    """The first `samples` blocks of a repeated stream, shuffled in seeded windows of `buffer` blocks."""

    def __init__(self, blocks: Any, samples: int, seed: int, buffer: int) -> None:
        self.stream = blocks.repeat(None)
        self.samples, self.seed, self.buffer = samples, seed, buffer
        self.windows: dict[int, tuple[dict, Rows]] = {}  # index -> (stream state after it, its rows)
        self.resume: dict | None = None  # a checkpoint's position (load_state_dict)

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        given, pending, at = 0, {}, 0
        if self.resume is not None and self.resume["given"]:
            given, pending = self.resume["given"], self.resume["pending"]
            self.stream.load_state_dict(self.resume["stream"])
        window = -(-given // self.buffer)  # the next window to read
        rows = iter(self.stream)
        while given < self.samples:
            if at == _length(pending):
                pending, at = self._read_window(rows, window), 0
                window += 1
            yield {key: torch.as_tensor(column[at]).long() for key, column in pending.items()}
            given, at = given + 1, at + 1

    def _read_window(self, rows: Iterator[dict], window: int) -> Rows:
        size = min(self.buffer, self.samples - window * self.buffer)
        read = [next(rows) for _ in range(size)]
        order = np.random.default_rng([self.seed, window]).permutation(size)
        shuffled = {key: np.asarray([read[i][key] for i in order], dtype=np.int32) for key in read[0]}
        start = window * self.buffer - max(self.buffer, READ_AHEAD)
        self.windows = {k: v for k, v in self.windows.items() if (k + 1) * self.buffer > start}
        self.windows[window] = (self.stream.state_dict(), shuffled)
        return shuffled

    def position(self, given: int) -> dict:
        """The position after the first `given` blocks: the stream's state after the window that holds
        the last of them, and that window's blocks after it (read ahead of training, but kept)."""
        if given == 0:
            return {"given": 0}
        window = (given - 1) // self.buffer
        state, rows = self.windows[window]
        rest = given - window * self.buffer
        return {"given": given, "stream": state, "pending": {key: v[rest:] for key, v in rows.items()}}


class StreamPosition:
    """What a checkpoint keeps of a streamed order (accelerator.register_for_checkpointing): the
    position after the micro-batches the loop has consumed (`trainer_state.micro_batches`). Every
    process keeps the same: the main process reads the stream for all (Accelerate dispatches an
    IterableDataset's batches), so a micro-batch is `per_device_batch x processes` blocks of it."""

    def __init__(self, dataset: StreamedBlocks, blocks_per_micro_batch: int) -> None:
        self.dataset, self.blocks_per_micro_batch = dataset, blocks_per_micro_batch
        self.trainer_state: Any = None  # the loop's TrainerState, set once it is loaded

    def state_dict(self) -> dict:
        return self.dataset.position(self.trainer_state.micro_batches * self.blocks_per_micro_batch)

    def load_state_dict(self, state: dict) -> None:
        self.dataset.resume = state


def stream_position(accelerator: Any, dataset: Any, per_device_batch: int) -> StreamPosition | None:
    """For a streamed order, its position, registered with the accelerator so that every checkpoint
    keeps it and load_state restores it; None for blocks on disk (their order is laid out up front)."""
    if not isinstance(dataset, StreamedBlocks):
        return None
    position = StreamPosition(dataset, per_device_batch * accelerator.num_processes)
    accelerator.register_for_checkpointing(position)
    return position


def check_stream_checkpoint(checkpoint: Path | None, streaming: bool) -> None:
    """A streamed run resumes only from a checkpoint that kept the stream's position."""
    if checkpoint is not None and streaming and not (checkpoint / POSITION_FILE).is_file():
        raise UptrainError(
            f"checkpoint {checkpoint} holds no position in the streamed data (written by an older uptrain); "
            "start afresh with another --output"
        )
