"""What an MLA conversion says of itself: uptrain.json's conversion section (what is exact, what is
approximated and how, with the measured figures) and the result `uptrain convert` prints."""

from __future__ import annotations

import time
from typing import Any

import torch

from uptrain.architectures import AttentionDims
from uptrain.architectures.kv_cache import cached_elements_per_token, cached_kv_bytes_per_token
from uptrain.checkpoint.dtypes import dtype_name
from uptrain.checkpoint.provenance import now
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.mla.factor import LINEAR_TOLERANCE
from uptrain.convert.mla.rope import PairSet
from uptrain.convert.record import ConversionResult

FACTORS = {
    "care": "SVD in the metric of the calibration inputs' second moment (CARE)",
    "svd": "plain SVD of the weights (MHA2MLA's joint SVD)",
    "aware": "SVD in the calibration inputs' metric with key rows weighted by their queries' second "
    "moment and value rows by o_proj's Gram matrix, each part scaled to the same total",
}


def approximations(dims: AttentionDims, rank: int, pairs: PairSet, share: float, factor: str) -> dict:
    """What the target holds of the source, exactly or approximately, in words."""
    hd, kv, rope = dims.head_dim, dims.kv_heads, 2 * pairs.count
    full_rank = kv * (2 * hd - rope)
    exact_rope = rope == hd and kv == 1
    rope_text = (
        f"RoPE kept on {rope} of {hd} head dims ({pairs.describe()}; {share:.1%} of the measured cost of "
        "losing rotation), as one key k_pe shared by all heads: least squares per frequency pair, the "
        "heads' complex scales folded into q_proj"
    )
    if rope < hd:
        rope_text += (
            f"; the other {hd - rope} dims are no longer rotated, their query pairs scaled by the mean "
            "rotation over the attention distances measured in calibration"
        )
    rank_text = f"[K_nope; V] ({full_rank} rows over the input) factored to rank {rank} by {FACTORS[factor]}"
    return {
        "rope": ("exact: " if exact_rope else "approximated: ") + rope_text,
        "rank": ("exact: " if rank >= full_rank else "approximated: ") + rank_text,
        "latent_norm": (
            f"kv_a_layernorm made linear: the latent is scaled so that mean(c^2) <= {LINEAR_TOLERANCE:g} "
            "x eps for any input the layer's input norm can produce, and the norm's weight scales it back "
            f"(relative deviation <= {LINEAR_TOLERANCE / 2:g})"
        ),
        "exact": exact_rope and rank >= full_rank,
    }


def mla_record(
    started: float, source: SourceCheckpoint, dims: AttentionDims, details: dict[str, Any]
) -> dict[str, Any]:
    """uptrain.json of an MLA output."""
    return {
        "created": now(),
        "source": {**source.provenance, "model_type": source.config.get("model_type")},
        "conversion": {
            "target": "mla",
            "heads": dims.heads,
            "kv_heads_before": dims.kv_heads,
            "head_dim": dims.head_dim,
            "layers": dims.layers,
            **details,
            "seconds": round(time.perf_counter() - started, 2),
        },
    }


def mla_result(
    out: Any, source: SourceCheckpoint, dims: AttentionDims, config: dict, dtype: torch.dtype,
    started: float, written: tuple[int, int], record: dict[str, Any],
) -> ConversionResult:  # fmt: skip
    """The result of a finished MLA conversion; the cache bytes are measured in transformers (what
    DeepseekV3 caches: the latent and k_pe per layer and token)."""
    conversion = record["conversion"]
    try:
        after = cached_elements_per_token(config) * torch.empty((), dtype=dtype).element_size()
    except Exception:  # the class cannot run on meta: what DeepseekV3Attention caches, by its code
        per_token = conversion["kv_lora_rank"] + conversion["qk_rope_dim"]
        after = dims.layers * per_token * torch.empty((), dtype=dtype).element_size()
    source_dtype = source.meta(source.names()[0]).dtype
    before = cached_kv_bytes_per_token(source.config, source_dtype, dims.layers, dims.kv_heads, dims.head_dim)
    return ConversionResult(
        out=out,
        model_type=str(source.config.get("model_type")),
        target_model_type=config["model_type"],
        dims=dims,
        groups=1,
        method=conversion["method"],
        dtype=dtype_name(dtype),
        seconds=time.perf_counter() - started,
        bytes_written=written[0],
        tensors=written[1],
        kv_bytes_per_token_before=before,
        kv_bytes_per_token_after=after,
        record=record,
    )
