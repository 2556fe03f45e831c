"""The calibration pass as the converter calls it: tokenize, load the source, collect per layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from uptrain.architectures import get_architecture, read_dims
from uptrain.checkpoint.loading import load_tokenizer
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.calibration.collect import collect_statistics
from uptrain.convert.calibration.inputs import CalibrationSpec, calibration_token_ids, load_source_model
from uptrain.convert.calibration.sequential import collect_sequential
from uptrain.convert.calibration.stats import LayerCalibration
from uptrain.errors import SettingError, UptrainError


def collect_calibration(
    source: SourceCheckpoint,
    spec: CalibrationSpec,
    progress: Callable[[int, int], None] | None = None,
    convert_layer: Any = None,
) -> dict[int, LayerCalibration]:
    """Tokenize the calibration text with the source's tokenizer and collect every layer's
    calibration from the source model. With spec.sequential and a `convert_layer(layer, weights,
    calibration)`, layers are converted during calibration, each on the partly converted model's
    inputs (sequential.py)."""
    if spec.tokens < 1 or spec.seq_len < 2:
        raise SettingError("<calibration_tokens> must be at least 1 and <calibration_seq_len> at least 2")
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    tokenizer = load_tokenizer(source.root or source.model_path)
    ids = calibration_token_ids(tokenizer, spec.data, spec.tokens, spec.skip_tokens)
    seq_len = min(spec.seq_len, len(ids))
    if seq_len < 2:
        raise UptrainError(f"{spec.data.describe()} has too little text to calibrate on; pass more text")
    sequences = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    keep = min(len(sequences), math.ceil(spec.keep_tokens / seq_len)) if spec.keep_tokens else 0
    model = load_source_model(source, spec.device, spec.dtype)
    if spec.sequential and convert_layer is not None:
        return collect_sequential(
            model, arch, dims, source.config, sequences, keep, convert_layer, progress, spec.keep_batch_tokens
        )
    batch = spec.keep_batch_tokens
    return collect_statistics(model, arch, dims, source.config, sequences, keep, progress, batch)
