"""`uptrain train` as a whole: check everything that needs no model, prepare the model to train
(convert it, build it, or take model.path as it is; student.py), then run the training loop on it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from uptrain.config import UptrainConfig
from uptrain.pipeline.model_config import ModelChecked, check_before_writing
from uptrain.pipeline.student import check_student, prepare_student, run_model_section
from uptrain.threads import torch_threads
from uptrain.train.builders import cpu_only
from uptrain.train.loop import TrainingResult, train
from uptrain.train.preflight import check_training
from uptrain.train.run_dir import RunDir


def check_model(cfg: UptrainConfig) -> ModelChecked:
    """The door's checks of the model and the settings that depend on it (G, the method and its
    options, calibration, data.seq_len, train.trainable), each once, before anything is written."""
    checked = check_student(run_model_section(cfg))
    check_before_writing(cfg, checked)
    return checked


def run_training(
    cfg: UptrainConfig,
    output: Path,
    resume: bool = False,
    console: Console | None = None,
    checked: ModelChecked | None = None,
) -> TrainingResult:
    """Uptrain as `cfg` says, writing everything under `output`; with `resume`, continue a run there.
    `checked`: the model as the caller's door checked it (uptrain run); without it, checked here."""
    from accelerate import PartialState
    from accelerate.utils import set_seed

    console = console or Console(soft_wrap=True)  # log lines stay whole, for grep
    run = RunDir(Path(output).absolute())
    with torch_threads(cfg.train.cpu_threads):
        state = PartialState(cpu=cpu_only())
        say = console.print if state.is_main_process else (lambda _: None)
        start = check_training(cfg, run, resume, state.num_processes)
        if start.finished:
            say(f"{run.final} exists: this run has finished; nothing to do")
            return TrainingResult(None, 0, 0, None, None)
        checked = checked or check_model(cfg)
        set_seed(cfg.train.seed)
        with state.main_process_first():  # converted or built once, then loaded everywhere
            student = prepare_student(run_model_section(cfg), run, say, checked.conversion, checked.route)
        return train(cfg, run, student, start, console)
