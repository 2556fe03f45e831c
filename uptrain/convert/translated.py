"""Calibrated methods on a model_type that translates (gpt_neox, gptj, codegen -> phi): translate
exactly first, at G = H with `mean` (which at G = H changes nothing), into a temporary checkpoint
beside OUT, then run the calibrated conversion on that. The calibration pass, the layer replay and
every method then see the target's own class and layout; the translated model computes the
source's function, so the statistics are the source's. The temporary copy is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uptrain.architectures import Route
from uptrain.checkpoint.provenance import read_provenance, write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint, find_weight_shards
from uptrain.convert.checked import CheckedConversion


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
    tmp = out.parent / f".{out.name}.uptrain-tmp-{os.getpid()}-{secrets.token_hex(4)}"  # atomic.py's form
    started = time.perf_counter()
    try:
        exact = dataclasses.replace(checked.settings, groups=route.dims.heads, method="mean", dtype=None)
        convert(source, tmp / "translated", exact)
        root = tmp / "translated"  # OUT's record names the real source
        config = json.loads((root / "config.json").read_text())
        translated = SourceCheckpoint(config, find_weight_shards(root), root, dict(source.provenance))
        step = {
            "model_type": route.source.model_type,
            "to": route.target.model_type,
            "seconds": round(time.perf_counter() - started, 2),
        }
        extra = {"translated_first": step, **(extra_record or {})}
        result = convert(translated, out, checked, overwrite, None, progress, calibration_progress, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = read_provenance(out)
    record.pop("uptrain_version", None)
    record.setdefault("source", {})["model_type"] = route.source.model_type
    record.setdefault("conversion", {})["layout_before"] = route.source_variant.name
    write_provenance(out, record)
    return dataclasses.replace(result, model_type=route.source.model_type, record=record)
