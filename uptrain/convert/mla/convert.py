"""`--target mla`: a Llama-like checkpoint in, transformers' DeepseekV3 (all layers dense) out.

1. check the source against target.yaml and the settings (settings.py), before anything is written;
2. calibrate: the attention inputs' second moment S of every layer (the calibration pass that the
   calibrated GQA methods use, without replay);
3. choose the RoPE pairs to keep from every layer's measured contribution (rope.py: one rotary
   embedding serves the whole model);
4. stream the source into shards, each layer's q/k/v becoming MLA tensors (layer.py, write.py);
5. write config.json, side files and uptrain.json (record.py), then rename the directory to OUT.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, get_architecture, get_layout, read_dims
from uptrain.checkpoint.atomic import atomic_directory
from uptrain.checkpoint.dtypes import DTYPES, dtype_name, main_dtype
from uptrain.checkpoint.provenance import write_provenance
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.side_files import copy_side_files, write_generation_config
from uptrain.config.conversion import ConvertSection
from uptrain.convert.calibration import CalibrationSpec, Carry, LayerCalibration, collect_calibration
from uptrain.convert.methods.metric import CalibratedMetric
from uptrain.convert.mla.layer import MlaShape, mla_layer
from uptrain.convert.mla.record import FACTORS, approximations, mla_record, mla_result
from uptrain.convert.mla.rope import choose_pairs, mean_rotations, pair_scores
from uptrain.convert.mla.settings import check_mla_source
from uptrain.convert.mla.target import LATENT_NORM_EPS, load_target, rope_parameters
from uptrain.convert.mla.write import plan_mla, write_mla
from uptrain.convert.record import ConversionResult
from uptrain.convert.stream import Progress


def check_mla_conversion(
    source: SourceCheckpoint, settings: ConvertSection
) -> tuple[Architecture, AttentionDims]:
    """The source checked for `--target mla` (one-line errors); its architecture and dimensions."""
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    check_mla_source(source.config, source.names(), dims, settings, load_target())
    return arch, dims


class _SecondMoments:
    """The calibration pass's sink: keeps each layer's E[x~ x~^T] and nothing else."""

    def __init__(self) -> None:
        self.moments: dict[int, torch.Tensor] = {}
        self.distances: dict[int, torch.Tensor | None] = {}

    def resume(self) -> Carry | None:
        return None

    def finish(self, layer: int, calibration: LayerCalibration, carry: Carry) -> None:
        self.moments[layer] = calibration.second_moment
        self.distances[layer] = calibration.distances


def _attention(source: SourceCheckpoint, arch: Architecture, dims: AttentionDims, layer: int) -> Any:
    layout = get_layout(arch.layout)
    names = layout.layer_tensors(arch, dims, layer, set(source.names()))
    return layout.to_heads(arch, dims, layer, {n: source.load(n) for n in names}).to(torch.float64)


def convert_mla(
    source: SourceCheckpoint,
    out: Path,
    settings: ConvertSection,
    spec: CalibrationSpec,
    overwrite: bool = False,
    progress: Progress | None = None,
    calibration_progress: Any = None,
    extra_record: dict[str, Any] | None = None,
) -> ConversionResult:
    """Convert `source` to DeepseekV3's MLA as `settings` say (checked: check_mla_settings), writing
    OUT atomically."""
    started = time.perf_counter()
    arch, dims = check_mla_conversion(source, settings)
    target, rank, rope = load_target(), settings.kv_lora_rank, settings.qk_rope_dim
    assert rank is not None and rope is not None  # checked
    sink = _SecondMoments()
    calibrated = time.perf_counter()
    tokens = collect_calibration(source, spec, sink, None, calibration_progress)
    calibration = {**spec.record(), "tokens": tokens, "seconds": round(time.perf_counter() - calibrated, 2)}
    metrics = {i: CalibratedMetric(m) for i, m in sink.moments.items()}
    base = float(rope_parameters(source.config).get("rope_theta", 10000.0))
    rotations = {i: mean_rotations(d, base, dims.head_dim) for i, d in sink.distances.items()}
    scores = torch.stack(
        [pair_scores((a := _attention(source, arch, dims, i)).q, a.k, metrics[i].gram(False), rotations[i])
         for i in range(dims.layers)]
    )  # fmt: skip
    pairs, share = choose_pairs(scores, rope)
    shape = MlaShape(rank, pairs, settings.mla_factor, LATENT_NORM_EPS)
    plan = plan_mla(source, arch, dims, rank, rope, DTYPES[settings.dtype] if settings.dtype else None)
    figures: dict[str, list[float]] = {}

    def layer_tensors(layer: int) -> dict[str, torch.Tensor]:
        norm = source.load(target.input_norm.format(layer=layer))
        attn = _attention(source, arch, dims, layer)
        tensors, fig = mla_layer(attn, shape, metrics.pop(layer), norm, rotations[layer])
        for key, value in fig.items():
            figures.setdefault(key, []).append(float(f"{value:.4g}"))
        return {f"{arch.prefix(layer)}.{n}": t for n, t in tensors.items()}

    weights = main_dtype((t.dtype, t.shape) for shard in plan.outputs for t in shard)
    assert weights is not None
    config = target.config(source.config, dims, rank, rope, pairs, dtype_name(weights))
    with atomic_directory(out, overwrite) as tmp:
        write_mla(plan, source, tmp, layer_tensors, progress)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if "generation_config.json" not in copy_side_files(source.root, tmp):
            write_generation_config(tmp, config)
        details = {
            "model_type_after": target.model_type,
            "kv_lora_rank": rank,
            "qk_rope_dim": rope,
            "method": f"mla {settings.mla_factor}",
            "mla_factor": FACTORS[settings.mla_factor],
            "rope_pairs": pairs.pairs,
            "rope_parameters": config["rope_parameters"],
            "approximations": approximations(dims, rank, pairs, share, settings.mla_factor),
            "dtype": settings.dtype or "unchanged",
            "calibration": calibration,
            "layer_figures": {
                k: {"mean": float(f"{sum(v) / len(v):.4g}"), "layers": v} for k, v in figures.items()
            },
            **(extra_record or {}),
        }
        record = mla_record(started, source, dims, details)
        write_provenance(tmp, record)
    written = (plan.total_bytes, plan.tensor_count)
    return mla_result(out, source, dims, config, weights, started, written, record)
