"""Streaming conversion: source checkpoint in, checkpoint with G key/value heads out.

1. plan: run each layer's transform on meta tensors to learn every output name, dtype and shape;
2. allocate the output shards (safetensors headers written, space reserved) in a temporary dir;
3. stream: read tensors one at a time; a layer's attention is converted as a whole when its first
   tensor comes up; every result is written at its planned place. A model_type that translates
   (gpt2 -> gpt_bigcode) is read through its tensor rules (renamed, dropped, transposed) and its
   attention written in the target's layout;
4. write the index, config.json, side files and uptrain.json, then rename the directory to OUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uptrain.architectures import (
    Architecture,
    AttentionDims,
    AttentionWeights,
    Route,
    get_layout,
    output_config,
    plan_route,
)
from uptrain.architectures.kv_cache import kv_cache_bytes_per_token
from uptrain.architectures.rope_order import to_target_rope
from uptrain.checkpoint.atomic import atomic_directory, check_output_free
from uptrain.checkpoint.provenance import now, write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.side_files import copy_side_files, side_files
from uptrain.checkpoint.writer import PlannedTensor, ShardWriter
from uptrain.convert.calibration import CalibrationSpec, collect_calibration
from uptrain.convert.methods import ConversionMethod, MethodContext, MethodOptions, get_method, parse_method
from uptrain.convert.pooling import map_kv
from uptrain.convert.tensor_rules import RuledSource, TensorRules
from uptrain.convert.translated import calibrates_after_translation, convert_translated_first
from uptrain.errors import UptrainError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MAX_SEED = 2**32 - 1  # what every RNG involved (torch, numpy, random) accepts
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def _shapes_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    """What every method returns, as far as shapes go: `groups` KV heads, the rest unchanged."""
    return map_kv(attn, lambda x: x.new_empty((groups, *x.shape[1:])))


# Planning runs on the meta device. Only shapes matter there, and arithmetic on meta tensors (mean,
# clone) goes through torch's Python reference kernels, whose first use imports sympy and
# torch._dynamo: seconds of start-up. Empty tensors of the right shape cost nothing.
SHAPES = ConversionMethod("shapes", _shapes_layer, "planning only: output shapes, no arithmetic")


@dataclass
class ConversionPlan:
    route: Route
    view: RuledSource  # the source's tensors under the name as the output has it
    layer_tensors: dict[int, list[str]]  # source attention tensors of each layer
    layer_of: dict[str, int]
    shard_files: list[str]
    outputs: list[list[PlannedTensor]]  # per output shard

    @property
    def arch(self) -> Architecture:
        return self.route.source

    @property
    def dims(self) -> AttentionDims:
        return self.route.dims

    @property
    def groups(self) -> int:
        return self.route.groups

    @property
    def output_of(self) -> dict[str, int]:
        return {t.name: i for i, shard in enumerate(self.outputs) for t in shard}


@dataclass
class ConversionResult:
    out: Path
    model_type: str
    target_model_type: str
    dims: AttentionDims
    groups: int
    method: str
    dtype: str
    seconds: float
    bytes_written: int
    tensors: int
    kv_bytes_per_token_before: int
    kv_bytes_per_token_after: int
    record: dict[str, Any] = field(default_factory=dict)


def _output_dtype(dtype: torch.dtype, target: torch.dtype | None) -> torch.dtype:
    return target if target is not None and dtype.is_floating_point else dtype


def _shard_file_names(n: int) -> list[str]:
    return (
        ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )


def _convert_heads(
    source_tensors: dict[str, torch.Tensor],
    plan: ConversionPlan,
    layer: int,
    method: ConversionMethod,
    ctx: MethodContext,
) -> dict[str, torch.Tensor]:
    route = plan.route
    converted = getattr(ctx.calibration, "converted", None)  # done during sequential calibration
    if converted is None:
        reader = get_layout(route.source_variant.layout)
        attn = reader.to_heads(route.source, route.dims, layer, source_tensors).to(torch.float32)
        attn = to_target_rope(route, plan.view.source.config, attn)
        converted = _run_method(method, attn, route.groups, ctx)
    writer = get_layout(route.target_variant.layout)
    return writer.from_heads(route.target, route.dims, layer, converted)


def _run_method(method: ConversionMethod, attn: Any, groups: int, ctx: MethodContext) -> Any:
    new = method.convert_layer(attn, groups, ctx)
    if new.kv_heads != groups:
        raise AssertionError(f"method {method.name} returned {new.kv_heads} KV heads, not {groups}")
    return new


def plan_conversion(
    source: SourceCheckpoint, groups: int, dtype: torch.dtype | None = None
) -> ConversionPlan:
    """Every output tensor's name, dtype, shape and shard, learned by converting on the meta device."""
    route = plan_route(source.config, groups)
    arch, dims = route.source, route.dims
    view = RuledSource(source, TensorRules(arch.translate))
    layout = get_layout(route.source_variant.layout)
    names = view.names()
    available = set(names)
    layer_tensors = {i: layout.layer_tensors(arch, dims, i, available) for i in range(dims.layers)}
    layer_of = {name: i for i, ns in layer_tensors.items() for name in ns}
    plan = ConversionPlan(route, view, layer_tensors, layer_of, _shard_file_names(len(source.shards)), [])
    outputs: list[list[PlannedTensor]] = [[] for _ in source.shards]
    done_layers: set[int] = set()
    for name in names:
        home = view.shard_index(name)
        if name not in layer_of:
            meta = view.meta(name)
            outputs[home].append(PlannedTensor(name, _output_dtype(meta.dtype, dtype), meta.shape))
            continue
        layer = layer_of[name]
        if layer in done_layers:
            continue
        done_layers.add(layer)
        fakes = {}
        for n in layer_tensors[layer]:
            meta = view.meta(n)
            fakes[n] = torch.empty(meta.shape, dtype=meta.dtype, device="meta")
        ctx = MethodContext(arch=arch, dims=dims, layer=layer)
        for out_name, t in _convert_heads(fakes, plan, layer, SHAPES, ctx).items():
            src_dtype = (
                view.meta(out_name).dtype if out_name in available else fakes[layer_tensors[layer][0]].dtype
            )
            target = home if out_name not in available else view.shard_index(out_name)
            outputs[target].append(PlannedTensor(out_name, _output_dtype(src_dtype, dtype), tuple(t.shape)))
    plan.outputs = outputs
    return plan


def converted_config(config: dict, route: Route, dtype: str | None) -> dict:
    """config.json for the output: the target's model_type and variant flags, G KV heads, head_dim.
    The source's auto_map goes: the output is in the layout of a model_type that transformers has
    built in, and custom code written for the source's MHA shapes is never pointed at by OUT."""
    new = output_config(route, config)
    if dtype:
        new["dtype"] = dtype
        if "torch_dtype" in new:
            new["torch_dtype"] = dtype
    new.pop("quantization_config", None)
    new.pop("auto_map", None)
    return new


def _check_not_nested(source: SourceCheckpoint, out: Path) -> None:
    if source.root is None:
        return
    src, dst = source.root.resolve(), Path(os.path.abspath(out))
    if dst == src or src in dst.parents:
        raise UptrainError(f"OUT {out} is inside SRC {src}; choose an output outside the source directory")
    if dst in src.parents:
        raise UptrainError(
            f"SRC {src} is inside OUT {out}; choose an output that does not contain the source"
        )


def _check_space(out: Path, needed: int) -> None:
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise UptrainError(
            f"the output needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free on {parent}; "
            "free space or choose another output"
        )


def convert_checkpoint(
    source: SourceCheckpoint,
    out: Path,
    groups: int,
    method: str = "mean",
    dtype: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    calibration: dict[int, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    extra_record: dict[str, Any] | None = None,
    calibration_spec: CalibrationSpec | None = None,
    method_options: MethodOptions | None = None,
    calibration_progress: Callable[[int, int], None] | None = None,
) -> ConversionResult:
    """Convert `source` to `groups` KV heads with `method` (a spec such as "similar+fit+refine"),
    writing OUT atomically. Calibrated methods use `calibration` (per-layer, as collected by
    uptrain.convert.calibration) or collect it first from `calibration_spec` (default: WikiText-2
    train split)."""
    started = time.perf_counter()
    out = Path(out)
    options = method_options or MethodOptions()
    conversion = get_method(method, options)
    steps = parse_method(method)
    if dtype is not None and dtype not in DTYPES:
        raise UptrainError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not 0 <= seed <= MAX_SEED:
        raise UptrainError(f"--seed {seed} must be between 0 and {MAX_SEED}")
    target = DTYPES[dtype] if dtype else None
    plan = plan_conversion(source, groups, target)
    _check_not_nested(source, out)
    side_files(source.root)  # a link out of SRC is refused before any work
    check_output_free(out, overwrite)
    total = sum(t.nbytes for shard in plan.outputs for t in shard)
    _check_space(out, total)
    init_std = float(source.config.get(plan.arch.config.init_std) or 0.02)
    output_of = plan.output_of
    count = sum(len(s) for s in plan.outputs)
    calibration_record: dict[str, Any] = {}
    reports: dict[int, dict[str, float]] = {}
    if (
        conversion.needs_calibration
        and calibration is None
        and calibrates_after_translation(plan.route, source.config)
    ):
        return convert_translated_first(
            convert_checkpoint, source, out, groups, plan.route, extra_record, method=method, dtype=dtype,
            seed=seed, overwrite=overwrite, progress=progress, calibration_spec=calibration_spec,
            method_options=method_options, calibration_progress=calibration_progress,
        )  # fmt: skip
    if conversion.needs_calibration and plan.route.translating:  # calibration given, of the source's class
        raise UptrainError(
            f"--method {method} with calibration collected from {plan.arch.model_type}'s own class cannot "
            f"rebuild its attention as {plan.route.target.model_type}; let uptrain calibrate (no "
            "calibration argument) or use --method mean (or first, random)"
        )
    if conversion.needs_calibration and calibration is None:
        spec = calibration_spec or CalibrationSpec()
        if "refine" in steps:
            spec = dataclasses.replace(spec, keep_tokens=min(options.refine_tokens, spec.tokens))
        calibrating = time.perf_counter()

        def convert_during_calibration(layer: int, attn: Any, cal: Any) -> Any:
            ctx = MethodContext(
                plan.arch, plan.dims, layer, seed, init_std, cal, reports.setdefault(layer, {})
            )
            return _run_method(conversion, attn, groups, ctx)

        calibration = collect_calibration(source, spec, calibration_progress, convert_during_calibration)
        calibration_record = {
            **spec.record(),
            "tokens": next(iter(calibration.values())).tokens,
            "seconds": round(time.perf_counter() - calibrating, 2),
        }
    calibration = None if calibration is None else dict(calibration)  # entries are dropped as used

    # Pooling, first and random are a few passes over memory per tensor: one thread keeps up with the
    # disk, and more only wait for each other on a busy machine (measured on 2 shared cores: 21 s
    # instead of 31 s for a 2.5 GB checkpoint). Calibrated methods keep torch's thread count.
    threads = None if conversion.needs_calibration else 1
    with atomic_directory(out, overwrite) as tmp, _torch_threads(threads):
        writers: list[ShardWriter] = []
        try:
            for file, tensors in zip(plan.shard_files, plan.outputs, strict=True):
                writers.append(ShardWriter(tmp / file, tensors))
            written = 0
            done_layers: set[int] = set()
            for name in plan.view.names():
                if name in plan.layer_of:
                    layer = plan.layer_of[name]
                    if layer in done_layers:
                        continue
                    done_layers.add(layer)
                    tensors = {n: plan.view.load(n) for n in plan.layer_tensors[layer]}
                    ctx = MethodContext(
                        arch=plan.arch,
                        dims=plan.dims,
                        layer=layer,
                        seed=seed,
                        init_std=init_std,
                        calibration=None if calibration is None else calibration.get(layer),
                        report=reports.setdefault(layer, {}),
                    )
                    results = _convert_heads(tensors, plan, layer, conversion, ctx)
                    if calibration is not None:
                        calibration.pop(layer, None)  # its replayed inputs are no longer needed
                else:
                    results = {name: plan.view.load(name)}
                for out_name in list(results):
                    writer = writers[output_of[out_name]]
                    writer.write(out_name, results.pop(out_name).to(writer.planned[out_name].dtype))
                    written += 1
                    if progress:
                        progress(written, count)
            for writer in writers:
                writer.close()
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        _write_index(tmp, plan, total)
        dtype_name = dtype and DTYPE_NAMES[target]
        config = converted_config(source.config, plan.route, dtype_name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        copy_side_files(source.root, tmp)
        extra = {
            **_method_record(conversion, steps, options, calibration_record, reports),
            **(extra_record or {}),
        }
        record = _record(started, source, plan, conversion.name, seed, dtype_name, extra)
        write_provenance(tmp, record)

    source_dtype = plan.view.meta(plan.layer_tensors[0][0]).dtype  # what the model runs and caches in
    out_dtype = target or source_dtype
    dims, route = plan.dims, plan.route
    return ConversionResult(
        out=out,
        model_type=plan.arch.model_type,
        target_model_type=route.target.model_type,
        dims=dims,
        groups=groups,
        method=conversion.name,
        dtype=DTYPE_NAMES.get(out_dtype, str(out_dtype)),
        seconds=time.perf_counter() - started,
        bytes_written=total,
        tensors=count,
        kv_bytes_per_token_before=kv_cache_bytes_per_token(
            dims.layers, route.cached_kv_heads_before, dims.head_dim, source_dtype
        ),
        kv_bytes_per_token_after=kv_cache_bytes_per_token(
            dims.layers, route.cached_kv_heads_after, dims.head_dim, out_dtype
        ),
        record=record,
    )


def _method_record(
    conversion: ConversionMethod,
    steps: list[str],
    options: MethodOptions,
    calibration: dict[str, Any],
    reports: dict[int, dict[str, float]],
) -> dict[str, Any]:
    """What uptrain.json says about the method: its steps, options, calibration and, where the
    method noted them, per-layer figures (with their mean)."""
    if not conversion.needs_calibration:
        return {}
    figures: dict[str, Any] = {}
    for key in sorted({k for r in reports.values() for k in r}):
        values = [reports[i][key] for i in sorted(reports) if key in reports[i]]
        figures[key] = {
            "mean": float(f"{sum(values) / len(values):.4g}"),
            "layers": [float(f"{v:.4g}") for v in values],
        }
    return {
        "method_steps": steps,
        "method_options": options.record(steps),
        "calibration": calibration or {"data": "given by the caller"},
        **({"layer_figures": figures} if figures else {}),
    }


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to n (None: unchanged) inside the block."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_index(tmp: Path, plan: ConversionPlan, total: int) -> None:
    if len(plan.shard_files) == 1:
        return
    weight_map = {
        t.name: file for file, tensors in zip(plan.shard_files, plan.outputs, strict=True) for t in tensors
    }
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _record(
    started: float,
    source: SourceCheckpoint,
    plan: ConversionPlan,
    method: str,
    seed: int,
    dtype: str | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    dims, route = plan.dims, plan.route
    return {
        "created": now(),
        "source": {**source.provenance, "model_type": plan.arch.model_type},
        "conversion": {
            "model_type_after": route.target.model_type,
            "layout_before": route.source_variant.name,
            "layout_after": route.target_variant.name,
            "heads": dims.heads,
            "kv_heads_before": dims.kv_heads,
            "kv_heads_after": plan.groups,
            "groups": plan.groups,
            "head_dim": dims.head_dim,
            "layers": dims.layers,
            "method": method,
            "seed": seed,
            "dtype": dtype or "unchanged",
            "seconds": round(time.perf_counter() - started, 2),
            **(extra or {}),
        },
    }
