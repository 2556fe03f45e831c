"""The report of `uptrain run`: report.json, report.md and the plots, from the three evaluations,
the uptrained checkpoint's uptrain.json and metrics.jsonl.

report.json keeps the flat keys that model cards read (uptrain.hub.card: dataset, dataset_config, split,
tokens, window, stride, and per model role, perplexity, kv_bytes_per_token, path), plus the
conversion and training records, the ratios the recipe is judged by, and the plots' file names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.errors import UptrainError
from uptrain.plots import kv_cache_figure, perplexity_figure, save_figure, task_figure, training_figure
from uptrain.task_table import task_columns, task_markdown
from uptrain.units import format_bytes

ROLES = ("source", "converted", "uptrained")
PLOT_FILES = {
    "training": "training.png",
    "perplexity": "perplexity.png",
    "kv_cache": "kv_cache.png",
    "tasks": "tasks.png",
}
_SHARED_KEYS = (
    "dataset",
    "dataset_config",
    "split",
    "source",
    "heldout_blocks",
    "tokens",
    "window",
    "stride",
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def build_report(
    evaluations: dict[str, dict[str, Any]], record: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """report.json's content from the per-role evaluations (EvalReport dicts with one model each)
    and the uptrained checkpoint's uptrain.json."""
    missing = [r for r in ROLES if r not in evaluations]
    if missing:
        raise UptrainError(f"the run has no evaluation of {', '.join(missing)}; rerun uptrain run")
    digests = {evaluations[r].get("tokens_sha256") for r in ROLES}
    if len(digests) != 1:
        raise UptrainError(
            "source, converted and uptrained were scored on different tokens; rerun uptrain run"
        )
    first = evaluations[ROLES[0]]
    models = [evaluations[r]["models"][0] for r in ROLES]
    ppl = {m["role"]: m["perplexity"] for m in models}
    return {
        **{k: first.get(k) for k in _SHARED_KEYS},
        "tokens_sha256": first.get("tokens_sha256"),
        "settings": first.get("settings"),
        "versions": first.get("versions"),
        "models": models,
        "perplexity_ratio": {
            "converted_over_source": ppl["converted"] / ppl["source"],
            "uptrained_over_converted": ppl["uptrained"] / ppl["converted"],
            "uptrained_over_source": ppl["uptrained"] / ppl["source"],
        },
        "conversion": record.get("conversion"),
        "training": record.get("training"),
        **(extra or {}),
    }


def plot_figures(report: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of training.png, perplexity.png, kv_cache.png and, when the models were scored on
    lm_eval tasks, tasks.png (keys as PLOT_FILES)."""
    by_role = {m["role"]: m for m in report["models"]}
    conversion = report.get("conversion") or {}
    heads = f"{conversion.get('kv_heads_before', '?')} -> {conversion.get('kv_heads_after', '?')} KV heads"
    where = report.get("source") or report.get("dataset") or "held-out text"
    figures = {
        "training": training_figure(
            metrics,
            by_role["source"]["perplexity"],
            by_role["converted"]["perplexity"],
            title=f"uptraining after {heads} ({conversion.get('method', '?')}); perplexity on {where}",
        ),
        "perplexity": perplexity_figure(
            [(r, by_role[r]["perplexity"]) for r in ROLES],
            title=f"perplexity on {report.get('tokens', 0):,} tokens",
        ),
        "kv_cache": kv_cache_figure(
            [(r, by_role[r]["kv_bytes_per_token"]) for r in ROLES], title="KV-cache bytes per token"
        ),
    }
    tasks = task_columns([by_role[r].get("tasks") for r in ROLES])
    if tasks:
        figures["tasks"] = task_figure(tasks, {r: by_role[r].get("tasks") or {} for r in ROLES})
    return figures


def draw_plots(report: dict[str, Any], metrics: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """training.png, perplexity.png, kv_cache.png (and tasks.png) in `out`."""
    figures = plot_figures(report, metrics)
    return {name: save_figure(fig, out / PLOT_FILES[name]) for name, fig in figures.items()}


def training_text_lines(training: dict[str, Any]) -> list[str]:
    """The sources of a data.mix run (weight, tokens drawn) and the text of the held-out curve."""
    lines = []
    mix = training.get("datasets")
    if isinstance(mix, list) and mix:
        lines += ["| training source | weight | tokens drawn |", "|---|---:|---:|"]
        lines += [f"| {m.get('source')} | {m.get('weight'):g} | {m.get('tokens_drawn', 0):,} |" for m in mix]
        lines.append("")
    heldout = training.get("heldout") or {}
    if heldout.get("text"):
        lines += [f"Held-out curve (training.png) on {heldout['text']}.", ""]
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: what was done, the table, the ratios and the plots."""
    conversion, training = report.get("conversion") or {}, report.get("training") or {}
    lines = ["# uptrain run report", ""]
    if conversion:
        fraction = training.get("fraction_of_pretraining")
        lines += [
            f"{conversion.get('heads')} query heads, {conversion.get('kv_heads_before')} -> "
            f"{conversion.get('kv_heads_after')} key/value heads by `{conversion.get('method')}`, then "
            f"uptrained for {training.get('steps', 0):,} steps on {training.get('tokens_seen', 0):,} tokens"
            + (f" ({fraction:.3%} of pre-training)." if fraction else "."),
            "",
        ]
    lines += training_text_lines(training)
    lines += ["| model | KV heads | perplexity | KV cache / token |", "|---|---:|---:|---:|"]
    for m in report["models"]:
        lines.append(
            f"| {m['role']} | {m.get('kv_heads', '?')} | {m['perplexity']:,.3f} | "
            f"{format_bytes(m['kv_bytes_per_token'])} |"
        )
    ratio = report["perplexity_ratio"]
    lines += [
        "",
        f"Perplexity on {report.get('source') or report.get('dataset')}: {report.get('tokens', 0):,} "
        f"tokens, window {report.get('window')}, stride {report.get('stride')}; the same tokens for all "
        "three models.",
        "",
        f"- conversion multiplied perplexity by {ratio['converted_over_source']:.3g};",
        f"- uptraining multiplied it by {ratio['uptrained_over_converted']:.3g};",
        f"- uptrained vs source: {ratio['uptrained_over_source']:.3g}x.",
        "",
    ]
    models = report["models"]
    tasks = task_markdown([m["role"] for m in models], [m.get("tasks") for m in models])
    if tasks:
        s = report.get("settings") or {}
        shots = "each task's default" if s.get("num_fewshot") is None else s["num_fewshot"]
        limit = f", at most {s['limit']:g} examples per task" if s.get("limit") else ""
        lines += ["## Downstream tasks (lm_eval)", "", *tasks, "", f"Few-shot: {shots}{limit}.", ""]
    lines += continuation_markdown([(m["role"], m.get("continuations")) for m in models])
    for name, file in (report.get("plots") or {}).items():
        lines.append(f"![{name}]({file})")
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    """A continuation as one markdown table cell: newlines shown as ⏎, pipes escaped."""
    return text.replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ").strip() or "(nothing)"


def continuation_markdown(rows: list[tuple[str, list[dict[str, str]] | None]]) -> list[str]:
    """A section with one table per prompt: each model's greedy continuation of it (no section
    when no model has any). rows: (model name, its continuations)."""
    prompts = [c["prompt"] for _, conts in rows if conts for c in conts]
    if not prompts:
        return []
    lines = ["## Greedy continuations", ""]
    for prompt in dict.fromkeys(prompts):
        lines += [f"Prompt: `{prompt}`", "", "| model | continuation |", "|---|---|"]
        for name, conts in rows:
            text = next((c["continuation"] for c in conts or [] if c["prompt"] == prompt), None)
            if text is not None:
                lines.append(f"| {name} | {_cell(text)} |")
        lines.append("")
    return lines


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """report.json and report.md in `out`, each written atomically."""
    json_path, md_path = out / "report.json", out / "report.md"
    atomic_write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(md_path, report_markdown(report))
    return json_path, md_path
