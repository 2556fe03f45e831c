"""The step loop: accumulate, clip, step, log, evaluate, checkpoint, stop on request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uptrain.errors import UptrainError
from uptrain.train.checkpoints import TrainerState, latest_checkpoint, save_checkpoint
from uptrain.train.interrupt import StopRequest
from uptrain.train.metrics import PhaseTimer, Throughput, TrainingDisplay, peak_memory
from uptrain.train.mixture import DrawnBlocks
from uptrain.train.objective import uptraining_loss
from uptrain.train.session import Session


@dataclass
class Running:
    """What the loop keeps while it runs, beside the checkpointed TrainerState: its clocks, the losses
    of the optimizer step under way, and what the next log line reports."""

    drawn: DrawnBlocks  # data.mix: the blocks drawn from each source
    logged_at: int  # the step of the last log line
    started: float = field(default_factory=time.perf_counter)
    speed: Throughput = field(default_factory=Throughput)
    timer: PhaseTimer = field(default_factory=PhaseTimer)
    losses: list[torch.Tensor] = field(default_factory=list)  # this optimizer step's micro-batches
    parts: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {"ce": [], "kl": []})  # distill
    grad_norm: Any = None  # at the last clipping


def run_steps(s: Session) -> None:
    """Train from `s.state` to the end of the budget (or to a stop request, which checkpoints and
    raises), updating `s.state` in place."""
    running = Running(DrawnBlocks(s.accelerator, s.state, len(s.cfg.data.mix)), logged_at=s.state.step)
    with StopRequest() as stop, TrainingDisplay(s.console, s.budget.steps, s.state.step, s.main) as display:
        for batch in running.drawn.counted(s.loader):
            running.timer.lap("data")
            _micro_step(s, running, batch)
            if s.accelerator.sync_gradients:  # one optimizer step done
                loss = _count_step(s, running)
                display.step(s.state.step, loss, running.speed.rate(reset=False))
                _log(s, running, display, loss)
                _evaluate(s, display)
                _checkpoint(s, running, stop)
            running.timer.lap("other")


def _micro_step(s: Session, running: Running, batch: dict[str, torch.Tensor]) -> None:
    """Forward and backward on one micro-batch; at the end of an accumulation, clip and step."""
    cfg, accelerator, timer = s.cfg, s.accelerator, running.timer
    with accelerator.accumulate(s.model):
        parts = uptraining_loss(
            s.model, batch["input_ids"], s.teacher, cfg.distill.weight, cfg.distill.temperature
        )
        timer.lap("forward")
        accelerator.backward(parts.loss)
        timer.lap("backward")
        if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
            running.grad_norm = accelerator.clip_grad_norm_(s.model.parameters(), cfg.optim.max_grad_norm)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
    timer.lap("optimizer")
    running.losses.append(parts.loss.detach())
    if parts.kl is not None:
        running.parts["ce"].append(parts.ce)
        running.parts["kl"].append(parts.kl)
    s.state.micro_batches += 1


def _count_step(s: Session, running: Running) -> float:
    """Count the optimizer step just taken; its loss, the mean over the processes. A loss that is not
    finite stops the run."""
    state, per_step = s.state, s.budget.tokens_per_step
    state.step += 1
    state.tokens += per_step
    running.drawn.step()
    running.speed.add(per_step)
    loss = s.accelerator.reduce(torch.stack(running.losses).mean(), reduction="mean").item()
    running.losses.clear()
    if not math.isfinite(loss):
        last = latest_checkpoint(s.run.checkpoints)
        where = f"the last good checkpoint is {last}; rerun with --resume" if last else "no checkpoint"
        raise UptrainError(
            f"the loss became {loss} at step {state.step}; stopped ({where}, perhaps with a lower optim.lr)"
        )
    state.last_loss = loss
    return loss


def _log(s: Session, running: Running, display: TrainingDisplay, loss: float) -> None:
    """Every logging.every_steps steps, and at the last: a metrics record and a line on the display."""
    state = s.state
    if state.step % s.cfg.logging.every_steps and state.step != s.budget.steps:
        return
    record = {
        "step": state.step,
        "tokens": state.tokens,
        "loss": loss,
        "lr": s.scheduler.get_last_lr()[0],
        "grad_norm": float(running.grad_norm) if running.grad_norm is not None else None,
        "tokens_per_s": running.speed.rate(),
        "elapsed_s": state.elapsed_s + time.perf_counter() - running.started,
        **running.timer.per_step(state.step - running.logged_at),
        **peak_memory(),
    }
    running.logged_at = state.step
    for key, values in running.parts.items():
        if values:
            record[key] = s.accelerator.reduce(torch.stack(values).mean(), reduction="mean").item()
            values.clear()
    s.metrics.write(record)
    display.log(record)


def _evaluate(s: Session, display: TrainingDisplay) -> None:
    """Every eval.every_steps steps before the last (train() evaluates after the last)."""
    every = s.cfg.eval.every_steps
    if every and s.state.step % every == 0 and s.state.step < s.budget.steps:
        display.log(s.evaluate())


def _checkpoint(s: Session, running: Running, stop: StopRequest) -> None:
    """Every checkpoint.every_steps steps before the last, and at a stop request that every process
    agrees on, which then ends the run."""
    stopping = stop.agreed(s.accelerator)
    every, step = s.cfg.checkpoint.every_steps, s.state.step
    if not ((every and step % every == 0 and step < s.budget.steps) or stopping):
        return
    saved = _save(s, running.started)
    if stopping:
        raise UptrainError(
            f"interrupted at step {step:,}; saved {saved}; rerun with --resume to continue", exit_code=130
        )


def _save(s: Session, started: float) -> Path:
    snapshot = TrainerState(**vars(s.state))
    snapshot.elapsed_s = s.state.elapsed_s + time.perf_counter() - started
    return save_checkpoint(s.accelerator, s.run.checkpoints, snapshot, s.cfg.checkpoint.keep_last)
