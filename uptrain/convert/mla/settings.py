"""`--target mla`'s settings checked before anything is read (one-line SettingError each), and its
source checked against target.yaml before anything is written."""

from __future__ import annotations

import torch

from uptrain.architectures import AttentionDims
from uptrain.config.conversion import ConvertSection
from uptrain.convert.calibration import CalibrationSpec, calibration_spec
from uptrain.convert.mla.target import MlaTarget
from uptrain.errors import SettingError


def check_mla_settings(settings: ConvertSection, device: torch.device) -> CalibrationSpec:
    """The settings of a conversion to MLA that need no source; its calibration pass (MLA always
    calibrates: the RoPE pairs are chosen, and the shared RoPE key fitted, on measured inputs)."""
    if settings.groups is not None:
        raise SettingError(
            "<groups> applies to target gqa; target mla caches one latent of <kv_lora_rank> numbers "
            "and a <qk_rope_dim> key per layer instead (leave <groups> out)"
        )
    if settings.method != "mean":
        raise SettingError(
            f"<method> {settings.method} applies to target gqa; target mla's factoring is <mla_factor> "
            "(care or svd)"
        )
    if settings.kv_lora_rank is None or settings.kv_lora_rank < 1:
        raise SettingError("target mla needs <kv_lora_rank> R >= 1, the latent's size")
    rope = settings.qk_rope_dim
    if rope is None or rope < 2 or rope % 2:
        raise SettingError("target mla needs <qk_rope_dim> D, an even number >= 2 (RoPE rotates pairs)")
    if settings.dtype == "fp16":
        raise SettingError(
            "target mla keeps its latent far below kv_a_layernorm's eps (so the norm is linear), which "
            "fp16 cannot represent; use <dtype> bf16 or fp32"
        )
    return calibration_spec(settings, device)


def check_mla_source(config: dict, names: list[str], dims: AttentionDims, settings: ConvertSection,
                     target: MlaTarget) -> None:  # fmt: skip
    """Whether this source can become DeepseekV3 with these settings; a one-line error if not."""
    model_type = config.get("model_type")
    if model_type not in target.sources:
        raise SettingError(
            f"target mla converts {', '.join(target.sources)} (separate q/k/v/o without biases, no "
            f"q/k norms, rotate_half RoPE over the whole head); {model_type} is not one of them; use "
            "<target> gqa"
        )
    reason = target.refusal(config, names)
    if reason:
        raise SettingError(f"target mla cannot hold this {model_type}: {reason}; use <target> gqa")
    hd, kv = dims.head_dim, dims.kv_heads
    rope, rank = settings.qk_rope_dim, settings.kv_lora_rank
    assert rope is not None and rank is not None  # check_mla_settings
    if rope > hd or hd % 2:
        raise SettingError(f"<qk_rope_dim> {rope} must be at most the head's {hd} dims")
    full = kv * (2 * hd - rope)
    if rank > full:
        raise SettingError(
            f"<kv_lora_rank> {rank} exceeds the rank of [K_nope; V] ({kv} KV heads x (2 x {hd} - {rope}) "
            f"= {full}); choose at most {full}"
        )
