"""Downstream task scores (lm_eval) in the model card: a table in the body and the Hub's model-index.

Reads `tasks` ({task: {metric: value}}, as `uptrain eval --tasks` and `uptrain run`'s report.tasks
write it) of each model entry in the report (or uptrain.json's evaluation). The table has a row per
task (its main metric, with its stderr) and a column per role; the model-index metadata carries the
scores of the model the card describes: the uptrained one, else the converted one.
"""

from __future__ import annotations

from typing import Any

from uptrain.hub.card_inputs import ROLES, _entries, _role
from uptrain.task_table import main_metric, task_markdown


def task_scores_by_role(record: dict[str, Any], report: dict[str, Any] | None) -> dict[str, dict]:
    """{role: {task: {metric: value}}} from uptrain.json's evaluation and then the report (which wins)."""
    scores: dict[str, dict] = {}
    for section in (record.get("evaluation"), report):
        for entry in _entries(section):
            role, tasks = _role(entry), entry.get("tasks")
            if role is not None and isinstance(tasks, dict) and tasks:
                scores.setdefault(role, {}).update(tasks)
    return scores


def task_section(record: dict[str, Any], report: dict[str, Any] | None) -> list[str]:
    """The card's "Downstream tasks" section, or no lines when nothing was scored on a task."""
    scores = task_scores_by_role(record, report)
    roles = [r for r in ROLES if r in scores]
    table = task_markdown(roles, [scores[r] for r in roles])
    if not table:
        return []
    settings = (report or {}).get("settings") or {}
    shots = settings.get("num_fewshot")
    said = "each task's default number of few-shot examples" if shots is None else f"{shots}-shot"
    limit = f", at most {settings['limit']:g} examples per task" if settings.get("limit") else ""
    return [
        "## Downstream tasks",
        "",
        *table,
        "",
        f"Scored with [lm-evaluation-harness](https://github.com/EleutherAI/lm-evaluation-harness), "
        f"{said}{limit}, the same settings for every model.",
        "",
    ]


def eval_results(record: dict[str, Any], report: dict[str, Any] | None) -> list[Any]:
    """huggingface_hub EvalResults (the model-index) of the model the card describes."""
    from huggingface_hub import EvalResult

    scores = task_scores_by_role(record, report)
    own = scores.get("uptrained") or scores.get("converted") or {}
    settings = (report or {}).get("settings") or {}
    results = []
    for task, metrics in own.items():
        metric = main_metric(metrics)
        if metric is None:
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=task,
                dataset_name=task,
                metric_type=metric,
                metric_value=metrics[metric],
                metric_args={"num_fewshot": settings["num_fewshot"]}
                if settings.get("num_fewshot") is not None
                else None,
                source_name="lm-evaluation-harness",
                source_url="https://github.com/EleutherAI/lm-evaluation-harness",
            )
        )
    return results
