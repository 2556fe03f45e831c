"""`train()`: one Accelerate loop on a budget, from one CPU to many GPUs.

Read top to bottom: the prepared model (a checkpoint directory) -> tokenizer -> data -> budget ->
optimizer and schedule -> accelerator.prepare -> resume -> the step loop (steps.py) -> final save.
Launch it plainly, with torchrun, or with `accelerate launch` and a config from configs/accelerate/
(DDP, FSDP2, DeepSpeed): the code is the same. Converting or building the model first is the
pipeline's job (uptrain.pipeline.training.run_training, which `uptrain train` runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from uptrain.checkpoint.dtypes import TORCH_DTYPES
from uptrain.checkpoint.loading import load_tokenizer
from uptrain.checkpoint.provenance import pretraining_tokens
from uptrain.config import UptrainConfig
from uptrain.train.budget import describe_achieved, describe_budget, plan_budget, tokens_per_step
from uptrain.train.builders import (
    freeze_all_but,
    load_teacher,
    make_accelerator,
    make_optimizer,
    make_scheduler,
)
from uptrain.train.checkpoints import TrainerState, load_checkpoint, remove_partial_checkpoints
from uptrain.train.corpus import load_corpus, training_loader
from uptrain.train.final import checkpoint_dtype, save_final
from uptrain.train.heldout import HeldOutEvaluator
from uptrain.train.lora import (
    apply_lora,
    check_lora_plan,
    load_base,
    register_trainable_checkpoints,
    save_lora_final,
)
from uptrain.train.metrics import MetricsLog
from uptrain.train.preflight import TrainingStart
from uptrain.train.prepared import PreparedModel
from uptrain.train.record import training_record
from uptrain.train.run_dir import RunDir, write_config
from uptrain.train.steps import Session, run_steps
from uptrain.train.streamed import StreamPosition, stream_position


@dataclass
class TrainingResult:
    final: Path | None  # None when the run had already finished
    steps: int
    tokens: int
    final_loss: float | None
    eval_loss: float | None


def _resume(
    accelerator: Any, checkpoint: Path | None, loader: Any, position: StreamPosition | None, say: Callable
) -> tuple[TrainerState, Any]:
    """The loop's state, and the loader from the data position: a checkpoint's, or the start."""
    state = TrainerState()
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)  # a stream's position too (stream_position)
        if position is None:  # blocks on disk: skip the order's first batches without reading them
            loader = accelerator.skip_first_batches(loader, state.micro_batches)
        say(f"resumed from {checkpoint} (step {state.step:,}, {state.tokens:,} tokens)")
    if position is not None:
        position.trainer_state = state
    return state, loader


def train(
    cfg: UptrainConfig,
    run: RunDir,
    student: PreparedModel,
    start: TrainingStart,
    console: Console | None = None,
    launcher: str = "uptrain train",
) -> TrainingResult:
    """Uptrain `student` as `cfg` says, writing everything under `run` (checked by check_training)."""
    console = console or Console(soft_wrap=True)  # log lines stay whole, for grep
    accelerator = make_accelerator(cfg, run)
    main = accelerator.is_main_process
    say: Callable[[str], None] = console.print if main else (lambda _: None)
    t = cfg.train

    # 1. tokenizer; only now, with model and tokenizer in hand, does the run write anything
    tokenizer = load_tokenizer(cfg.model.tokenizer or student.path, cfg.model.trust_remote_code)
    check_lora_plan(student.path, cfg, accelerator)  # train.lora against the model's module names
    if main:
        write_config(run, start.config_yaml, launcher)
        remove_partial_checkpoints(run.checkpoints)

    # 2. the data: tokenized and packed into blocks (the main process fills the datasets cache)
    with accelerator.main_process_first():
        corpus = load_corpus(cfg.data, cfg.eval, tokenizer, run.data, t.seed)

    # 3. the budget
    b = cfg.budget
    per_step = tokens_per_step(t.per_device_batch, t.grad_accum, accelerator.num_processes, cfg.data.seq_len)
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

    # 4. model, optimizer, schedule, data order -- one prepare call
    model = load_base(student.path, TORCH_DTYPES[cfg.model.dtype], cfg, accelerator.device)
    if t.gradient_checkpointing:
        # transformers 5 calls gradient checkpointing "activation checkpointing"
        enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
        enable()
        model.config.use_cache = False
    model.train()
    if t.lora is not None:  # peft adapters (lora.py)
        model, line = apply_lora(model, t, t.gradient_checkpointing)
        say(line)
    elif t.trainable:
        trainable = freeze_all_but(model, t.trainable)
        total = sum(p.numel() for p in model.parameters())
        say(f"training {trainable:,} of {total:,} parameters ({', '.join(t.trainable)})")
    if (t.trainable or t.lora is not None) and t.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, budget.steps, accelerator.num_processes)
    loader = training_loader(corpus, samples, t.per_device_batch, t.seed, cfg.data.shuffle_buffer)
    position = stream_position(accelerator, loader.dataset, t.per_device_batch)  # streamed: checkpointed
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if t.lora is not None:  # checkpoints hold only what trains
        register_trainable_checkpoints(accelerator)
    teacher = load_teacher(cfg, student.teacher, accelerator) if cfg.distill.enabled else None
    evaluator = HeldOutEvaluator(corpus, cfg.eval.batch_size or t.per_device_batch, accelerator)

    # 5. resume: weights, optimizer, schedule, RNG, and the data position
    state, loader = _resume(accelerator, start.checkpoint, loader, position, say)
    metrics = MetricsLog(run.metrics, accelerator, resume_step=state.step if start.checkpoint else None)
    if cfg.logging.tensorboard:
        accelerator.init_trackers("tensorboard")
    if state.step == 0:
        record = {"step": 0, "tokens": 0, **evaluator(model)}
        metrics.write(record)
        say(f"before {doing}: held-out loss {record['eval_loss']:.4f} (ppl {record['eval_ppl']:.2f})")

    # 6. the step loop
    session = Session(
        cfg,
        run,
        accelerator,
        model,
        optimizer,
        scheduler,
        loader,
        teacher,
        evaluator,
        metrics,
        budget,
        console,
    )
    run_steps(session, state)

    # 7. the end: held-out loss, the final checkpoint, the budget achieved
    last_eval = {"step": state.step, "tokens": state.tokens, **evaluator(model)}
    metrics.write(last_eval)
    say(f"after {doing}: held-out loss {last_eval['eval_loss']:.4f} (ppl {last_eval['eval_ppl']:.2f})")
    training = training_record(cfg, accelerator, state, original, last_eval, teacher, student, corpus)
    # a model trained from scratch: these tokens are its pre-training, the base of later budgets
    record = dict(student.record)
    if student.from_scratch:
        record["pretraining_tokens"] = state.tokens
    dtype = checkpoint_dtype(student.path)
    if t.lora is not None:  # the adapter to OUTPUT/adapter, merged into plain weights in final/
        trust = cfg.model.trust_remote_code
        args = (tokenizer, run.root, run.final, student.path, record, training, dtype, trust)
        save_lora_final(accelerator, model, *args)
    else:
        save_final(accelerator, model, tokenizer, run.final, student.path, record, training, dtype)
    if cfg.logging.tensorboard:
        accelerator.end_training()
    say(describe_achieved(state.step, state.tokens, original) + f"; final loss {state.last_loss:.4f}")
    say(f"saved {run.final}")
    return TrainingResult(run.final, state.step, state.tokens, state.last_loss, last_eval["eval_loss"])
