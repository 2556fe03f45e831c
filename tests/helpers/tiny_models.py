"""Tiny random models of every supported architecture, built from configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

# Shared shape: 8 query heads of 8 dims, width 64; KV heads vary per test.
BASE = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=8,
    head_dim=8,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

# What each model_type needs beyond BASE to be small, and to exercise its optional per-head parts.
OVERRIDES: dict[str, dict] = {
    "qwen2": {"use_sliding_window": False},
    "mixtral": {"num_local_experts": 2, "num_experts_per_tok": 1},
    "qwen2_moe": {
        "num_experts": 2,
        "num_experts_per_tok": 1,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
    },
    "qwen3_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32},
    "granitemoe": {"num_local_experts": 2, "num_experts_per_tok": 1},
    "olmoe": {"num_experts": 2, "num_experts_per_tok": 1},
    "phimoe": {"num_local_experts": 2, "num_experts_per_tok": 1},
    "ernie4_5_moe": {"moe_num_experts": 2, "moe_k": 1, "moe_intermediate_size": 32},
    "minimax": {
        "num_local_experts": 2,
        "num_experts_per_tok": 1,
        "layer_types": ["full_attention", "full_attention"],
    },
    "stablelm": {"qk_layernorm": True, "use_qkv_bias": True, "partial_rotary_factor": 0.5},
    "cohere": {"use_qk_norm": True},
    "starcoder2": {"use_bias": True},
    "phi": {"qk_layernorm": False, "partial_rotary_factor": 0.5},
    "gemma2": {"sliding_window": 64},
    "gemma3_text": {"sliding_window": 64},
}


def tiny_config(model_type: str, kv_heads: int = 4, **extra):
    from transformers import AutoConfig

    kwargs = {**BASE, "num_key_value_heads": kv_heads, **OVERRIDES.get(model_type, {}), **extra}
    return AutoConfig.for_model(model_type, **kwargs)


def build_tiny(
    model_type: str,
    path: Path,
    kv_heads: int = 4,
    seed: int = 0,
    max_shard_size: str | None = None,
    dtype: torch.dtype = torch.float32,
    **extra,
) -> Path:
    """Build a randomly initialised model and save it as a safetensors checkpoint at `path`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, kv_heads, **extra))
    with torch.no_grad():  # random, non-trivial values for norms and biases too
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "bias" in name):
                p.add_(torch.randn_like(p) * 0.1)
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return path
