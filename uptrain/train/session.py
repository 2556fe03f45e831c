"""A training run's state, by name. train() (loop.py) builds it in two steps: a Setup (what is known
before the model loads: the accelerator, tokenizer, corpus and budget), then a Session (the model,
optimizer, schedule and data order as accelerator.prepare returns them, the teacher, the evaluator, the
metrics log and the loop's position), which the step loop (steps.py) works on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from uptrain.config import UptrainConfig
from uptrain.train.budget import Budget
from uptrain.train.checkpoints import TrainerState
from uptrain.train.corpus import Corpus
from uptrain.train.heldout import HeldOutEvaluator
from uptrain.train.metrics import MetricsLog
from uptrain.train.preflight import TrainingStart
from uptrain.train.prepared import PreparedModel
from uptrain.train.run_dir import RunDir


@dataclass
class Setup:
    cfg: UptrainConfig
    run: RunDir
    console: Console
    student: PreparedModel
    start: TrainingStart  # the resolved config and the checkpoint to resume from (check_training)
    accelerator: Any
    tokenizer: Any
    corpus: Corpus
    budget: Budget  # its pretraining_tokens: the source's (None: trained from scratch, or unknown)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def blocks(self) -> int:
        """Blocks the budget trains on: its steps x the global batch."""
        return self.budget.steps * self.cfg.train.global_batch(self.accelerator.num_processes)

    @property
    def doing(self) -> str:
        return "pre-training from scratch" if self.student.from_scratch else "uptraining"

    def say(self, text: str) -> None:
        """A line on the console, from the main process only."""
        if self.main:
            self.console.print(text)


@dataclass
class Session(Setup):
    model: Any  # model, optimizer, scheduler and loader: as accelerator.prepare returned them
    optimizer: Any
    scheduler: Any
    loader: Any
    teacher: Any  # distillation's frozen teacher; None without distillation
    evaluator: HeldOutEvaluator
    metrics: MetricsLog
    state: TrainerState  # where the loop is: updated in place, step by step

    def evaluate(self) -> dict[str, Any]:
        """The held-out loss now, written to the metrics log: {"step", "tokens", "eval_loss", ...}."""
        record = {"step": self.state.step, "tokens": self.state.tokens, **self.evaluator(self.model)}
        self.metrics.write(record)
        return record
