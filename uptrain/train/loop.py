"""`train()`: one Accelerate loop on a budget, from one CPU to many GPUs.

Read top to bottom: the prepared model (a checkpoint directory) -> tokenizer -> data -> budget (a
Setup) -> optimizer and schedule -> accelerator.prepare -> resume (a Session: session.py names the
run's state) -> the step loop (steps.py) -> final save.
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
from uptrain.train.budget import describe_achieved, describe_budget, plan_budget
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
from uptrain.train.session import Session, Setup
from uptrain.train.steps import run_steps
from uptrain.train.streamed import StreamPosition, stream_position


@dataclass
class TrainingResult:
    final: Path | None  # None when the run had already finished
    steps: int
    tokens: int
    final_loss: float | None
    eval_loss: float | None


def train(
    cfg: UptrainConfig,
    run: RunDir,
    student: PreparedModel,
    start: TrainingStart,
    console: Console | None = None,
    launcher: str = "uptrain train",
) -> TrainingResult:
    """Uptrain `student` as `cfg` says, writing everything under `run` (checked by check_training)."""
    setup = _set_up(cfg, run, student, start, console or Console(soft_wrap=True), launcher)
    s = _prepare(setup)
    if s.state.step == 0:
        record = s.evaluate()
        s.say(f"before {s.doing}: held-out loss {record['eval_loss']:.4f} (ppl {record['eval_ppl']:.2f})")
    run_steps(s)
    return _finish(s)


def _set_up(
    cfg: UptrainConfig,
    run: RunDir,
    student: PreparedModel,
    start: TrainingStart,
    console: Console,
    launcher: str,
) -> Setup:
    """The tokenizer (only now, with model and tokenizer in hand, does the run write anything), the
    data tokenized and packed into blocks, and the budget. `console`: log lines stay whole, for grep."""
    accelerator = make_accelerator(cfg, run)
    tokenizer = load_tokenizer(cfg.model.tokenizer or student.path, cfg.model.trust_remote_code)
    check_lora_plan(student.path, cfg, accelerator)  # train.lora against the model's module names
    if accelerator.is_main_process:
        write_config(run, start.config_yaml, launcher)
        remove_partial_checkpoints(run.checkpoints)
    with accelerator.main_process_first():  # the main process fills the datasets cache
        corpus = load_corpus(cfg.data, cfg.eval, tokenizer, run.data, cfg.train.seed)
    b = cfg.budget
    original = None if student.from_scratch else b.pretraining_tokens or pretraining_tokens(student.record)
    per_step = cfg.tokens_per_step(accelerator.num_processes)
    budget = plan_budget(per_step, original, b.fraction, b.max_tokens, b.max_steps)
    setup = Setup(
        cfg=cfg,
        run=run,
        console=console,
        student=student,
        start=start,
        accelerator=accelerator,
        tokenizer=tokenizer,
        corpus=corpus,
        budget=budget,
    )
    setup.say(describe_budget(budget, setup.doing))
    if corpus.block_count is not None:
        setup.say(
            f"data: {corpus.block_count:,} blocks of {cfg.data.seq_len} tokens "
            f"({setup.blocks / corpus.block_count:.2f} epochs), {len(corpus.heldout)} held out"
        )
    return setup


def _model(setup: Setup) -> Any:
    """The model to train, in train mode, with gradient checkpointing, LoRA adapters or frozen
    parameters as train says."""
    cfg, t = setup.cfg, setup.cfg.train
    model = load_base(setup.student.path, TORCH_DTYPES[cfg.model.dtype], cfg, setup.accelerator.device)
    if t.gradient_checkpointing:
        # transformers 5 calls gradient checkpointing "activation checkpointing"
        enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
        enable()
        model.config.use_cache = False
    model.train()
    if t.lora is not None:  # peft adapters (lora.py)
        model, line = apply_lora(model, t, t.gradient_checkpointing)
        setup.say(line)
    elif t.trainable:
        trainable = freeze_all_but(model, t.trainable)
        total = sum(p.numel() for p in model.parameters())
        setup.say(f"training {trainable:,} of {total:,} parameters ({', '.join(t.trainable)})")
    if (t.trainable or t.lora is not None) and t.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
    return model


def _prepare(setup: Setup) -> Session:
    """Model, optimizer, schedule and data order through one accelerator.prepare call; the teacher and
    the held-out evaluator; then the resume: weights, optimizer, schedule, RNG and the data position."""
    cfg, t, accelerator = setup.cfg, setup.cfg.train, setup.accelerator
    model = _model(setup)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, setup.budget.steps, accelerator.num_processes)
    loader = training_loader(setup.corpus, setup.blocks, t.per_device_batch, t.seed, cfg.data.shuffle_buffer)
    position = stream_position(accelerator, loader.dataset, t.per_device_batch)  # streamed: checkpointed
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if t.lora is not None:  # checkpoints hold only what trains
        register_trainable_checkpoints(accelerator)
    teacher = load_teacher(cfg, setup.student.teacher, accelerator) if cfg.distill.enabled else None
    evaluator = HeldOutEvaluator(setup.corpus, cfg.eval.batch_size or t.per_device_batch, accelerator)
    checkpoint = setup.start.checkpoint
    state, loader = _resume(accelerator, checkpoint, loader, position, setup.say)
    metrics = MetricsLog(setup.run.metrics, accelerator, resume_step=state.step if checkpoint else None)
    if cfg.logging.tensorboard:
        accelerator.init_trackers("tensorboard")
    prepared = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loader": loader}
    return Session(
        **vars(setup), **prepared, teacher=teacher, evaluator=evaluator, metrics=metrics, state=state
    )


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


def _finish(s: Session) -> TrainingResult:
    """The end: the held-out loss, the final checkpoint, the budget achieved."""
    state, original = s.state, s.budget.pretraining_tokens
    last_eval = s.evaluate()
    s.say(f"after {s.doing}: held-out loss {last_eval['eval_loss']:.4f} (ppl {last_eval['eval_ppl']:.2f})")
    training = training_record(
        s.cfg, s.accelerator, state, original, last_eval, s.teacher, s.student, s.corpus
    )
    _save_final(s, training)
    if s.cfg.logging.tensorboard:
        s.accelerator.end_training()
    s.say(describe_achieved(state.step, state.tokens, original) + f"; final loss {state.last_loss:.4f}")
    s.say(f"saved {s.run.final}")
    return TrainingResult(s.run.final, state.step, state.tokens, state.last_loss, last_eval["eval_loss"])


def _save_final(s: Session, training: dict[str, Any]) -> None:
    """final/: the student's record plus `training`; with train.lora, the adapter to OUTPUT/adapter and
    the merged weights to final/."""
    record = dict(s.student.record)
    if s.student.from_scratch:  # these tokens are its pre-training, the base of later budgets
        record["pretraining_tokens"] = s.state.tokens
    dtype, student = checkpoint_dtype(s.student.path), s.student.path
    if s.cfg.train.lora is not None:
        trust = s.cfg.model.trust_remote_code
        args = (s.tokenizer, s.run.root, s.run.final, student, record, training, dtype, trust)
        save_lora_final(s.accelerator, s.model, *args)
    else:
        save_final(s.accelerator, s.model, s.tokenizer, s.run.final, student, record, training, dtype)
