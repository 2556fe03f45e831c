"""The comparison of `uptrain run` with compare.methods: comparison.json, comparison.md and
comparison.png, from each method's own run (OUTPUT/<method>/report.json and metrics.jsonl).

Every method's run scores the same tokens (the reports' token digests must agree) after the same
uptraining budget; the table gives source, each converted and each uptrained model, the plot the
training loss and held-out perplexity of every method against tokens on shared axes, and the
greedy continuations of report.prompts come from every model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uptrain.checkpoint.atomic import atomic_write_text
from uptrain.errors import UptrainError
from uptrain.plots import comparison_figure, save_figure
from uptrain.report import continuation_markdown
from uptrain.units import format_bytes

PLOT_FILE = "comparison.png"


def build_comparison(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """comparison.json's content from each method's report.json (method -> report)."""
    if not reports:
        raise UptrainError("compare.methods is empty; list at least one method")
    digests = {r.get("tokens_sha256") for r in reports.values()}
    if len(digests) != 1:
        raise UptrainError("the methods' runs were scored on different tokens; rerun uptrain run")
    first = next(iter(reports.values()))
    source = next(m for m in first["models"] if m["role"] == "source")
    rows = [{"model": "source", "method": None, **_model_row(source, source)}]
    for method, report in reports.items():
        by_role = {m["role"]: m for m in report["models"]}
        conversion, training = report.get("conversion") or {}, report.get("training") or {}
        for role in ("converted", "uptrained"):
            row = {"model": f"{method} {role}", "method": method, "role": role}
            row.update(_model_row(by_role[role], source))
            if role == "converted":
                row["seconds"] = conversion.get("seconds")
            else:
                row["tokens"] = training.get("tokens_seen")
            rows.append(row)
    return {
        "source": first.get("source") or first.get("dataset"),
        "tokens": first.get("tokens"),
        "window": first.get("window"),
        "stride": first.get("stride"),
        "tokens_sha256": first.get("tokens_sha256"),
        "methods": list(reports),
        "rows": rows,
    }


def _model_row(model: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    return {
        "kv_heads": model.get("kv_heads"),
        "perplexity": model["perplexity"],
        "vs_source": model["perplexity"] / source["perplexity"],
        "kv_bytes_per_token": model.get("kv_bytes_per_token"),
        "continuations": model.get("continuations"),
    }


def comparison_markdown(comparison: dict[str, Any], plot: str | None) -> str:
    methods = ", ".join(f"`{m}`" for m in comparison["methods"])
    lines = [
        "# uptrain comparison",
        "",
        f"Conversion methods {methods}, each from the same source, uptrained on the same tokens with the "
        f"same budget, scored on the same {comparison.get('tokens', 0):,} tokens of {comparison['source']} "
        f"(window {comparison.get('window')}, stride {comparison.get('stride')}). Each method's own run "
        "and report are in its folder.",
        "",
        "| model | KV heads | perplexity | vs source | KV cache / token | conversion (s) "
        "| uptrained tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in comparison["rows"]:
        kv = format_bytes(r["kv_bytes_per_token"]) if r.get("kv_bytes_per_token") else ""
        seconds = f"{r['seconds']:.0f}" if r.get("seconds") is not None else ""
        tokens = f"{r['tokens']:,}" if r.get("tokens") else ""
        lines.append(
            f"| {r['model']} | {r.get('kv_heads', '?')} | {r['perplexity']:,.3f} | {r['vs_source']:.2f}x "
            f"| {kv} | {seconds} | {tokens} |"
        )
    lines.append("")
    lines += continuation_markdown([(r["model"], r.get("continuations")) for r in comparison["rows"]])
    if plot:
        lines.append(f"![comparison]({plot})")
    return "\n".join(lines).rstrip() + "\n"


def write_comparison(
    comparison: dict[str, Any], metrics: dict[str, list[dict[str, Any]]], out: Path, plots: bool
) -> list[Path]:
    """comparison.json, comparison.md and (with plots) comparison.png in `out`, each atomically."""
    files = []
    if plots:
        source = comparison["rows"][0]["perplexity"]
        figure = comparison_figure(metrics, source, title=f"held-out perplexity on {comparison['source']}")
        files.append(save_figure(figure, out / PLOT_FILE))
    json_path, md_path = out / "comparison.json", out / "comparison.md"
    atomic_write_text(json_path, json.dumps(comparison, indent=2) + "\n")
    atomic_write_text(md_path, comparison_markdown(comparison, PLOT_FILE if plots else None))
    return [json_path, md_path, *files]
