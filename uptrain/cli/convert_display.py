"""What `uptrain convert` shows while it works: on a terminal, a progress bar (layers calibrated,
then bytes and tensors written, throughput, time left); otherwise (a log file, CI), one line per
calibrated layer and one per finished output shard."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from uptrain.units import format_bytes, format_duration

if TYPE_CHECKING:
    from uptrain.convert.stream import StreamProgress


class ConversionDisplay:
    def __init__(self, console: Console) -> None:
        self.terminal = console.is_terminal
        self.err = Console(stderr=True, soft_wrap=True)  # a log line stays whole, for grep
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[tensors]}"),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=not self.terminal,
        )
        self.task: Any = None
        self.writing: float | None = None  # when the first tensor was written
        self.layer_clock: tuple[float, int] | None = None  # when the calibration pass began, at which layer

    def __enter__(self) -> ConversionDisplay:
        self.bar.__enter__()
        self.task = self.bar.add_task("converting", total=None, tensors="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def calibration(self, done: int, total: int) -> None:
        """Layer `done` of `total` is calibrated and converted (done 0, or the layer a resumed run
        starts after: the pass begins)."""
        now = time.perf_counter()
        if self.layer_clock is None:  # the first call: the pass starts, fresh or resumed
            self.layer_clock = (now, done)
            if done:
                self.err.print(f"resuming the calibrated conversion after layer {done} of {total}")
            self.bar.update(
                self.task, description="calibrating", completed=done, total=total, tensors="layers"
            )
            return
        self.bar.update(
            self.task, description="calibrating", completed=done, total=total, tensors=f"layer {done}/{total}"
        )
        if not self.terminal:
            start, first = self.layer_clock
            per_layer = (now - start) / max(1, done - first)
            self.err.print(
                f"calibrated layer {done}/{total} ({per_layer:.1f} s a layer, about "
                f"{format_duration(per_layer * (total - done))} left)"
            )

    def tensors(self, p: StreamProgress) -> None:
        if self.writing is None:  # the first write: time and rate from here (calibration may precede it)
            self.writing = time.perf_counter()
            self.bar.reset(self.task, description="converting", total=p.bytes_total)
        seconds = time.perf_counter() - self.writing
        rate = format_bytes(p.bytes / seconds if seconds > 0 else 0.0)
        done = f"{format_bytes(p.bytes)} of {format_bytes(p.bytes_total)} ({rate}/s)"
        self.bar.update(
            self.task, completed=p.bytes, tensors=f"{done}, {p.tensors}/{p.tensors_total} tensors"
        )
        if p.shard_done and not self.terminal:
            self.err.print(f"wrote {p.shard_done}: {p.tensors}/{p.tensors_total} tensors, {done}")
