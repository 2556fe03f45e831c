"""The plots of a run's report, as PNG files (matplotlib's Agg canvas, no display needed).

- training.png: training loss and held-out perplexity against tokens trained, with horizontal lines
  at the source's and the converted model's perplexity;
- perplexity.png: perplexity of source, converted and uptrained;
- kv_cache.png: KV-cache bytes per token of each;
- tasks.png: lm_eval task scores of each (when the report has tasks).

Figures are built with matplotlib.figure.Figure, not pyplot, so no global backend or state is touched.
Each plot has a builder that returns the Figure (what it shows can be read back from it) and a function
that writes it as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROLE_COLOURS = {"source": "#4c72b0", "converted": "#c44e52", "uptrained": "#55a868"}
_DPI = 120


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, columns)
    return fig, axes


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as a PNG, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def training_curves(
    records: Sequence[dict[str, Any]],
    path: Path,
    source_ppl: float | None = None,
    converted_ppl: float | None = None,
    title: str = "",
) -> Path:
    """training_figure, written to `path` as a PNG."""
    return save_figure(training_figure(records, source_ppl, converted_ppl, title), path)


def training_figure(
    records: Sequence[dict[str, Any]],
    source_ppl: float | None = None,
    converted_ppl: float | None = None,
    title: str = "",
) -> Any:
    """Loss (left) and held-out perplexity (right, log scale) against tokens, from metrics.jsonl."""
    fig, (loss_ax, ppl_ax) = _figure(11, 4.2, 2)
    train = sorted((r["tokens"], r["loss"]) for r in records if r.get("loss") is not None)
    held = sorted((r["tokens"], r["eval_ppl"]) for r in records if r.get("eval_ppl") is not None)
    if train:
        loss_ax.plot(*zip(*train, strict=True), color=ROLE_COLOURS["uptrained"], label="training loss")
    held_loss = sorted((r["tokens"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None)
    if held_loss:
        loss_ax.plot(*zip(*held_loss, strict=True), "o--", color="#8172b2", label="held-out loss")
    loss_ax.set_xlabel("tokens trained")
    loss_ax.set_ylabel("cross-entropy (nats / token)")
    loss_ax.set_title("loss")
    loss_ax.grid(alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend()
    if held:
        ppl_ax.plot(
            *zip(*held, strict=True), "o-", color=ROLE_COLOURS["uptrained"], label="held-out, uptraining"
        )
    for role, value in (("source", source_ppl), ("converted", converted_ppl)):
        if value is not None:
            ppl_ax.axhline(value, linestyle="--", color=ROLE_COLOURS[role], label=f"{role}: {value:,.2f}")
    ppl_ax.set_xlabel("tokens trained")
    ppl_ax.set_title("held-out perplexity")
    if ppl_ax.get_legend_handles_labels()[0]:
        ppl_ax.set_yscale("log")
        ppl_ax.set_ylabel("perplexity (log scale)")
        ppl_ax.grid(alpha=0.3, which="both")
        ppl_ax.legend()
    else:
        ppl_ax.text(0.5, 0.5, "no held-out evaluation", ha="center", va="center", transform=ppl_ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def _bars(rows: Sequence[tuple[str, float]], ylabel: str, title: str, fmt: str, log: bool) -> Any:
    fig, ax = _figure(6, 4.2)
    names = [name for name, _ in rows]
    values = [value for _, value in rows]
    bars = ax.bar(names, values, color=[ROLE_COLOURS.get(n, "#937860") for n in names])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3, which="both")
    return fig


def perplexity_figure(rows: Sequence[tuple[str, float]], title: str = "perplexity") -> Any:
    """One bar per model (role, perplexity); a log scale when they span more than 10x."""
    values = [v for _, v in rows]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    return _bars(rows, "perplexity" + (" (log scale)" if log else ""), title, "{:,.2f}", log)


def kv_cache_figure(rows: Sequence[tuple[str, int]], title: str = "KV cache per token") -> Any:
    """One bar per model (role, KV-cache bytes per token)."""
    return _bars(rows, "bytes per token", title, "{:,.0f} B", False)


def perplexity_bars(rows: Sequence[tuple[str, float]], path: Path, title: str = "perplexity") -> Path:
    """perplexity_figure, written to `path` as a PNG."""
    return save_figure(perplexity_figure(rows, title), path)


def kv_cache_bars(rows: Sequence[tuple[str, int]], path: Path, title: str = "KV cache per token") -> Path:
    """kv_cache_figure, written to `path` as a PNG."""
    return save_figure(kv_cache_figure(rows, title), path)


def task_figure(
    tasks: Sequence[tuple[str, str]],
    scores: dict[str, dict[str, dict[str, float]]],
    title: str = "downstream tasks (lm_eval)",
) -> Any:
    """Grouped bars: for each (task, metric), one bar per model (name -> task -> metric -> value)."""
    fig, ax = _figure(max(6.0, 1.6 * len(tasks) + 2), 4.2)
    names = list(scores)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [scores[name].get(task, {}).get(metric, float("nan")) for task, metric in tasks]
        xs = [t + (i - (len(names) - 1) / 2) * width for t in range(len(tasks))]
        bars = ax.bar(xs, values, width, label=name, color=ROLE_COLOURS.get(name, "#937860"))
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=7)
    ax.set_xticks(range(len(tasks)), [f"{task}\n({metric})" for task, metric in tasks])
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig


METHOD_COLOURS = ("#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860")


def comparison_figure(
    metrics: dict[str, Sequence[dict[str, Any]]], source_ppl: float | None = None, title: str = ""
) -> Any:
    """Several runs on shared axes (name -> metrics.jsonl records): training loss (left) and held-out
    perplexity (right, log scale) against tokens trained, with the source's perplexity as a line."""
    fig, (loss_ax, ppl_ax) = _figure(11, 4.2, 2)
    for (name, records), colour in zip(metrics.items(), METHOD_COLOURS * len(metrics), strict=False):
        train = sorted((r["tokens"], r["loss"]) for r in records if r.get("loss") is not None)
        held = sorted((r["tokens"], r["eval_ppl"]) for r in records if r.get("eval_ppl") is not None)
        if train:
            loss_ax.plot(*zip(*train, strict=True), color=colour, alpha=0.8, label=name)
        if held:
            ppl_ax.plot(*zip(*held, strict=True), "o-", color=colour, label=name)
    if source_ppl is not None:
        ppl_ax.axhline(
            source_ppl, linestyle="--", color=ROLE_COLOURS["source"], label=f"source: {source_ppl:,.2f}"
        )
    loss_ax.set_xlabel("tokens trained")
    loss_ax.set_ylabel("cross-entropy (nats / token)")
    loss_ax.set_title("training loss")
    loss_ax.grid(alpha=0.3)
    ppl_ax.set_xlabel("tokens trained")
    ppl_ax.set_ylabel("perplexity (log scale)")
    ppl_ax.set_title("held-out perplexity")
    ppl_ax.set_yscale("log")
    ppl_ax.grid(alpha=0.3, which="both")
    for ax in (loss_ax, ppl_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig
