"""What a conversion reports: the provenance record written to OUT/uptrain.json and the result the
caller prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uptrain.architectures import AttentionDims, output_config
from uptrain.architectures.kv_cache import cached_kv_bytes_per_token
from uptrain.checkpoint.dtypes import DTYPE_NAMES
from uptrain.checkpoint.provenance import now
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.plan import ConversionPlan


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


def provenance_record(
    started: float,
    source: SourceCheckpoint,
    plan: ConversionPlan,
    method: str,
    seed: int,
    dtype: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """uptrain.json of the output: the source, and the conversion with its settings and timing."""
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
            **extra,
        },
    }


def conversion_result(
    out: Path, plan: ConversionPlan, method: str, target_dtype: Any, started: float, record: dict[str, Any]
) -> ConversionResult:
    """The result of a finished conversion, with the KV-cache bytes per token before and after."""
    source_dtype = plan.view.meta(plan.layer_tensors[0][0]).dtype  # what the model runs and caches in
    out_dtype = target_dtype or source_dtype
    dims, route, config = plan.dims, plan.route, plan.view.source.config
    return ConversionResult(
        out=out,
        model_type=plan.arch.model_type,
        target_model_type=route.target.model_type,
        dims=dims,
        groups=plan.groups,
        method=method,
        dtype=DTYPE_NAMES.get(out_dtype, str(out_dtype)),
        seconds=time.perf_counter() - started,
        bytes_written=plan.total_bytes,
        tensors=plan.tensor_count,
        kv_bytes_per_token_before=cached_kv_bytes_per_token(
            config, source_dtype, dims.layers, dims.kv_heads, dims.head_dim
        ),
        kv_bytes_per_token_after=cached_kv_bytes_per_token(
            output_config(route, config), out_dtype, dims.layers, route.groups, dims.head_dim
        ),
        record=record,
    )
