"""The `training` section of uptrain.json: what was trained, on what, how far."""

from __future__ import annotations

from typing import Any

from uptrain.checkpoint.provenance import now
from uptrain.config import UptrainConfig
from uptrain.config.schema import to_plain
from uptrain.train.checkpoints import TrainerState
from uptrain.train.lora import lora_summary
from uptrain.train.objective import objective_name
from uptrain.train.prepared import PreparedModel


def training_record(
    cfg: UptrainConfig,
    accelerator: Any,
    state: TrainerState,
    original: int | None,
    heldout_loss: float,
    teacher: Any,
    student: PreparedModel,
) -> dict[str, Any]:
    t = cfg.train
    return {
        "finished": now(),
        "steps": state.step,
        "tokens_seen": state.tokens,
        "pretraining_tokens": original,
        "fraction_of_pretraining": state.tokens / original if original else None,
        "final_loss": state.last_loss,
        "heldout_loss": heldout_loss,
        "seq_len": cfg.data.seq_len,
        "global_batch": t.per_device_batch * t.grad_accum * accelerator.num_processes,
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "dataset": {"id": cfg.data.dataset, "config": cfg.data.config, "split": cfg.data.split},
        "objective": objective_name(cfg.distill if teacher else None),
        "from_scratch": student.from_scratch,
        "lora": lora_summary(t.lora),
        "optim": {"lr": cfg.optim.lr, "scheduler": cfg.optim.scheduler},
        "distill": {"weight": cfg.distill.weight, "temperature": cfg.distill.temperature}
        if teacher
        else None,
        "config": to_plain(cfg),  # the whole resolved config: the card's Reproduce section
    }
