"""The measured sections of the model card: perplexity before and after, and the KV-cache saving."""

from __future__ import annotations

from typing import Any

from uptrain.hub.card_inputs import evaluation_setting, model_results
from uptrain.units import format_bytes

_ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def perplexity_table(record: dict[str, Any], report: dict[str, Any] | None, shape: dict) -> list[str]:
    """The card's perplexity table: source, converted and uptrained on the same tokens."""
    results = model_results(record, report)
    rows = [(role, results[role]) for role in ("source", "converted", "uptrained") if role in results]
    rows = [(role, r) for role, r in rows if "perplexity" in r]
    if not rows:
        return ["Not measured yet: `uptrain eval SOURCE CONVERTED UPTRAINED` measures it on the same tokens."]
    extra = [k for k in ("word_perplexity", "bits_per_byte") if any(k in r for _, r in rows)]
    base = results.get("source", {}).get("perplexity")
    kv = {"source": shape["kv_before"], "converted": shape["kv_after"], "uptrained": shape["kv_after"]}
    header = ["model", "KV heads", "perplexity", "vs source", *(k.replace("_", " ") for k in extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for role, r in rows:
        ratio = f"{r['perplexity'] / base:.3f}x" if base else "-"
        cells = [role, str(kv[role]), f"{r['perplexity']:.3f}", ratio if role != "source" else "1.000x"]
        cells += [f"{r[k]:.4g}" if k in r else "-" for k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    setting = evaluation_setting(record, report)
    if setting:
        said = [
            f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in setting.items()
        ]
        lines += ["", "Token perplexity (lower is better); " + ", ".join(said) + "."]
    return lines


def kv_cache_section(record: dict, report: dict | None, shape: dict, config: dict | None) -> list[str]:
    """The KV-cache saving: measured bytes per token where the report has them, else the formula."""
    kv, g = shape["kv_before"], shape["kv_after"]
    results = model_results(record, report)
    measured = {role: r.get("kv_bytes_per_token") for role, r in results.items()}
    dtype = str((config or {}).get("dtype") or (config or {}).get("torch_dtype") or "")
    before = measured.get("source")
    after = measured.get("uptrained") or measured.get("converted")
    if (
        (before is None or after is None)
        and dtype in _ELEMENT_BYTES
        and shape.get("layers")
        and shape.get("head_dim")
    ):
        per_head = 2 * shape["layers"] * shape["head_dim"] * _ELEMENT_BYTES[dtype]
        before, after = before or per_head * kv, after or per_head * g
    lines = [f"{kv} -> {g} key/value heads: the KV cache is **{kv / g:.3g}x smaller** (KV/G)."]
    if before and after:
        lines += [
            "",
            "| | per token | 4k context | 32k context |",
            "|---|---|---|---|",
            *(
                f"| {name} | {format_bytes(b)} | {format_bytes(b * 4096)} | {format_bytes(b * 32768)} |"
                for name, b in (("source", before), ("this model", after))
            ),
            "",
            "Batch 1, keys and values of every layer" + (f", {dtype}." if dtype else "."),
        ]
    return lines
