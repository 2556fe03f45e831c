"""Downstream task scores ({task: {metric: value}} per model, from lm_eval) as table columns and rows.

Plain formatting with no dependencies, shared by `uptrain eval`'s table, `uptrain run`'s report and
the model card. `main_metric` picks the number a table shows for a task: acc_norm, else acc, else
exact_match, mc2, f1, word_perplexity, perplexity, else the first metric that is not a stderr.
"""

from __future__ import annotations

from collections.abc import Sequence

_PREFERRED = ("acc_norm", "acc", "exact_match", "mc2", "f1", "word_perplexity", "perplexity")


def main_metric(metrics: dict[str, float]) -> str | None:
    """The metric a table shows for a task: acc_norm, else acc, else the first non-stderr one."""
    for name in _PREFERRED:
        if name in metrics:
            return name
    return next((k for k in metrics if not k.endswith("_stderr") and k != "alias"), None)


def task_columns(scores: Sequence[dict[str, dict[str, float]] | None]) -> list[tuple[str, str]]:
    """(task, metric) for each task that any model was scored on, with the task's main metric."""
    columns: dict[str, str] = {}
    for model_scores in scores:
        for task, metrics in (model_scores or {}).items():
            metric = main_metric(metrics)
            if metric is not None and task not in columns:
                columns[task] = metric
    return list(columns.items())


def task_markdown(names: Sequence[str], scores: Sequence[dict[str, dict[str, float]] | None]) -> list[str]:
    """A Markdown table, a row per task (its main metric, ± its stderr) and a column per model;
    no lines when no model was scored on a task."""
    columns = task_columns(scores)
    if not columns:
        return []
    lines = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for task, metric in columns:
        cells = []
        for model_scores in scores:
            metrics = (model_scores or {}).get(task, {})
            value, stderr = metrics.get(metric), metrics.get(f"{metric}_stderr")
            cell = "-" if value is None else f"{value:.4f}"
            cells.append(cell + (f" ± {stderr:.4f}" if value is not None and stderr is not None else ""))
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return lines
