"""The eval report as one table: a row per model, a column per metric (terminal and Markdown)."""

from __future__ import annotations

from uptrain.evaluate.report import EvalReport
from uptrain.task_table import task_columns


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def _number(x: float) -> str:
    return f"{x:,.3f}" if abs(x) < 1e4 else f"{x:.3e}"


def report_table(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """Column headers and formatted rows."""
    s = report.settings
    headers = ["model", "KV heads", "perplexity", "word ppl", "byte ppl", "bits/byte", "KV/token"]
    headers.append(f"KV {s.kv_batch}x{s.kv_context}")
    if s.decode_bench:
        headers += ["decode tok/s", "speedup"]
    tasks = task_columns([m.tasks for m in report.models])
    headers += [f"{task} {metric}" for task, metric in tasks]
    rows = []
    for m in report.models:
        h = m.harness
        row = [
            m.model,
            str(m.kv_heads if m.kv_heads is not None else "?"),
            _number(m.perplexity.perplexity),
            _number(h.word_perplexity) if h else "-",
            f"{h.byte_perplexity:.4f}" if h else "-",
            f"{h.bits_per_byte:.4f}" if h else "-",
            _human_bytes(m.kv.bytes_per_token),
            _human_bytes(m.kv.bytes),
        ]
        if s.decode_bench:
            row += [
                f"{m.decode.tokens_per_s:.1f}" if m.decode else "-",
                f"{m.decode_speedup:.2f}x" if m.decode_speedup is not None else "-",
            ]
        for task, metric in tasks:
            value = (m.tasks or {}).get(task, {}).get(metric)
            row.append(f"{value:.4f}" if value is not None else "-")
        rows.append(row)
    return headers, rows


def title(report: EvalReport) -> str:
    s = report.settings
    source = report.dataset.get("source", "the given text")
    return f"{source}: {report.tokens:,} tokens, window {s.window}, stride {s.stride}"


def caption(report: EvalReport) -> str:
    s = report.settings
    treated = " after the wikitext detokenizer" if s.detokenize == "wikitext" else ""
    text = (
        "perplexity per token (sliding window); word/byte perplexity and bits/byte as lm_eval's "
        f"rolling loglikelihood, each document alone{treated}; KV cache per token and for batch "
        f"{s.kv_batch} x {s.kv_context} tokens"
    )
    if s.decode_bench:
        text += "; decode tokens/s at that batch and context, relative to the first model"
    t = s.tasks
    if t.names:
        shots = "each task's default" if t.num_fewshot is None else str(t.num_fewshot)
        text += f"; lm_eval tasks ({shots} few-shot" + (f", limit {t.limit:g}" if t.limit else "") + ")"
    return text + "."


def to_markdown(report: EvalReport) -> str:
    headers, rows = report_table(report)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + f"\n\n{title(report)}: {caption(report)}\n"
