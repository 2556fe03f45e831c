"""The calibration pass as the converter calls it: tokenize, then walk the source layer by layer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from uptrain.architectures import get_architecture, read_dims
from uptrain.checkpoint.loading import load_tokenizer
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.calibration.inputs import CalibrationSpec, calibration_token_ids
from uptrain.convert.calibration.layerwise import ConvertLayer, LayerSink, walk_layers
from uptrain.convert.calibration.skeleton import Skeleton
from uptrain.errors import SettingError, UptrainError


def calibration_sequences(source: SourceCheckpoint, spec: CalibrationSpec) -> tuple[torch.Tensor, int]:
    """The calibration text as (N, seq_len) token ids, in the source's tokenizer, and how many of
    those sequences are kept for replay."""
    if spec.tokens < 1 or spec.seq_len < 2:
        raise SettingError("<calibration_tokens> must be at least 1 and <calibration_seq_len> at least 2")
    tokenizer = load_tokenizer(source.root or source.model_path)
    ids = calibration_token_ids(tokenizer, spec.data, spec.tokens, spec.skip_tokens)
    seq_len = min(spec.seq_len, len(ids))
    if seq_len < 2:
        raise UptrainError(f"{spec.data.describe()} has too little text to calibrate on; pass more text")
    sequences = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    keep = min(len(sequences), math.ceil(spec.keep_tokens / seq_len)) if spec.keep_tokens else 0
    return sequences, keep


def collect_calibration(
    source: SourceCheckpoint,
    spec: CalibrationSpec,
    sink: LayerSink,
    convert_layer: ConvertLayer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Calibrate every layer of `source` on the text `spec` names, one layer at a time from its
    shards, handing each to `sink`. With spec.sequential, layers are converted during calibration
    with `convert_layer(layer, weights, calibration)`, each on the partly converted model's inputs.
    Returns the number of calibration tokens."""
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    sequences, keep = calibration_sequences(source, spec)
    skeleton = Skeleton(source, arch, dims, spec.dtype)
    sequential = convert_layer if spec.sequential else None
    walk_layers(
        skeleton,
        sequences,
        keep,
        sink,
        torch.device(spec.device),
        sequential,
        progress,
        spec.keep_batch_tokens,
    )
    return sequences.numel()
