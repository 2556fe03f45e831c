"""What a run reports: metrics.jsonl (always), TensorBoard through Accelerate (optional), the console.

metrics.jsonl holds one JSON object per line: training records carry "loss" and eval records
"eval_loss", both with "step" and "tokens". A resumed run first drops the records after its
checkpoint, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from uptrain.checkpoint.atomic import atomic_write_text


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends records to metrics.jsonl (main process only) and forwards them to Accelerate trackers."""

    def __init__(self, path: Path, accelerator: Any, resume_step: int | None = None) -> None:
        self.path, self.accelerator = path, accelerator
        self.enabled = accelerator.is_main_process
        if self.enabled and path.exists():
            kept = [
                r for r in read_metrics(path) if resume_step is not None and r.get("step", 0) <= resume_step
            ]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.trackers:
            self.accelerator.log(numbers, step=record["step"])


class TrainingDisplay:
    """A progress bar (loss, tokens/s, ETA) on a terminal; a line per log interval otherwise."""

    def __init__(self, console: Console, total_steps: int, done_steps: int, enabled: bool) -> None:
        self.console, self.enabled = console, enabled
        self.bar: Progress | None = None
        if enabled and console.is_terminal:
            self.bar = Progress(
                TextColumn("uptraining"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task(
                "train", total=total_steps, completed=done_steps, loss="-", speed="-"
            )
        self.total = total_steps

    def __enter__(self) -> TrainingDisplay:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def step(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled or self.bar is not None and "eval_loss" not in record:
            return
        if "eval_loss" in record:
            text = (
                f"step {record['step']:,}: held-out loss {record['eval_loss']:.4f} "
                f"(ppl {record['eval_ppl']:.2f})"
            )
        else:
            text = (
                f"step {record['step']:,}/{self.total:,}: loss {record['loss']:.4f}  lr {record['lr']:.3g}  "
                f"{record['tokens_per_s']:,.0f} tok/s"
            )
        self.console.print(text)


class Throughput:
    """Tokens per second over the last logging interval."""

    def __init__(self) -> None:
        self.since, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def rate(self, reset: bool = True) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.since, 1e-9)
        if reset:
            self.since, self.tokens = now, 0
        return rate


class PhaseTimer:
    """Wall time per phase of a step (data, forward, backward, optimizer, other), host-side: on a GPU,
    asynchronous kernels are counted where the host next waits for them (often "other", at loss.item())."""

    PHASES = ("data", "forward", "backward", "optimizer", "other")

    def __init__(self) -> None:
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.totals[phase] += now - self.last
        self.last = now

    def per_step(self, steps: int) -> dict[str, float]:
        """Mean seconds per optimizer step over the last interval; starts a new interval."""
        means = {f"time_{k}_s": v / max(steps, 1) for k, v in self.totals.items()}
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        return means


def peak_memory() -> dict[str, int]:
    """{"peak_memory_bytes": the most GPU memory torch has allocated so far} on CUDA; {} elsewhere."""
    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated())}
