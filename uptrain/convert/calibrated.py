"""The calibrated path: what a calibrated method (similar, aligned, fit, refine) needs before the
streaming loop -- the calibration pass over the source model -- and what uptrain.json says of it."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from uptrain.config.conversion import ConvertSection
from uptrain.config.methods import ComposedMethod, Refine
from uptrain.convert.calibration import CalibrationSpec, calibration_spec, collect_calibration
from uptrain.convert.calibration.layerwise import Carry
from uptrain.convert.methods import ConversionMethod, MethodContext
from uptrain.convert.partial import PartialConversion
from uptrain.convert.plan import ConversionPlan, convert_heads, run_method
from uptrain.errors import SettingError

LayerReports = dict[int, dict[str, float]]  # per-layer figures the methods note (errors before/after)


def refine_precision(setting: str, device: torch.device | None = None) -> str:
    """`refine_precision` resolved: auto is bf16 on a GPU, and on the CPU where it multiplies bf16 in
    hardware (AMX) and torch may use it (cpu_uses_amx)."""
    if setting != "auto":
        return setting
    if device is not None and device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_uses_amx() else "fp32"


def cpu_uses_amx() -> bool:
    """Whether torch's CPU kernels run on AMX: the CPU has it (torch's own CPUID test) and neither
    ATEN_CPU_CAPABILITY nor ONEDNN_MAX_CPU_ISA limits torch below it (as when emulating an AVX2 CPU:
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is None or not amx():
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return isa in ("ALL", "DEFAULT") or "AMX" in isa


def check_calibrated_layout(plan: ConversionPlan, method: ConversionMethod, spec: str) -> None:
    """Calibration collected from a translating model's own class (a caller's) cannot rebuild its
    attention as the target's: uptrain calibrates such a model on its translation instead
    (translated.py). Other layout changes are handled by the attention modules (calibration/modules.py)."""
    if method.needs_calibration and plan.route.translating:
        raise SettingError(
            f"<method> {spec} with calibration collected from {plan.arch.model_type}'s own class cannot "
            f"rebuild its attention as {plan.route.target.model_type}; let uptrain calibrate (no "
            "calibration argument) or use <method> mean (or first, random)"
        )


class _ConvertingSink:
    """What the calibration pass hands each layer to: convert it (unless sequential calibration
    already did) and keep the output tensors, with the method's figures, in the partial state."""

    def __init__(
        self,
        plan: ConversionPlan,
        method: ConversionMethod,
        context: Callable[[int, Any], MethodContext],
        state: PartialConversion,
        device: torch.device,
    ) -> None:
        self.plan, self.method, self.context, self.state, self.device = plan, method, context, state, device
        self.dtypes = {t.name: t.dtype for shard in plan.outputs for t in shard}

    def resume(self) -> Carry | None:
        return self.state.carry(self.device)

    def finish(self, layer: int, calibration: Any, carry: Carry) -> None:
        tensors = {n: self.plan.view.load(n) for n in self.plan.layer_tensors[layer]}
        ctx = self.context(layer, calibration)
        with torch.enable_grad():  # refine trains
            outputs = convert_heads(tensors, self.plan, layer, self.method, ctx)
        outputs = {n: t.to(self.dtypes[n]) for n, t in outputs.items()}
        self.state.save_layer(layer, outputs, ctx.report or {})
        self.state.save_carry(carry)


def calibrate(
    plan: ConversionPlan,
    source: Any,
    method: ConversionMethod,
    spec: CalibrationSpec,
    context: Callable[[int, Any], MethodContext],
    state: PartialConversion,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the calibration pass `spec` describes, converting each layer as it is calibrated into
    `state` (resuming where a run with the same key stopped); return the record of the pass."""
    started = time.perf_counter()

    def convert_during_calibration(layer: int, attn: Any, cal: Any) -> Any:
        return run_method(method, attn, plan.groups, context(layer, cal))

    state.open()
    sink = _ConvertingSink(plan, method, context, state, torch.device(spec.device))
    tokens = collect_calibration(source, spec, sink, convert_during_calibration, progress)
    record = {**spec.record(), "tokens": tokens, "seconds": round(time.perf_counter() - started, 2)}
    if state.resumed_from:
        record["resumed_after_layer"] = state.resumed_from
    return record


def calibration_of(
    settings: ConvertSection, method: ComposedMethod, device: torch.device
) -> CalibrationSpec | None:
    """The calibration pass a calibrated method asks for (None for mean, first, random) on `device`
    (resolved): the calibration_* settings, and the tokens refine keeps to replay."""
    if not method.calibrates:
        return None
    spec = calibration_spec(settings, device)
    refine: Refine | None = method.find(Refine)
    if refine is not None:
        spec = dataclasses.replace(
            spec, keep_tokens=min(refine.tokens, spec.tokens), keep_batch_tokens=refine.batch_tokens
        )
    return spec


def method_record(
    method: ComposedMethod, calibration: dict[str, Any], reports: LayerReports
) -> dict[str, Any]:
    """What uptrain.json says about a calibrated method: its steps, options, calibration and, where
    the method noted them, per-layer figures (with their mean)."""
    if not method.calibrates:
        return {}
    figures: dict[str, Any] = {}
    for key in sorted({k for r in reports.values() for k in r}):
        values = [reports[i][key] for i in sorted(reports) if key in reports[i]]
        figures[key] = {
            "mean": float(f"{sum(values) / len(values):.4g}"),
            "layers": [float(f"{v:.4g}") for v in values],
        }
    return {
        "method_steps": [s.name for s in method.steps],
        "method_options": method.options(),
        "calibration": calibration or {"data": "given by the caller"},
        **({"layer_figures": figures} if figures else {}),
    }
