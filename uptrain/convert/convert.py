"""Streaming conversion: source checkpoint in, checkpoint with G key/value heads out.

1. check the settings and plan: every output tensor's name, dtype and shape (plan.py);
2. calibrated methods: run the source model on calibration text first (calibrated.py);
3. allocate the output shards in a temporary directory and stream the tensors into them
   (stream.py); a model_type that translates (gpt2 -> gpt_bigcode) is read through its tensor rules;
4. write config.json, side files and uptrain.json (record.py), then rename the directory to OUT.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uptrain.checkpoint.atomic import atomic_directory, check_output_free
from uptrain.checkpoint.devices import resolve_device
from uptrain.checkpoint.dtypes import DTYPE_NAMES, DTYPES, dtype_name
from uptrain.checkpoint.provenance import write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.side_files import copy_side_files, side_files, write_generation_config
from uptrain.config.conversion import ConvertSection
from uptrain.config.load import MAX_SEED
from uptrain.convert.calibrated import (
    LayerReports,
    calibrate,
    check_calibrated_layout,
    check_refine_settings,
    method_options,
    method_record,
    spec_of,
)
from uptrain.convert.methods import ConversionMethod, MethodContext, get_method
from uptrain.convert.plan import ConversionPlan, converted_config, output_dtype, plan_conversion
from uptrain.convert.record import ConversionResult, conversion_result, provenance_record
from uptrain.convert.stream import Progress, write_converted
from uptrain.convert.translated import calibrates_after_translation, convert_translated_first
from uptrain.errors import SettingError, UptrainError
from uptrain.threads import torch_threads


def check_settings(settings: ConvertSection) -> ConversionMethod:
    """The settings that need no source, checked before anything is read; returns the method."""
    if settings.groups is None:
        raise SettingError("<groups> is required; set the number of KV heads to keep")
    if settings.dtype is not None and settings.dtype not in DTYPES:
        raise SettingError(f"<dtype> {settings.dtype!r} is not one of {', '.join(DTYPES)}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise SettingError(f"<seed> {settings.seed} must be between 0 and {MAX_SEED}")
    resolve_device(settings.device)  # a GPU this machine lacks is an error before anything is read
    method = get_method(settings.method, method_options(settings))
    if "refine" in method.name.split("+"):
        check_refine_settings(settings)
    if method.needs_calibration:
        spec_of(settings)  # calibration numbers
    return method


def convert_checkpoint(
    source: SourceCheckpoint,
    out: Path,
    settings: ConvertSection,
    overwrite: bool = False,
    calibration: dict[int, Any] | None = None,
    progress: Progress | None = None,
    calibration_progress: Callable[[int, int], None] | None = None,
    extra_record: dict[str, Any] | None = None,
) -> ConversionResult:
    """Convert `source` as `settings` say, writing OUT atomically. Calibrated methods use
    `calibration` (per layer, as uptrain.convert.calibration collects it) or collect it first."""
    started = time.perf_counter()
    out = Path(out)
    method = check_settings(settings)
    target = DTYPES[settings.dtype] if settings.dtype else None
    plan = plan_conversion(source, settings.groups, target)
    first = method.needs_calibration and calibration is None and calibrates_after_translation(plan.route)
    if not first:  # a translating model is calibrated on its translation (translated.py)
        check_calibrated_layout(plan, method, settings.method)
    _check_not_nested(source, out)
    side_files(source.root)  # a link out of SRC is refused before any work
    check_output_free(out, overwrite)
    _check_space(out, plan.total_bytes)
    if first:
        return convert_translated_first(
            convert_checkpoint, source, out, settings, plan.route, overwrite, progress, calibration_progress,
            extra_record,
        )  # fmt: skip
    init_std = float(source.config.get(plan.arch.config.init_std) or 0.02)
    reports: LayerReports = {}

    def context(layer: int, cal: Any = None) -> MethodContext:
        if cal is None and calibration is not None:
            cal = calibration.get(layer)
        report = reports.setdefault(layer, {})
        return MethodContext(plan.arch, plan.dims, layer, settings.seed, init_std, cal, report)

    calibration_record: dict[str, Any] = {}
    if method.needs_calibration and calibration is None:
        calibration, calibration_record = calibrate(
            plan, source, method, settings, context, calibration_progress
        )
    calibration = None if calibration is None else dict(calibration)  # entries are dropped as used

    # Pooling, first and random are a few passes over memory per tensor: one thread keeps up with the
    # disk, and more only wait for each other on a busy machine (measured on 2 shared cores: 21 s
    # instead of 31 s for a 2.5 GB checkpoint). Calibrated methods keep torch's thread count.
    threads = None if method.needs_calibration else 1
    with atomic_directory(out, overwrite) as tmp, torch_threads(threads):
        write_converted(plan, tmp, method, context, calibration, progress)
        asked_dtype = settings.dtype and DTYPE_NAMES[target]
        weights = output_dtype(plan)
        config = converted_config(source.config, plan.route, weights and dtype_name(weights))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if "generation_config.json" not in copy_side_files(source.root, tmp):
            write_generation_config(tmp, config)
        options = method_options(settings)
        extra = {**method_record(method, options, calibration_record, reports), **(extra_record or {})}
        record = provenance_record(started, source, plan, method.name, settings.seed, asked_dtype, extra)
        write_provenance(tmp, record)
    return conversion_result(out, plan, method.name, target, started, record)


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


__all__ = ["ConversionPlan", "ConversionResult", "check_settings", "convert_checkpoint"]
