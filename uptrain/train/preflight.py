"""What `uptrain train` checks before it writes anything: the output directory (fresh, resumable or
finished), the data source, settings whose valid values live in other libraries, the budget
arithmetic and a local teacher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uptrain.config import UptrainConfig, dump_config
from uptrain.train.budget import plan_budget
from uptrain.train.builders import check_choices, check_teacher
from uptrain.train.corpus import check_data_source
from uptrain.train.lora import check_lora
from uptrain.train.run_dir import RunDir, check_run_dir
from uptrain.train.streamed import check_stream_checkpoint


@dataclass
class TrainingStart:
    config_yaml: str  # the resolved config, as config.yaml will hold it
    checkpoint: Path | None  # the checkpoint to resume from; None: start afresh
    finished: bool = False  # --resume of a run whose final/ exists: nothing to do


def check_training(cfg: UptrainConfig, run: RunDir, resume: bool, processes: int) -> TrainingStart:
    """Every check that needs no model: one-line errors, nothing written."""
    config_yaml = dump_config(cfg)
    if resume and (run.final / "uptrain.json").is_file():
        return TrainingStart(config_yaml, None, finished=True)
    checkpoint = check_run_dir(run, config_yaml, resume)
    check_data_source(cfg.data, cfg.eval)
    check_stream_checkpoint(checkpoint, cfg.data.streaming or any(s.streaming for s in cfg.data.mix))
    check_choices(cfg)
    check_lora(cfg)
    b = cfg.budget
    if b.max_steps or b.max_tokens is not None or b.pretraining_tokens:  # known before any download
        per_step = cfg.tokens_per_step(processes)
        plan_budget(per_step, b.pretraining_tokens, b.fraction, b.max_tokens, b.max_steps)
    if cfg.distill.enabled:
        check_teacher(cfg)
    return TrainingStart(config_yaml, checkpoint)
