"""Formatting helpers of the ablations report (scripts/ablation_report.py, scripts/ablation_sections.py):
numbers, percentages, markdown tables, and the share of a conversion's loss that uptraining won back."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ablation_plan import Plan

ROOT = Path(__file__).resolve().parents[1]


def ppl(results: dict[str, dict[str, Any]], model: Any) -> float:
    return results[model.name]["perplexity"]


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def recovered(before: float, after: float, reference: float) -> float | None:
    """Share of the conversion's log-perplexity gap that uptraining closed."""
    gap = math.log(before) - math.log(reference)
    return None if gap <= 0 else (math.log(before) - math.log(after)) / gap


def variants_of(plan: Plan, experiment: str) -> list[int]:
    return sorted({m.groups for m in plan.experiments[experiment] if m.groups is not None}, reverse=True)


def checkout_relative(arg: str) -> str:
    """An absolute path as a path relative to the checkout (commands in the docs carry no machine paths);
    anything else as it is."""
    return os.path.relpath(arg, ROOT) if os.path.isabs(arg) else arg
