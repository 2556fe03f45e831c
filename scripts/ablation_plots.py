"""The ablation plots (matplotlib, small PNGs): perplexity as points on a shared axis, with the MHA
reference as a dashed line, and the KV-cache bytes per token as bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablation_plan import Model, Plan

PPL_LABEL = "WikiText-2 perplexity"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)


def variant_label(groups: int, heads: int) -> str:
    if groups == 1:
        return "MQA (G=1)"
    if groups == heads:
        return f"MHA (G={heads})"
    return f"GQA (G={groups})"


def objective_label(weight: float) -> str:
    if not weight:
        return "cross-entropy"
    return "distillation (KL only)" if weight == 1 else f"{1 - weight:g} CE + {weight:g} KL"


def _perplexity_axis(ax: Any, values: list[float], reference: float) -> None:
    """A log axis with plain numbers when the values span more than 3x; linear otherwise."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.axhline(reference, color="k", ls="--", lw=1, label="MHA reference")
    ax.set_ylabel(PPL_LABEL)
    values = [*values, reference]
    if max(values) / min(values) > 3:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _points(path: Path, plan: Plan, results: dict, series: dict[str, list[Model]], title: str) -> None:
    """One column of points per variant (GQA, MQA), one colour per series, offset side by side."""
    plt = _plt()
    variants = sorted({m.groups for ms in series.values() for m in ms}, reverse=True)
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    values = []
    for i, (label, models) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * 0.12
        for model in models:
            x = variants.index(model.groups) + offset
            y = results[model.name]["perplexity"]
            hollow = not model.fraction and len({m.fraction for ms in series.values() for m in ms}) > 1
            ax.plot([x], [y], "o", color=f"C{i}", mfc="white" if hollow else f"C{i}", ms=7)
            values.append(y)
        ax.plot([], [], "o", color=f"C{i}", label=label)
    _perplexity_axis(ax, values, results["reference"]["perplexity"])
    ax.set_xticks(range(len(variants)), [variant_label(g, plan.heads) for g in variants])
    ax.set_xlim(-0.6, len(variants) - 0.4)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_methods(path: Path, plan: Plan, results: dict) -> None:
    models = [m for m in plan.experiments["methods"] if m.groups is not None]
    methods = list(dict.fromkeys(m.method for m in models))
    series = {method: [m for m in models if m.method == method] for method in methods}
    title = f"hollow: converted; solid: uptrained on {plan.main * 100:g}% of pre-training"
    _points(path, plan, results, series, title)


def plot_objective(path: Path, plan: Plan, results: dict) -> None:
    models = [m for m in plan.experiments["objective"] if m.groups is not None]
    weights = sorted({m.distill for m in models})
    series = {objective_label(w): [m for m in models if m.distill == w] for w in weights}
    _points(path, plan, results, series, f"uptrained on {plan.main * 100:g}% of pre-training")


def plot_fractions(path: Path, plan: Plan, results: dict) -> None:
    plt = _plt()
    models = [m for m in plan.experiments["fractions"] if m.groups is not None]
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    values = []
    for i, g in enumerate(sorted({m.groups for m in models}, reverse=True)):
        line = sorted((m.fraction * 100, results[m.name]["perplexity"]) for m in models if m.groups == g)
        ax.plot(*zip(*line, strict=True), "o-", color=f"C{i}", label=variant_label(g, plan.heads))
        values += [y for _, y in line]
    control = Model(plan.heads, "mean", plan.main)
    if control.name in results:
        y = results[control.name]["perplexity"]
        ax.plot([plan.main * 100], [y], "kx", ms=8, label="MHA trained on the same tokens")
        values.append(y)
    _perplexity_axis(ax, values, results["reference"]["perplexity"])
    ax.set_xlabel("uptraining tokens, % of pre-training")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_groups(path: Path, plan: Plan, results: dict) -> None:
    plt = _plt()
    groups = sorted({m.groups for m in plan.experiments["groups"] if m.groups is not None})
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.2))
    converted = [results[Model(g).name]["perplexity"] for g in groups]
    uptrained = [results[Model(g, "mean", plan.main).name]["perplexity"] for g in groups]
    left.plot(groups, converted, "o-", color="C3", label="converted")
    left.plot(groups, uptrained, "o-", color="C0", label=f"uptrained {plan.main * 100:g}%")
    _perplexity_axis(left, converted + uptrained, results["reference"]["perplexity"])
    left.set_xscale("log", base=2)
    left.set_xticks(groups, [str(g) for g in groups])
    left.set_xlabel("KV groups G")
    left.legend(fontsize=8)
    kv = [results[Model(g).name]["kv_bytes_per_token"] for g in groups]
    right.bar([str(g) for g in groups], kv, color="C2")
    right.set_xlabel("KV groups G")
    right.set_ylabel("KV-cache bytes per token")
    _save(fig, path)


def write_plots(img_dir: Path, plan: Plan, results: dict) -> list[Path]:
    paths = [img_dir / f"ablation-{name}.png" for name in ("methods", "fractions", "groups", "objective")]
    plot_methods(paths[0], plan, results)
    plot_fractions(paths[1], plan, results)
    plot_groups(paths[2], plan, results)
    plot_objective(paths[3], plan, results)
    return paths
