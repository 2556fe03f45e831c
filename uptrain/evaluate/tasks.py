"""Downstream tasks (HellaSwag, ARC, PIQA, Winogrande, MMLU, LAMBADA, ...) through lm-evaluation-harness.

lm_eval is an optional extra (`pip install 'uptrain-gqa[eval]'`). A model already loaded by uptrain
is wrapped in lm_eval's HFLM (`pretrained=` the model object, with its tokenizer, batch size and
max length) and scored by `lm_eval.simple_evaluate`, so every number is the harness's own: its
prompts, few-shot sampling (seeded), metrics and stderr. `--include-path` adds a folder of task YAML
files (lm_eval's TaskManager include path), for private tasks or local copies of a task's data.

`task_scores` turns the harness's results into {task: {metric: value}}, dropping the filter suffix
(`acc,none` -> `acc`); uptrain.task_table shows them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from uptrain.config.evaluation import ScoringSection
from uptrain.errors import UptrainError
from uptrain.task_table import main_metric, task_columns, task_markdown

__all__ = [
    "TaskSettings",
    "check_tasks",
    "main_metric",
    "run_tasks",
    "task_columns",
    "task_markdown",
    "task_settings",
]

INSTALL = "pip install 'uptrain-gqa[eval]'"


@dataclass(frozen=True)
class TaskSettings:
    """What lm_eval is run with, built from the schema by `task_settings` (its defaults live there)."""

    tasks: tuple[str, ...]
    num_fewshot: int | None  # None: each task's own default
    limit: float | None  # examples per task (a fraction when < 1), as lm_eval's --limit
    batch_size: int
    include_path: str | None  # a folder of extra task YAML files
    seed: int = 1234  # lm_eval's default seeds for few-shot sampling: not a setting


def task_settings(settings: ScoringSection) -> TaskSettings:
    """The tasks of `uptrain eval`'s settings or of a run's report section, batched as its windows."""
    t = settings.tasks
    return TaskSettings(tuple(t.names), t.num_fewshot, t.limit, settings.batch_size, t.include_path)


def require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise UptrainError(f"--tasks needs lm-evaluation-harness; install it with {INSTALL}") from None
    return lm_eval


def parse_tasks(tasks: str | Sequence[str] | None) -> tuple[str, ...]:
    """Comma-separated task names (or a list of them), stripped, empty names dropped."""
    if tasks is None:
        return ()
    parts = tasks.split(",") if isinstance(tasks, str) else [p for t in tasks for p in t.split(",")]
    return tuple(p.strip() for p in parts if p.strip())


def task_manager(settings: TaskSettings) -> Any:
    """lm_eval's TaskManager with the include path; built once per path (indexing lm_eval's
    thousands of task YAML files takes seconds)."""
    require_lm_eval()
    return _task_manager(settings.include_path)


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_tasks(settings: TaskSettings) -> None:
    """Every task name known to lm_eval (with the include path) and the options valid, before any
    model is loaded."""
    if not settings.tasks:
        return
    if settings.num_fewshot is not None and settings.num_fewshot < 0:
        raise UptrainError(f"--num-fewshot {settings.num_fewshot} must be 0 or more")
    if settings.limit is not None and settings.limit <= 0:
        raise UptrainError(f"--limit {settings.limit} must be positive (a count, or a fraction below 1)")
    manager = task_manager(settings)
    known = set(manager.all_tasks)
    unknown = [t for t in settings.tasks if t not in known]
    if unknown:
        hint = " (or add its YAML folder with --include-path)" if settings.include_path is None else ""
        raise UptrainError(f"lm_eval has no task {', '.join(unknown)}; `lm_eval ls tasks` lists them{hint}")


def run_tasks(model: Any, tokenizer: Any, settings: TaskSettings, max_length: int | None = None) -> dict:
    """{task: {metric: value}} from lm_eval.simple_evaluate on an already loaded model."""
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    was_training = model.training
    try:
        lm = HFLM(
            pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size, max_length=max_length
        )
        limit = settings.limit
        if limit is not None and limit >= 1:
            limit = int(limit)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(settings.tasks),
            num_fewshot=settings.num_fewshot,
            limit=limit,
            task_manager=task_manager(settings),
            log_samples=False,
            random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
        )
    finally:
        model.train(was_training)
    return task_scores(results)


def task_scores(results: Any) -> dict[str, dict[str, float]]:
    """The harness's `results` section as {task: {metric: value}} (numbers only, filter suffix off)."""
    table = results.get("results", results)
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in table.items():
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, _, filter_name = key.partition(",")
            clean[metric if filter_name in ("", "none") else key] = float(value)
        scores[task] = clean
    return scores
