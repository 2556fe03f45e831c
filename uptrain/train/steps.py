"""The step loop: accumulate, clip, step, log, evaluate, checkpoint, stop on request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from uptrain.config import UptrainConfig
from uptrain.errors import UptrainError
from uptrain.train.budget import Budget
from uptrain.train.checkpoints import TrainerState, latest_checkpoint, save_checkpoint
from uptrain.train.heldout import HeldOutEvaluator
from uptrain.train.interrupt import StopRequest
from uptrain.train.metrics import MetricsLog, PhaseTimer, Throughput, TrainingDisplay, peak_memory
from uptrain.train.mixture import DrawnBlocks
from uptrain.train.objective import uptraining_loss
from uptrain.train.run_dir import RunDir


@dataclass
class Session:
    """What the step loop works on, after accelerator.prepare."""

    cfg: UptrainConfig
    run: RunDir
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    teacher: Any
    evaluator: HeldOutEvaluator
    metrics: MetricsLog
    budget: Budget
    console: Console


def run_steps(s: Session, state: TrainerState) -> None:
    """Train from `state` to the end of the budget (or to a stop request, which checkpoints and
    raises), updating `state` in place."""
    cfg, accelerator, model, budget, run = s.cfg, s.accelerator, s.model, s.budget, s.run
    optimizer, scheduler, evaluator, metrics = s.optimizer, s.scheduler, s.evaluator, s.metrics
    main = accelerator.is_main_process
    started = time.perf_counter()
    speed = Throughput()
    window: list[torch.Tensor] = []
    extra: dict[str, list[torch.Tensor]] = {"ce": [], "kl": []}
    grad_norm = None
    timer, logged_at, drawn = PhaseTimer(), state.step, DrawnBlocks(accelerator, state, len(cfg.data.mix))
    with StopRequest() as stop, TrainingDisplay(s.console, budget.steps, state.step, main) as display:
        for batch in drawn.counted(s.loader):
            timer.lap("data")
            with accelerator.accumulate(model):
                parts = uptraining_loss(
                    model, batch["input_ids"], s.teacher, cfg.distill.weight, cfg.distill.temperature
                )
                timer.lap("forward")
                accelerator.backward(parts.loss)
                timer.lap("backward")
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            timer.lap("optimizer")
            window.append(parts.loss.detach())
            if parts.kl is not None:
                extra["ce"].append(parts.ce)
                extra["kl"].append(parts.kl)
            state.micro_batches += 1
            if not accelerator.sync_gradients:
                timer.lap("other")
                continue

            # one optimizer step done
            state.step += 1
            state.tokens += budget.tokens_per_step
            drawn.step()
            speed.add(budget.tokens_per_step)
            loss = accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
            window.clear()
            if not math.isfinite(loss):
                last = latest_checkpoint(run.checkpoints)
                where = (
                    f"the last good checkpoint is {last}; rerun with --resume" if last else "no checkpoint"
                )
                raise UptrainError(
                    f"the loss became {loss} at step {state.step}; stopped "
                    f"({where}, perhaps with a lower optim.lr)"
                )
            state.last_loss = loss
            display.step(state.step, loss, speed.rate(reset=False))
            if state.step % cfg.logging.every_steps == 0 or state.step == budget.steps:
                record = {
                    "step": state.step,
                    "tokens": state.tokens,
                    "loss": loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": speed.rate(),
                    "elapsed_s": state.elapsed_s + time.perf_counter() - started,
                    **timer.per_step(state.step - logged_at),
                    **peak_memory(),
                }
                logged_at = state.step
                for key, values in extra.items():
                    if values:
                        record[key] = accelerator.reduce(torch.stack(values).mean(), reduction="mean").item()
                        values.clear()
                metrics.write(record)
                display.log(record)
            every = cfg.eval.every_steps
            if every and state.step % every == 0 and state.step < budget.steps:
                heldout = {"step": state.step, "tokens": state.tokens, **evaluator(model)}
                metrics.write(heldout)
                display.log(heldout)
            stopping = stop.agreed(accelerator)
            every = cfg.checkpoint.every_steps
            if (every and state.step % every == 0 and state.step < budget.steps) or stopping:
                saved = _save(accelerator, run, state, started, cfg.checkpoint.keep_last)
                if stopping:
                    raise UptrainError(
                        f"interrupted at step {state.step:,}; saved {saved}; rerun with --resume to continue",
                        exit_code=130,
                    )
            timer.lap("other")


def _save(accelerator: Any, run: RunDir, state: TrainerState, started: float, keep_last: int) -> Path:
    snapshot = TrainerState(**vars(state))
    snapshot.elapsed_s = state.elapsed_s + time.perf_counter() - started
    return save_checkpoint(accelerator, run.checkpoints, snapshot, keep_last)
