"""`uptrain train`: one Accelerate loop on a budget, from one CPU to many GPUs.

Read top to bottom: output directory -> model (built, converted) -> data -> budget -> optimizer and
schedule -> accelerator.prepare -> resume -> the loop (accumulate, clip, step, log, evaluate,
checkpoint) -> final save. Launch it plainly, with torchrun, or with `accelerate launch` and a
config from configs/accelerate/ (DDP, FSDP, DeepSpeed): the code is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from uptrain.checkpoint.dtypes import TORCH_DTYPES
from uptrain.checkpoint.loading import load_causal_lm, load_tokenizer
from uptrain.checkpoint.provenance import now, pretraining_tokens
from uptrain.config import UptrainConfig, dump_config
from uptrain.errors import UptrainError
from uptrain.pipeline.student import check_student, prepare_student
from uptrain.train.budget import describe_achieved, describe_budget, plan_budget, tokens_per_step
from uptrain.train.builders import (
    check_choices,
    check_teacher,
    freeze_all_but,
    load_teacher,
    make_accelerator,
    make_optimizer,
    make_scheduler,
)
from uptrain.train.checkpoints import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)
from uptrain.train.corpus import check_data_source, load_corpus, training_loader
from uptrain.train.final import checkpoint_dtype, save_final
from uptrain.train.heldout import HeldOutEvaluator
from uptrain.train.interrupt import StopRequest
from uptrain.train.metrics import MetricsLog, PhaseTimer, Throughput, TrainingDisplay
from uptrain.train.objective import objective_name, uptraining_loss
from uptrain.train.run_dir import RunDir, check_run_dir, write_config


@dataclass
class TrainingResult:
    final: Path | None  # None when the run had already finished
    steps: int
    tokens: int
    final_loss: float | None
    eval_loss: float | None


def train(
    cfg: UptrainConfig, output: Path, resume: bool = False, console: Console | None = None
) -> TrainingResult:
    """Uptrain as `cfg` says, writing everything under `output`."""
    threads = torch.get_num_threads()
    if cfg.train.cpu_threads:
        torch.set_num_threads(cfg.train.cpu_threads)
    try:
        return _train(cfg, output, resume, console)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: UptrainConfig, output: Path, resume: bool, console: Console | None) -> TrainingResult:
    console = console or Console(soft_wrap=True)  # log lines stay whole, for grep
    run = RunDir(Path(output).absolute())
    config_yaml = dump_config(cfg)
    accelerator = make_accelerator(cfg, run)
    main = accelerator.is_main_process
    say: Callable[[str], None] = console.print if main else (lambda _: None)

    # 1. the output directory: a fresh run, or the checkpoint to resume from
    if resume and (run.final / "uptrain.json").is_file():
        say(f"{run.final} exists: this run has finished; nothing to do")
        return TrainingResult(None, 0, 0, None, None)
    checkpoint = check_run_dir(run, config_yaml, resume)
    check_data_source(cfg.data)
    check_choices(cfg)
    check_student(cfg.model)
    b, t = cfg.budget, cfg.train
    per_step = tokens_per_step(t.per_device_batch, t.grad_accum, accelerator.num_processes, cfg.data.seq_len)
    if b.max_steps or b.max_tokens is not None or b.pretraining_tokens:  # known before any download
        plan_budget(per_step, b.pretraining_tokens, b.fraction, b.max_tokens, b.max_steps)
    if cfg.distill.enabled:
        check_teacher(cfg)

    # 2. the model: built and converted on the main process first, then loaded everywhere
    from accelerate.utils import set_seed

    set_seed(cfg.train.seed)
    with accelerator.main_process_first():
        student = prepare_student(cfg.model, run, say)
    tokenizer = load_tokenizer(cfg.model.tokenizer or student.path, cfg.model.trust_remote_code)
    if main:  # only now: a run that could not get its model or tokenizer leaves nothing behind
        write_config(run, config_yaml, "uptrain train")
        remove_partial_checkpoints(run.checkpoints)

    # 3. the data: tokenized and packed into blocks (the main process fills the datasets cache)
    with accelerator.main_process_first():
        corpus = load_corpus(cfg.data, cfg.eval, tokenizer, run.data)

    # 4. the budget
    original = None if student.from_scratch else b.pretraining_tokens or pretraining_tokens(student.record)
    budget = plan_budget(per_step, original, b.fraction, b.max_tokens, b.max_steps)
    doing = "pre-training from scratch" if student.from_scratch else "uptraining"
    say(describe_budget(budget, doing))
    samples = budget.steps * t.grad_accum * t.per_device_batch * accelerator.num_processes
    if corpus.block_count is not None:
        say(
            f"data: {corpus.block_count:,} blocks of {cfg.data.seq_len} tokens "
            f"({samples / corpus.block_count:.2f} epochs), {len(corpus.heldout)} held out"
        )

    # 5. model, optimizer, schedule, data order -- one prepare call
    model = load_causal_lm(
        student.path, dtype=TORCH_DTYPES[cfg.model.dtype], trust_remote_code=cfg.model.trust_remote_code
    )
    if t.gradient_checkpointing:
        # transformers 5 calls gradient checkpointing "activation checkpointing"
        enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
        enable()
        model.config.use_cache = False
    model.train()
    trainable = freeze_all_but(model, t.trainable)
    if t.trainable:
        total = sum(p.numel() for p in model.parameters())
        say(f"training {trainable:,} of {total:,} parameters ({', '.join(t.trainable)})")
        if t.gradient_checkpointing:  # checkpointed layers need an input that requires grad
            model.enable_input_require_grads()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, budget.steps, accelerator.num_processes)
    loader = training_loader(corpus, samples, t.per_device_batch, t.seed, cfg.data.shuffle_buffer)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    teacher = load_teacher(cfg, student.teacher, accelerator) if cfg.distill.enabled else None
    evaluator = HeldOutEvaluator(corpus, cfg.eval.batch_size or t.per_device_batch, accelerator)

    # 6. resume: weights, optimizer, schedule, RNG, and the data position
    state = TrainerState()
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        loader = accelerator.skip_first_batches(loader, state.micro_batches)
        say(f"resumed from {checkpoint} (step {state.step:,}, {state.tokens:,} tokens)")
    metrics = MetricsLog(run.metrics, accelerator, resume_step=state.step if checkpoint else None)
    if cfg.logging.tensorboard:
        accelerator.init_trackers("tensorboard")
    if state.step == 0:
        record = {"step": 0, "tokens": 0, **evaluator(model)}
        metrics.write(record)
        say(f"before {doing}: held-out loss {record['eval_loss']:.4f} (ppl {record['eval_ppl']:.2f})")

    # 7. the loop
    started = time.perf_counter()
    speed = Throughput()
    window: list[torch.Tensor] = []
    extra: dict[str, list[torch.Tensor]] = {"ce": [], "kl": []}
    grad_norm = None
    last_eval: dict[str, float] = {}
    timer, logged_at = PhaseTimer(), state.step
    with StopRequest() as stop, TrainingDisplay(console, budget.steps, state.step, main) as display:
        for batch in loader:
            timer.lap("data")
            with accelerator.accumulate(model):
                parts = uptraining_loss(
                    model, batch["input_ids"], teacher, cfg.distill.weight, cfg.distill.temperature
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
            speed.add(budget.tokens_per_step)
            loss = accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
            window.clear()
            if not math.isfinite(loss):
                last = latest_checkpoint(run.checkpoints)
                where = (
                    f"the last good checkpoint is {last}; rerun with --resume"
                    if last
                    else "no checkpoint yet"
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
                last_eval = {"step": state.step, "tokens": state.tokens, **evaluator(model)}
                metrics.write(last_eval)
                display.log(last_eval)
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

    # 8. the end: held-out loss, the final checkpoint, the budget achieved
    last_eval = {"step": state.step, "tokens": state.tokens, **evaluator(model)}
    metrics.write(last_eval)
    say(f"after {doing}: held-out loss {last_eval['eval_loss']:.4f} (ppl {last_eval['eval_ppl']:.2f})")
    training = {
        "finished": now(),
        "steps": state.step,
        "tokens_seen": state.tokens,
        "pretraining_tokens": original,
        "fraction_of_pretraining": state.tokens / original if original else None,
        "final_loss": state.last_loss,
        "heldout_loss": last_eval["eval_loss"],
        "seq_len": cfg.data.seq_len,
        "global_batch": t.per_device_batch * t.grad_accum * accelerator.num_processes,
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "dataset": {"id": cfg.data.dataset, "config": cfg.data.config, "split": cfg.data.split},
        "objective": objective_name(cfg.distill if teacher else None),
        "from_scratch": student.from_scratch,
        "optim": {"lr": cfg.optim.lr, "scheduler": cfg.optim.scheduler},
        "distill": {"weight": cfg.distill.weight, "temperature": cfg.distill.temperature}
        if teacher
        else None,
    }
    # a model trained from scratch: these tokens are its pre-training, the base of later budgets
    record = dict(student.record)
    if student.from_scratch:
        record["pretraining_tokens"] = state.tokens
    save_final(
        accelerator,
        model,
        tokenizer,
        run.final,
        student.path,
        record,
        training,
        checkpoint_dtype(student.path),
    )
    if cfg.logging.tensorboard:
        accelerator.end_training()
    say(describe_achieved(state.step, state.tokens, original) + f"; final loss {state.last_loss:.4f}")
    say(f"saved {run.final}")
    return TrainingResult(run.final, state.step, state.tokens, state.last_loss, last_eval["eval_loss"])


def _save(accelerator: Any, run: RunDir, state: TrainerState, started: float, keep_last: int) -> Path:
    snapshot = TrainerState(**vars(state))
    snapshot.elapsed_s = state.elapsed_s + time.perf_counter() - started
    return save_checkpoint(accelerator, run.checkpoints, snapshot, keep_last)
