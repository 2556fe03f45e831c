"""Calibrated methods on a model_type that translates (gpt_neox, gptj, codegen -> phi): translate
exactly first, at G = H with `mean` (which at G = H changes nothing), into a temporary checkpoint
beside OUT (`.OUT.uptrain-translated`), then run the calibrated conversion on that. The calibration
pass, the layer replay and every method then see the target's own class and layout; the translated
model computes the source's function, so the statistics are the source's. The translation is kept
until OUT is written, so an interrupted conversion resumes (partial.py) from the same files; a
rerun reuses it when it was made from the same source with the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uptrain.architectures import Route
from uptrain.checkpoint.provenance import read_provenance, write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint, find_weight_shards
from uptrain.convert.checked import CheckedConversion
from uptrain.convert.partial import fingerprint, source_files
from uptrain.errors import SettingError

TRANSLATED_SUFFIX = ".uptrain-translated"


def calibrates_after_translation(route: Route) -> bool:
    """Whether the route translates (every translation in the table can at G = H), so a calibrated
    method runs on the translation (gpt2 -> gpt_bigcode: MHA, then MQA from it)."""
    return route.translating


def convert_translated_first(
    convert: Callable[..., Any],
    source: SourceCheckpoint,
    out: Path,
    checked: CheckedConversion,
    route: Route,
    overwrite: bool = False,
    progress: Any = None,
    calibration_progress: Any = None,
    extra_record: dict[str, Any] | None = None,
) -> Any:
    """`convert` (convert_checkpoint) twice: source -> its exact translation at G = H with `mean`,
    then that -> OUT with the caller's checked settings. The result and uptrain.json name the real source."""
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.parent / f".{out.name}{TRANSLATED_SUFFIX}"  # kept until OUT is written: a rerun resumes
    started = time.perf_counter()
    exact = dataclasses.replace(checked.settings, groups=route.dims.heads, method="mean", dtype=None)
    key = fingerprint(source.provenance, source.config, source_files(source), exact)
    if not (root / "key").is_file() or (root / "key").read_text() != key:
        convert(source, root, exact, overwrite=True)
        (root / "key").write_text(key)  # after the translation is whole (written atomically)
    config = json.loads((root / "config.json").read_text())
    translated = SourceCheckpoint(
        config, find_weight_shards(root), root, dict(source.provenance)
    )  # names the real source
    step = {
        "model_type": route.source.model_type,
        "to": route.target.model_type,
        "seconds": round(time.perf_counter() - started, 2),
    }
    extra = {"translated_first": step, **(extra_record or {})}
    try:
        result = convert(translated, out, checked, overwrite, None, progress, calibration_progress, extra)
    except SettingError:  # these settings cannot convert it: nothing worth resuming
        shutil.rmtree(root, ignore_errors=True)
        raise
    shutil.rmtree(root, ignore_errors=True)
    record = read_provenance(out)
    record.pop("uptrain_version", None)
    record.setdefault("source", {})["model_type"] = route.source.model_type
    record.setdefault("conversion", {})["layout_before"] = route.source_variant.name
    write_provenance(out, record)
    return dataclasses.replace(result, model_type=route.source.model_type, record=record)
