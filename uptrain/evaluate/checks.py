"""Evaluation settings checked once, at the door, before any model or text is loaded.

`check_settings` is called by `uptrain eval` and by the library's own entry points
(evaluate_checkpoints, evaluate_models); what it returns is trusted from there on. Only the window
and stride wait for the models (resolve_window: their default comes from the models' positions).
A run's report section is checked where the run config is read (uptrain.config.load) and its tasks
when the run starts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from uptrain.checkpoint.devices import resolve_device
from uptrain.checkpoint.dtypes import resolve_dtype
from uptrain.config.evaluation import EvalSettings
from uptrain.errors import SettingError
from uptrain.evaluate.documents import check_treatment
from uptrain.evaluate.tasks import check_tasks, parse_tasks, task_settings

AT_LEAST_ONE = ("batch_size", "kv_batch", "kv_context", "decode_tokens")


def check_settings(settings: EvalSettings) -> EvalSettings:
    """`settings` checked, with the task names split at commas (`--tasks hellaswag,arc_easy`)."""
    for name in AT_LEAST_ONE:
        value = getattr(settings, name)
        if value < 1:
            raise SettingError(f"<{name}> {value} must be at least 1")
    resolve_dtype(settings.dtype)
    resolve_device(settings.device)  # the device convert resolves the same way
    check_treatment(settings.detokenize)
    include = settings.tasks.include_path
    if include is not None and not Path(include).is_dir():
        raise SettingError(f"<include_path> {include} is not a folder; name the folder of task YAML")
    settings = replace(settings, tasks=replace(settings.tasks, names=list(parse_tasks(settings.tasks.names))))
    check_tasks(task_settings(settings))
    return settings
