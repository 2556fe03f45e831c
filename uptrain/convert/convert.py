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

from uptrain.architectures import Route
from uptrain.checkpoint.atomic import atomic_directory, check_output_free
from uptrain.checkpoint.dtypes import DTYPE_NAMES, DTYPES, dtype_name
from uptrain.checkpoint.provenance import write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.side_files import copy_side_files, side_files, write_generation_config
from uptrain.config.conversion import ConvertSection
from uptrain.convert.calibrated import LayerReports, calibrate, check_calibrated_layout, method_record
from uptrain.convert.checked import CheckedConversion, check_conversion
from uptrain.convert.methods import MethodContext
from uptrain.convert.mla.convert import check_mla_conversion, convert_mla
from uptrain.convert.partial import PartialConversion, fingerprint, source_files
from uptrain.convert.plan import ConversionPlan, converted_config, output_dtype, plan_conversion
from uptrain.convert.record import ConversionResult, conversion_result, provenance_record
from uptrain.convert.stream import Progress, write_converted
from uptrain.convert.translated import calibrates_after_translation, convert_translated_first
from uptrain.errors import SettingError, UptrainError
from uptrain.threads import torch_threads


def convert_checkpoint(
    source: SourceCheckpoint,
    out: Path,
    settings: ConvertSection | CheckedConversion,
    overwrite: bool = False,
    calibration: dict[int, Any] | None = None,
    progress: Progress | None = None,
    calibration_progress: Callable[[int, int], None] | None = None,
    extra_record: dict[str, Any] | None = None,
    route: Route | None = None,
) -> ConversionResult:
    """Convert `source` as `settings` say, writing OUT atomically. Calibrated methods use
    `calibration` (per layer, as uptrain.convert.calibration collects it) or collect it first.
    Settings are checked here unless they come checked (check_conversion), as commands pass them."""
    started = time.perf_counter()
    out = Path(out)
    checked = check_conversion(settings)
    settings, method = checked.settings, checked.method
    if settings.target == "mla":
        return _convert_mla(source, out, checked, overwrite, progress, calibration_progress, extra_record)
    target = DTYPES[settings.dtype] if settings.dtype else None
    plan = plan_conversion(source, settings.groups, target, route)  # route: planned at a command's door
    first = method.needs_calibration and calibration is None and calibrates_after_translation(plan.route)
    if not first:  # a translating model is calibrated on its translation (translated.py)
        check_calibrated_layout(plan, method, settings.method)
    _check_not_nested(source, out)
    side_files(source.root)  # a link out of SRC is refused before any work
    check_output_free(out, overwrite)
    _check_space(out, plan.total_bytes)
    if first:
        return convert_translated_first(
            convert_checkpoint, source, out, checked, plan.route, overwrite, progress, calibration_progress,
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
    state: PartialConversion | None = None
    if method.needs_calibration and calibration is None:
        assert checked.calibration is not None  # a calibrated method has its pass
        state = PartialConversion(out, _state_key(source, checked, plan))
        try:
            calibration_record = calibrate(
                plan, source, method, checked.calibration, context, state, calibration_progress
            )
        except SettingError:  # the method cannot convert this model: nothing worth resuming
            state.remove()
            raise
        reports.update({i: state.report(i) for i in range(plan.dims.layers)})  # resumed layers' too
    calibration = None if calibration is None else dict(calibration)  # entries are dropped as used

    # Pooling, first and random are a few passes over memory per tensor: one thread keeps up with the
    # disk, and more only wait for each other on a busy machine (measured on 2 shared cores: 21 s
    # instead of 31 s for a 2.5 GB checkpoint). Calibrated methods keep torch's thread count.
    threads = None if method.needs_calibration else 1
    with atomic_directory(out, overwrite) as tmp, torch_threads(threads):
        finished = state.load_layer if state else None  # layers the calibration pass converted
        write_converted(plan, tmp, method, context, calibration, progress, finished)
        asked_dtype = settings.dtype and DTYPE_NAMES[target]
        weights = output_dtype(plan)
        config = converted_config(source.config, plan.route, weights and dtype_name(weights))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if "generation_config.json" not in copy_side_files(source.root, tmp):
            write_generation_config(tmp, config)
        extra = {**method_record(checked.steps, calibration_record, reports), **(extra_record or {})}
        record = provenance_record(started, source, plan, method.name, settings.seed, asked_dtype, extra)
        write_provenance(tmp, record)
    if state:
        state.remove()
    return conversion_result(out, plan, method.name, target, started, record)


def _convert_mla(
    source: SourceCheckpoint, out: Path, checked: CheckedConversion, overwrite: bool, progress: Any,
    calibration_progress: Any, extra_record: dict[str, Any] | None,
) -> ConversionResult:  # fmt: skip
    """`--target mla` (mla/convert.py), after the same checks of OUT as any conversion."""
    assert checked.calibration is not None  # MLA always calibrates
    check_mla_conversion(source, checked.settings)
    _check_not_nested(source, out)
    side_files(source.root)
    check_output_free(out, overwrite)
    return convert_mla(
        source, out, checked.settings, checked.calibration, overwrite, progress, calibration_progress,
        extra_record,
    )  # fmt: skip


def _state_key(source: SourceCheckpoint, checked: CheckedConversion, plan: ConversionPlan) -> str:
    """What a resumed calibrated conversion must share with the one that stopped: the source (its
    files as they are now), the settings, the calibration pass, the output's layout."""
    files = source_files(source)
    outputs = [(t.name, str(t.dtype), t.shape) for shard in plan.outputs for t in shard]
    return fingerprint(
        source.provenance, source.config, files, checked.settings, checked.calibration, outputs
    )


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


__all__ = [
    "CheckedConversion",
    "ConversionPlan",
    "ConversionResult",
    "check_conversion",
    "convert_checkpoint",
]
