"""The `training` section of uptrain.json: what was trained, on what, how far."""

from __future__ import annotations

from typing import Any

from uptrain.checkpoint.provenance import now
from uptrain.config import UptrainConfig
from uptrain.config.schema import to_plain
from uptrain.train.checkpoints import TrainerState
from uptrain.train.corpus import Corpus
from uptrain.train.lora import lora_summary
from uptrain.train.mixture import mixture_record
from uptrain.train.objective import objective_name
from uptrain.train.prepared import PreparedModel


def training_record(
    cfg: UptrainConfig,
    accelerator: Any,
    state: TrainerState,
    original: int | None,
    heldout: dict[str, Any],
    teacher: Any,
    student: PreparedModel,
    corpus: Corpus,
) -> dict[str, Any]:
    """`heldout` is the last held-out evaluation ({"eval_loss", "eval_tokens", ...})."""
    t = cfg.train
    if cfg.data.mix:
        drawn = state.source_blocks or [0] * len(cfg.data.mix)
        data: dict[str, Any] = {
            "datasets": mixture_record(cfg.data.mix, corpus.sources, drawn, cfg.data.seq_len)
        }
    else:
        data = {"dataset": {"id": cfg.data.dataset, "config": cfg.data.config, "split": cfg.data.split}}
    return {
        "finished": now(),
        "steps": state.step,
        "tokens_seen": state.tokens,
        "pretraining_tokens": original,
        "fraction_of_pretraining": state.tokens / original if original else None,
        "final_loss": state.last_loss,
        "heldout_loss": heldout["eval_loss"],
        "heldout": {"text": corpus.heldout_set().text, "tokens_scored": heldout["eval_tokens"]},
        "seq_len": cfg.data.seq_len,
        "global_batch": t.global_batch(accelerator.num_processes),
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        **data,  # data.mix: "datasets", each with its weight and the tokens drawn from it
        "objective": objective_name(cfg.distill if teacher else None),
        "from_scratch": student.from_scratch,
        "lora": lora_summary(t.lora),
        "optim": {"lr": cfg.optim.lr, "scheduler": cfg.optim.scheduler},
        "distill": {"weight": cfg.distill.weight, "temperature": cfg.distill.temperature}
        if teacher
        else None,
        "config": to_plain(cfg),  # the whole resolved config: the card's Reproduce section
    }
