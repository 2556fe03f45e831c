"""What the loop is built from: the Accelerator, AdamW, the learning-rate schedule, the teacher."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
from typing import Any

import torch

from uptrain.checkpoint.dtypes import TORCH_DTYPES
from uptrain.checkpoint.loading import load_causal_lm
from uptrain.config import UptrainConfig
from uptrain.errors import UptrainError
from uptrain.train.run_dir import RunDir


def mixed_precision(choice: str) -> str:
    """auto: what `accelerate launch` asked for, else bf16 on a GPU that has it, else no."""
    if choice != "auto":
        return choice
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return os.environ["ACCELERATE_MIXED_PRECISION"]
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def check_choices(cfg: UptrainConfig) -> None:
    """Settings whose valid values live in other libraries, checked before any work starts."""
    from transformers import SchedulerType

    names = [t.value for t in SchedulerType]
    if cfg.optim.scheduler not in names:
        raise UptrainError(f"optim.scheduler {cfg.optim.scheduler!r} is not one of {', '.join(names)}")
    if cfg.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UptrainError(
            "logging.tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install 'uptrain-gqa[tensorboard]'), or set logging.tensorboard=false"
        )


def cpu_only() -> bool:
    """torchrun on a machine without GPUs: Accelerate runs multi-process CPU (gloo) only when told so."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def make_accelerator(cfg: UptrainConfig, run: RunDir) -> Any:
    """One Accelerator; `accelerate launch` configures DDP, FSDP or DeepSpeed through the environment."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    from uptrain.train.fsdp_cpu import enable_fsdp_on_cpu

    precision = mixed_precision(cfg.train.mixed_precision)
    try:
        accelerator = Accelerator(
            cpu=cpu_only(),
            mixed_precision=precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=cfg.train.grad_accum, sync_with_dataloader=False
            ),
            log_with="tensorboard" if cfg.logging.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(run.root), logging_dir=str(run.root)),
            dynamo_backend="inductor" if cfg.train.compile else None,
        )
    except ValueError as exc:  # e.g. fp16 without a GPU
        first = str(exc).strip().splitlines()[0]
        raise UptrainError(f"cannot set up training with mixed precision {precision}: {first}") from None
    if cpu_only():
        enable_fsdp_on_cpu(accelerator)
    return accelerator


def freeze_all_but(model: Any, patterns: list[str]) -> int:
    """Train only the parameters whose names match one of the glob patterns (all when there are none);
    returns how many parameters (elements) stay trainable."""
    if patterns:
        for name, param in model.named_parameters():
            param.requires_grad_(any(fnmatch.fnmatchcase(name, p) for p in patterns))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        names = [name for name, _ in model.named_parameters()]
        example = next((n for n in names if "attn" in n), names[0])
        raise UptrainError(f"train.trainable {patterns} matches no parameter; names look like {example!r}")
    return trainable


def make_optimizer(model: Any, cfg: UptrainConfig) -> torch.optim.Optimizer:
    """AdamW (the fused kernel unless optim.fused is off); no weight decay on biases and norm weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    o = cfg.optim
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=o.fused or None)


def make_scheduler(optimizer: Any, cfg: UptrainConfig, steps: int, processes: int) -> Any:
    """transformers.get_scheduler. Accelerate steps a prepared scheduler once per process per
    optimizer step, so its horizon is counted in steps x processes (as in the Accelerate examples)."""
    from transformers import get_scheduler

    warmup = cfg.optim.warmup_steps if cfg.optim.warmup_steps is not None else round(cfg.optim.warmup * steps)
    return get_scheduler(
        cfg.optim.scheduler,
        optimizer,
        num_warmup_steps=warmup * processes,
        num_training_steps=steps * processes,
    )


def check_teacher(cfg: UptrainConfig) -> None:
    """A local distill.teacher, checked before any work: safetensors weights, no unasked custom code."""
    from pathlib import Path

    from uptrain.checkpoint.loading import check_not_pickled, check_remote_code
    from uptrain.checkpoint.source import read_config

    ref = cfg.distill.teacher
    if ref is None or not Path(ref).expanduser().is_dir():
        return
    try:
        check_not_pickled(ref, allow_pickle=False)
        check_remote_code(read_config(Path(ref).expanduser()), ref, cfg.model.trust_remote_code)
    except UptrainError as exc:
        raise UptrainError(f"distill.teacher: {exc}") from None


def load_teacher(cfg: UptrainConfig, default: str | None, accelerator: Any) -> Any:
    """The frozen teacher, in eval mode, on this process's device. With mixed precision it is held in
    the half dtype (it needs no fp32 master weights); it is not sharded, so it must fit on one device."""
    ref = cfg.distill.teacher or default
    if ref is None:
        raise UptrainError("distill.enabled needs a teacher; set distill.teacher to the original model")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision))
    dtype = half or TORCH_DTYPES[cfg.model.dtype]
    try:
        teacher = load_causal_lm(ref, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
    except UptrainError as exc:
        raise UptrainError(f"distill.teacher: {exc}") from None
    teacher.requires_grad_(False)
    return teacher.to(accelerator.device).eval()
