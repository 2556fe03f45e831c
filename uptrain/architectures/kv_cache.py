"""KV-cache size: the formula, and a measurement of what a model's cache really holds."""

from __future__ import annotations

import inspect
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
