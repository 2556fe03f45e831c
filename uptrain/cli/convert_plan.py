"""`uptrain convert SRC -g G ... --plan [--json]`: what the conversion would hold and compute, printed
instead of converting (uptrain.convert.resource_plan does the arithmetic)."""

from __future__ import annotations

import json
from typing import Any

import typer

from uptrain.convert.checked import CheckedConversion
from uptrain.convert.resource_inputs import gather_plan
from uptrain.convert.resource_memory import Memory
from uptrain.convert.resource_plan import ResourcePlan
from uptrain.units import format_bytes, format_duration


def _flops(n: float) -> str:
    for suffix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}FLOP"
    return f"{n:.0f} FLOP"


def _memory_lines(memory: Memory) -> list[str]:
    peak = memory.peak_phase
    lines = [
        f"peak {memory.where}: {format_bytes(memory.peak)}, in {peak.name}",
    ]
    lines += [
        f"  {t.name:<62} {format_bytes(t.bytes):>10}" for t in (*memory.baseline, *peak.terms) if t.bytes
    ]
    others = ", ".join(f"{p.name} {format_bytes(p.total)}" for p in memory.phases if p is not peak)
    if others:
        lines.append(f"  other phases, on top of the baseline: {others}")
    return lines


def _describe(plan: ResourcePlan, method: str) -> list[str]:
    s, settings, layout = plan.shape, plan.settings, plan.layout
    lines = [
        f"plan: {method}, {s.kv_heads} -> {settings.groups} KV heads; {s.layers} layers, hidden {s.hidden}, "
        f"{s.heads} heads of {s.head_dim}"
    ]
    if not settings.calibrated:
        lines += _memory_lines(plan.host)
        lines.append("  (streams tensor by tensor; its time is the disk's)")
        return lines
    lines.append(
        f"calibration on {settings.device} in {settings.compute_dtype}: {layout.tokens:,} tokens as "
        f"{layout.sequences} sequences of {layout.seq_len}, batches of up to {layout.batch_sequences}"
        + (f"; {layout.kept_tokens:,} tokens kept for refine" if layout.kept_tokens else "")
    )
    for memory in (plan.device, plan.host):
        if memory is not None:
            lines += _memory_lines(memory)
    f, t = plan.flops, plan.throughput
    assert t is not None  # calibrated
    lines.append(
        f"FLOPs a layer: forward {_flops(f.forward)}, statistics {_flops(f.statistics)}, merge (float64) "
        f"{_flops(f.merge)}, refine {_flops(f.refine)}; {_flops(f.total * s.layers)} in all"
    )
    lines.append(
        f"measured here: {t.compute / 1e9:,.1f} GFLOP/s compute, {t.float64 / 1e9:,.1f} GFLOP/s float64 "
        f"({t.measured})"
    )
    lines.append(
        f"expected time: {plan.layer_seconds:,.1f} s a layer, {format_duration(plan.seconds)} for "
        f"{s.layers} layers (at those rates; plus start-up and writing the output)"
    )
    return lines


def _memory_record(memory: Memory) -> dict[str, Any]:
    return {
        "peak_bytes": memory.peak,
        "peak_phase": memory.peak_phase.name,
        "baseline": {t.name: t.bytes for t in memory.baseline},
        "phases": {
            p.name: {"bytes": p.total, "terms": {t.name: t.bytes for t in p.terms}} for p in memory.phases
        },
    }


def plan_record(plan: ResourcePlan, method: str) -> dict[str, Any]:
    """The plan as `--plan --json` prints it."""
    record: dict[str, Any] = {
        "method": method,
        "calibrated": plan.settings.calibrated,
        "device": plan.settings.device,
        "shape": {k: v for k, v in vars(plan.shape).items() if k != "layer_tensors"},
        "memory": {m.where: _memory_record(m) for m in (plan.host, plan.device) if m is not None},
    }
    if plan.throughput is not None:
        record["calibration"] = {**vars(plan.layout), "tokens": plan.layout.tokens}
        record["flops_per_layer"] = {**vars(plan.flops), "total": plan.flops.total}
        record["flops"] = plan.flops.total * plan.shape.layers
        record["throughput"] = {
            "compute_flop_per_s": plan.throughput.compute,
            "float64_flop_per_s": plan.throughput.float64,
            "measured": plan.throughput.measured,
        }
        record["seconds_per_layer"] = plan.layer_seconds
        record["seconds"] = plan.seconds
    return record


def print_plan(src: str, checked: CheckedConversion, as_json: bool) -> None:
    """Plan converting `src` as `checked` says, and print it (a table, or JSON)."""
    plan = gather_plan(src, checked)
    method = checked.steps.name
    if as_json:
        typer.echo(json.dumps(plan_record(plan, method), indent=2))
        return
    for line in _describe(plan, method):
        typer.echo(line)
