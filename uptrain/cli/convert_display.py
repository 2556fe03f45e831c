"""What `uptrain convert` shows while it works: on a terminal, a progress bar (bytes and tensors
written, throughput, time left); otherwise (a log file, CI), one line per finished output shard."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from uptrain.units import format_bytes

if TYPE_CHECKING:
    from uptrain.convert.stream import StreamProgress


class ConversionDisplay:
    def __init__(self, console: Console) -> None:
        self.terminal = console.is_terminal
        self.err = Console(stderr=True, soft_wrap=True)  # a log line stays whole, for grep
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[tensors]}"),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=not self.terminal,
        )
        self.task: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> ConversionDisplay:
        self.bar.__enter__()
        self.task = self.bar.add_task("converting", total=None, tensors="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def calibration(self, done: int, total: int) -> None:
        self.bar.update(self.task, description="calibrating", completed=done, total=total, tensors="batches")

    def tensors(self, p: StreamProgress) -> None:
        label = f"{p.tensors}/{p.tensors_total} tensors"
        self.bar.update(
            self.task, description="converting", completed=p.bytes, total=p.bytes_total, tensors=label
        )
        if p.shard_done and not self.terminal:
            seconds = time.perf_counter() - self.started
            rate = p.bytes / seconds if seconds > 0 else 0.0
            self.err.print(
                f"wrote {p.shard_done}: {p.tensors}/{p.tensors_total} tensors, "
                f"{format_bytes(p.bytes)} of {format_bytes(p.bytes_total)} ({format_bytes(rate)}/s)"
            )
