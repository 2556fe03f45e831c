"""Tiny fused-QKV models, and the test's own reading of each fused layout (from transformers' code).

`qkv_views` is written from the split code of each transformers class, not from uptrain's layouts:
  phi3 qkv_proj / multi_query c_attn and query_key_value: rows [Q | K | V]
  falcon new_decoder_architecture: view (KV, H/KV + 2, head_dim): per group [q.., k, v]
  falcon MHA / gpt_bigcode MHA: view (H, 3, head_dim): per head [q, k, v]
  gpt2 c_attn: Conv1D (in, 3 * hidden), columns [Q | K | V]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

SMALL = dict(vocab_size=96, bos_token_id=1, eos_token_id=2, pad_token_id=0)
FALCON = dict(SMALL, hidden_size=64, num_hidden_layers=2, num_attention_heads=8)
BIGCODE = dict(SMALL, n_embd=64, n_layer=2, n_head=8, n_positions=64)

SOURCES: dict[str, tuple[str, dict]] = {
    "phi3": (
        "phi3",
        dict(
            SMALL,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
    ),
    "falcon_new": ("falcon", dict(FALCON, new_decoder_architecture=True, num_kv_heads=4, bias=True)),
    "falcon_mha": ("falcon", dict(FALCON, multi_query=False, bias=True)),
    "falcon_mha_sequential_alibi": (
        "falcon",
        dict(FALCON, multi_query=False, parallel_attn=False, alibi=True),
    ),
    "falcon_multi_query": ("falcon", dict(FALCON, multi_query=True)),
    "bigcode_mha": ("gpt_bigcode", dict(BIGCODE, multi_query=False)),
    "bigcode_multi_query": ("gpt_bigcode", dict(BIGCODE, multi_query=True)),
    "gpt2": ("gpt2", dict(BIGCODE)),
}


def build_source(name: str, path: Path, **extra) -> Path:
    """A tiny random model saved as safetensors; norms and biases get non-trivial values."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, kwargs = SOURCES[name]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs, **extra))
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return path


def read_state(path: Path) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def attention_layout(config: dict) -> tuple[str, int, str, bool]:
    """(kind, KV heads, qkv weight name template, stored as Conv1D) for a config, from transformers."""
    mt = config["model_type"]
    if mt == "phi3":
        return "fused", config["num_key_value_heads"], "model.layers.{}.self_attn.qkv_proj", False
    if mt == "falcon":
        name = "transformer.h.{}.self_attention.query_key_value"
        if config["new_decoder_architecture"]:
            return "grouped", config["num_kv_heads"], name, False
        if config["multi_query"]:
            return "fused", 1, name, False
        return "interleaved", config["num_attention_heads"], name, False
    if mt == "gpt_bigcode":
        kv = 1 if config["multi_query"] else config["n_head"]
        return (
            ("fused" if config["multi_query"] else "interleaved"),
            kv,
            "transformer.h.{}.attn.c_attn",
            False,
        )
    if mt == "gpt2":
        return "fused", config["n_head"], "transformer.h.{}.attn.c_attn", True
    raise ValueError(mt)


def heads_of(config: dict) -> int:
    return config.get("num_attention_heads") or config["n_head"]


def qkv_views(kind: str, rows: torch.Tensor, H: int, KV: int, hd: int):
    """(q, k, v) of a fused matrix (rows first) or bias: q (H, hd, ...), k and v (KV, hd, ...).
    k and v are views, so writing them writes `rows`."""
    if kind == "fused":
        q, k, v = rows.split([H * hd, KV * hd, KV * hd])
        return q.unflatten(0, (H, hd)), k.unflatten(0, (KV, hd)), v.unflatten(0, (KV, hd))
    if kind == "grouped":
        g = rows.unflatten(0, (KV, H // KV + 2, hd))
        return g[:, :-2].flatten(0, 1), g[:, -2], g[:, -1]
    if kind == "interleaved":
        g = rows.unflatten(0, (H, 3, hd))
        return g[:, 0], g[:, 1], g[:, 2]
    raise ValueError(kind)


def group_mean(heads: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of each run of KV/G consecutive heads, in float64, by explicit sums."""
    r = heads.shape[0] // groups
    return torch.stack([sum(heads[g * r + i].double() for i in range(r)) / r for g in range(groups)])


def layer_qkv(state: dict, config: dict, layer: int, part: str = "weight"):
    """(q, k, v) of one layer of a saved model, read the way transformers reads them."""
    kind, kv, name, conv1d = attention_layout(config)
    H = heads_of(config)
    hd = (config.get("hidden_size") or config["n_embd"]) // H
    t = state[f"{name.format(layer)}.{part}"]
    if conv1d and part == "weight":
        t = t.T
    return qkv_views(kind, t, H, kv, hd)


def mean_expanded_state(state: dict, config: dict, groups: int) -> dict:
    """The source's weights with every K/V head replaced by the mean of its group: the MHA (or GQA)
    model that a G-head model must compute the same function as."""
    new = {n: t.clone() for n, t in state.items()}
    kind, kv, name, conv1d = attention_layout(config)
    layers = config.get("num_hidden_layers") or config["n_layer"]
    for layer in range(layers):
        for part in ("weight", "bias"):
            key = f"{name.format(layer)}.{part}"
            if key not in new:
                continue
            _, k, v = layer_qkv(new, config, layer, part)
            for view in (k, v):
                pooled = group_mean(view, groups).to(view.dtype)
                view.copy_(pooled.repeat_interleave(kv // groups, dim=0))
    return new
