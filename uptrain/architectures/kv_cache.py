"""KV-cache size: the formula, and a measurement of what a model's cache really holds."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from typing import Any

import torch


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes of K and V cached per token: 2 x layers x KV heads x head_dim x element size.
    (Sliding-window layers cache less once the context is longer than their window.)"""
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def cache_keyword(model: Any) -> str:
    """The forward keyword that takes a cache: `cache` where the model has it (transformers 5.x
    deprecates `past_key_values`, to be removed in 5.40), else `past_key_values`."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The cache a forward pass returned, under its current name or the old one."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def kv_cache_tensors(past_key_values: Any) -> list[torch.Tensor]:
    """The key and value tensors of a transformers cache object."""
    layers = getattr(past_key_values, "layers", None)
    if layers is not None:
        return [t for layer in layers for t in (layer.keys, layer.values) if isinstance(t, torch.Tensor)]
    return [t for pair in past_key_values for t in pair]


@torch.no_grad()
def measure_kv_cache_elements_per_token(model: Any, tokens: int = 8) -> int:
    """Run `tokens` tokens through the model with a cache and count the cached numbers per token
    (multiply by the element size of the dtype the model serves in to get bytes)."""
    device = next(model.parameters()).device
    ids = torch.arange(1, tokens + 1, device=device).unsqueeze(0) % model.config.vocab_size
    out = model(input_ids=ids, use_cache=True)
    return sum(t.numel() for t in kv_cache_tensors(output_cache(out))) // tokens


def cached_elements_per_token(config: Mapping[str, Any]) -> int:
    """Numbers the installed transformers caches per token for a model with this config.json,
    measured: the model is built on the meta device (no memory, no weights) and runs a few tokens
    with a cache. What a class caches changes between releases (FalconAttention with
    new_decoder_architecture cached K/V broadcast to all H heads before transformers 5.25, G heads
    since), so no table flag decides it."""
    return _measure_on_meta(json.dumps(dict(config), sort_keys=True, default=str))


def cached_kv_bytes_per_token(
    config: Mapping[str, Any], dtype: torch.dtype, layers: int, kv_heads: int, head_dim: int
) -> int:
    """Bytes the installed transformers caches per token (cached_elements_per_token) in `dtype`;
    the formula with `kv_heads` where the class cannot run on the meta device."""
    try:
        elements = cached_elements_per_token(config)
    except Exception:  # a class with data-dependent code: the formula is the best figure left
        return kv_cache_bytes_per_token(layers, kv_heads, head_dim, dtype)
    return elements * torch.empty((), dtype=dtype).element_size()


@functools.lru_cache(maxsize=64)
def _measure_on_meta(config_json: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads(config_json)
    values.pop("quantization_config", None)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):  # bf16: the grouped-experts kernels of MoE families take nothing else
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return measure_kv_cache_elements_per_token(model, tokens=4)
