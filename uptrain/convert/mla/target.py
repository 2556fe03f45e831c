"""target.yaml read once: which sources `--target mla` takes, what refuses one, and the DeepseekV3
config.json it writes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from uptrain.architectures import AttentionDims
from uptrain.checkpoint.serving_keys import with_architectures, with_dtype
from uptrain.convert.mla.rope import PairSet

LATENT_NORM_EPS = 1e-6  # DeepseekV3Attention builds kv_a_layernorm with RMSNorm's default eps


@dataclass(frozen=True)
class MlaTarget:
    model_type: str
    sources: tuple[str, ...]
    carried: tuple[str, ...]
    set: dict[str, Any]
    refuse_unless: dict[str, tuple[Any, str]]
    input_norm: str  # the weight of the norm in front of layer {layer}'s attention

    def refusal(self, config: dict, names: list[str]) -> str | None:
        """Why this source's attention is not one DeepseekV3 holds (None: it is)."""
        defaults = _class_defaults(config.get("model_type"))
        for key, (wanted, why) in self.refuse_unless.items():
            if config.get(key, defaults.get(key, wanted)) != wanted:
                return f"{why} ({key} = {config.get(key, defaults.get(key))})"
        biases = [n for n in names if n.endswith(".bias") and ".self_attn." in n]
        if biases:
            return f"its attention has biases ({biases[0]})"
        rope = rope_parameters(config)
        if rope.get("rope_type", "default") != "default":
            return f"its RoPE is scaled ({rope.get('rope_type')}), which the conversion does not carry over"
        if float(config.get("partial_rotary_factor", 1.0) or 1.0) != 1.0:
            return "RoPE rotates only part of its heads (partial_rotary_factor)"
        return None

    def config(self, source: dict, dims: AttentionDims, rank: int, rope: int, pairs: PairSet,
               dtype: str | None) -> dict:  # fmt: skip
        """config.json of the output: the carried keys, the MLA shape, RoPE holding `pairs`."""
        new: dict[str, Any] = {"model_type": self.model_type}
        new.update({k: source[k] for k in self.carried if k in source})
        new.update(self.set)
        base = float(rope_parameters(source).get("rope_theta", 10000.0))
        new.update(
            num_key_value_heads=dims.heads,  # unused by MLA's attention; its default is the head count
            kv_lora_rank=rank,
            qk_rope_head_dim=rope,
            qk_nope_head_dim=dims.head_dim - rope,
            v_head_dim=dims.head_dim,
            first_k_dense_replace=dims.layers,
            moe_intermediate_size=source.get("intermediate_size"),
            rope_parameters=pairs.rope_parameters(base, dims.head_dim),
        )
        new = with_dtype(new, dtype) if dtype else new
        return with_architectures(new)


def rope_parameters(config: dict) -> dict:
    """The source's RoPE settings, in transformers 5's rope_parameters form or the older keys."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        return params
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return {"rope_type": kind, "rope_theta": config.get("rope_theta", 10000.0)}


@functools.lru_cache(maxsize=8)
def _class_defaults(model_type: str | None) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type).to_dict()
    except (ValueError, KeyError):
        return {}


@functools.lru_cache(maxsize=1)
def load_target() -> MlaTarget:
    raw = yaml.safe_load(resources.files("uptrain.convert.mla").joinpath("target.yaml").read_text())
    return MlaTarget(
        model_type=raw["model_type"],
        sources=tuple(raw["sources"]),
        carried=tuple(raw["carried"]),
        set=dict(raw["set"]),
        refuse_unless={k: (v[0], v[1]) for k, v in raw["refuse_unless"].items()},
        input_norm=raw["input_norm"],
    )
