"""`uptrain convert --plan`: a conversion's peak memory, FLOPs and time before it runs, from the model's
sizes and the settings (pure arithmetic: resource_memory.py counts the memory, resource_flops.py the
FLOPs; resource_inputs.py measures the baseline and the throughput they are set against).

On the CPU one memory is planned, host RAM; on a GPU two, the GPU's (where the layer runs) and host
RAM (where layers are read and the merge's float64 math runs). Uncalibrated methods (mean, first,
random) only stream: their peak is the largest tensor on top of the process.
"""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.convert.resource_flops import LayerFlops, layer_flops
from uptrain.convert.resource_memory import (
    CALIBRATION_INPUTS,
    CUDA_CONTEXT,
    FLOAT64,
    Memory,
    Phase,
    Term,
    activation_terms,
    kept_by_allocator,
    layer_terms,
    merge_terms,
    moment_bytes,
    refine_terms,
    resident,
    term,
    write_terms,
)
from uptrain.convert.resource_shapes import Layout, ModelShape, PlanSettings, calibration_layout


@dataclass(frozen=True)
class Throughput:
    """Achieved FLOP/s, measured where the plan is made."""

    compute: float  # a matrix product on the calibration device in its compute dtype
    float64: float  # a float64 matrix product on the CPU (the merge's math)
    measured: str  # what was multiplied, in words


@dataclass(frozen=True)
class ResourcePlan:
    shape: ModelShape
    settings: PlanSettings
    layout: Layout
    host: Memory
    device: Memory | None  # GPU memory, when the calibration pass runs on a GPU
    flops: LayerFlops  # per decoder layer
    throughput: Throughput | None  # None for uncalibrated methods

    @property
    def layer_seconds(self) -> float:
        if self.throughput is None:
            return 0.0
        f, t = self.flops, self.throughput
        return (f.forward + f.statistics + f.refine) / t.compute + f.merge / t.float64

    @property
    def seconds(self) -> float:
        return self.shape.layers * self.layer_seconds


def _embedding_terms(shape: ModelShape, settings: PlanSettings, on_host: bool) -> list[Term]:
    c, s = settings.compute_bytes, shape.source_bytes
    terms = [term("embeddings, compute dtype", shape.embedding_params * c)]
    if on_host and s != c:
        terms.append(term("embeddings, source copy while loading", shape.embedding_params * s))
    return terms


def _cpu_phases(shape: ModelShape, settings: PlanSettings, layout: Layout) -> tuple[Phase, ...]:
    """Everything on the CPU: the walk's phases in host RAM."""
    held = resident(shape, settings, layout, moment_bytes(shape, settings))
    capture = Phase(
        "capture", (*resident(shape, settings, layout, 0), *_embedding_terms(shape, settings, True))
    )
    calibrate = Phase(
        "calibrate",
        (*held, *layer_terms(shape, settings, True), *activation_terms(shape, settings, layout)),
    )
    kept = kept_by_allocator(calibrate)
    phases = [capture, calibrate, Phase("merge", (*held, kept, *merge_terms(shape, settings)))]
    if settings.refines:
        phases.append(Phase("refine", (*held, kept, *refine_terms(shape, settings, layout))))
    return (*phases, Phase("write", tuple(write_terms(shape, settings))))


def _gpu_phases(
    shape: ModelShape, settings: PlanSettings, layout: Layout
) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
    """(GPU memory, host RAM): the layer runs, and refine trains, on the GPU; layers are read, and the
    merge's math runs, on the host."""
    device_resident = resident(shape, settings, layout, moment_bytes(shape, settings))
    device = [
        Phase("capture", (*resident(shape, settings, layout, 0), *_embedding_terms(shape, settings, False))),
        Phase(
            "calibrate",
            (
                *device_resident,
                *layer_terms(shape, settings, False),
                *activation_terms(shape, settings, layout),
            ),
        ),
    ]
    if settings.refines:
        device.append(Phase("refine", (*device_resident, *refine_terms(shape, settings, layout))))
    loading = Phase("calibrate", tuple(layer_terms(shape, settings, True)))
    moments = Term("moments (float64, on the host for the merge)", moment_bytes(shape, settings))
    host = (
        Phase("capture", tuple(_embedding_terms(shape, settings, True))),
        loading,
        Phase("merge", (moments, kept_by_allocator(loading), *merge_terms(shape, settings))),
        Phase("write", tuple(write_terms(shape, settings))),
    )
    return tuple(device), host


def plan_resources(
    shape: ModelShape, settings: PlanSettings, baseline: int, throughput: Throughput | None
) -> ResourcePlan:
    """The plan of converting a model of `shape` with `settings`, on top of a process of `baseline`
    bytes, timed at `throughput` (None: uncalibrated, no arithmetic to time)."""
    layout = calibration_layout(settings)
    flops = layer_flops(shape, settings, layout)
    if not settings.calibrated:
        process = (Term("process (torch, transformers imported; measured)", baseline),)
        host = Memory("host RAM", process, (Phase("write", tuple(write_terms(shape, settings))),))
        return ResourcePlan(shape, settings, layout, host, None, flops, None)
    process = (
        Term("process (torch, transformers, datasets imported; measured)", baseline),
        Term("tokenizer, calibration text, loading machinery (typical)", CALIBRATION_INPUTS),
    )
    if settings.device == "cpu":
        host = Memory("host RAM", process, _cpu_phases(shape, settings, layout))
        return ResourcePlan(shape, settings, layout, host, None, flops, throughput)
    device_phases, host_phases = _gpu_phases(shape, settings, layout)
    device = Memory("GPU memory", (Term("CUDA context and kernels (typical)", CUDA_CONTEXT),), device_phases)
    host = Memory("host RAM", process, host_phases)
    return ResourcePlan(shape, settings, layout, host, device, flops, throughput)


__all__ = ["FLOAT64", "ModelShape", "PlanSettings", "ResourcePlan", "Throughput", "plan_resources"]
