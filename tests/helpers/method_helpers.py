"""Tiny models with structured heads, calibration from random tokens, and the attention-output
error of a converted model measured with transformers' own modules (independent of uptrain)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from calibration_reference import collect_statistics
from safetensors.torch import load_file, save_file
from tiny_models import build_tiny

from uptrain.architectures import get_architecture, read_dims
from uptrain.checkpoint.source import open_source


def rotate_half_pairs(
    w: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Rows of one head (hd, n): multiply each rotate_half pair (j, j + hd/2), read as a complex
    number, by scale * e^{i angle_j}. Written out in real arithmetic, independently of uptrain."""
    half = w.shape[0] // 2
    a, b = w[:half], w[half:]
    cos, sin = (scale * torch.cos(angle)).unsqueeze(1), (scale * torch.sin(angle)).unsqueeze(1)
    return torch.cat([cos * a - sin * b, sin * a + cos * b])


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
    return q


def near_orthogonal(n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    """An orthogonal matrix `spread` away from the identity (spread 1: far from it)."""
    q, r = torch.linalg.qr(torch.eye(n) + spread * torch.randn(n, n, generator=generator))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def structured_llama(
    path: Path,
    families: int = 2,
    spread: float = 0.4,
    noise: float = 0.05,
    kv_heads: int = 8,
    seed: int = 0,
    **extra,
) -> Path:
    """A tiny Llama whose KV heads come in `families` (head h in family h % families): each head is
    its family's base K/V rows turned by a random RoPE-commuting rotation and scale (keys) or an
    orthogonal map (values), `spread` away from none, plus a little noise. Consecutive heads belong
    to different families, so mean-pooling consecutive runs mixes them."""
    build_tiny("llama", path, kv_heads=kv_heads, seed=seed, **extra)
    state = load_file(path / "model.safetensors")
    g = torch.Generator().manual_seed(seed + 1)
    config = open_source(path).config
    hd = config["head_dim"]
    for layer in range(config["num_hidden_layers"]):
        for role in ("k", "v"):
            name = f"model.layers.{layer}.self_attn.{role}_proj.weight"
            w = state[name].reshape(kv_heads, hd, -1)
            bases = [torch.randn(hd, w.shape[-1], generator=g) * w.std() for _ in range(families)]
            heads = []
            for h in range(kv_heads):
                base = bases[h % families]
                if role == "k":
                    angle = (torch.rand(hd // 2, generator=g) * 2 - 1) * math.pi * spread
                    head = rotate_half_pairs(
                        base, angle, 1 + spread * (torch.rand(1, generator=g).item() - 0.5)
                    )
                else:
                    head = near_orthogonal(hd, spread, g) @ base
                heads.append(head + noise * w.std() * torch.randn(base.shape, generator=g))
            state[name] = torch.stack(heads).reshape(-1, w.shape[-1]).contiguous()
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


def calibrate(path: Path, sequences: int = 8, length: int = 32, keep: int = 4, seed: int = 0) -> dict:
    """Calibration of the checkpoint at `path` on random token sequences."""
    from transformers import AutoModelForCausalLM

    source = open_source(path)
    arch = get_architecture(source.config["model_type"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    vocab = source.config["vocab_size"]
    ids = torch.randint(3, vocab, (sequences, length), generator=torch.Generator().manual_seed(seed))
    return collect_statistics(model, arch, read_dims(arch, source.config), source.config, ids, keep)


@torch.no_grad()
def attention_output_errors(source: Path, converted: Path, ids: torch.Tensor) -> list[float]:
    """Per layer: |attn_conv(x) - attn_src(x)|^2 / |attn_src(x)|^2 on the source model's own
    attention inputs x for `ids`, both computed by transformers' attention modules."""
    from transformers import AutoModelForCausalLM

    src = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    conv = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    calls: dict[int, tuple] = {}

    def keep(layer: int):
        def hook(module, args, kwargs, output):
            calls[layer] = (kwargs, output[0])

        return hook

    handles = [
        layer.self_attn.register_forward_hook(keep(i), with_kwargs=True)
        for i, layer in enumerate(src.model.layers)
    ]
    src(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    errors = []
    for i, layer in enumerate(conv.model.layers):
        kwargs, target = calls[i]
        out = layer.self_attn(**{k: v for k, v in kwargs.items() if k != "past_key_values"})[0]
        errors.append(float((out - target).pow(2).sum() / target.pow(2).sum()))
    return errors


def save_char_tokenizer(path: Path, vocab_size: int = 96) -> None:
    """A character-level tokenizer (printable ASCII, ids below vocab_size) saved into `path`, so a
    tiny model can be calibrated on text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)][: vocab_size - 1]
    vocab = {"<unk>": 0, **{ch: i + 1 for i, ch in enumerate(chars)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(path)
