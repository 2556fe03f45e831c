"""--verify: load source and output with transformers and compare them on a short prompt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from uptrain.architectures.kv_cache import measure_kv_cache_elements_per_token
from uptrain.checkpoint.loading import load_causal_lm

PROMPT_IDS = [1, 415, 5565, 302, 4843, 349, 5465, 28723]


@dataclass(frozen=True)
class Verification:
    max_logit_diff: float
    same_argmax: float  # fraction of positions whose top token agrees
    kv_bytes_per_token_source: int
    kv_bytes_per_token_output: int
    generated: list[int]


def _prompt(model: torch.nn.Module) -> torch.Tensor:
    vocab = model.config.vocab_size
    return torch.tensor([[i % vocab for i in PROMPT_IDS]])


@torch.no_grad()
def verify_conversion(
    source: str | Path,
    output: str | Path,
    dtype_bytes: int,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
) -> Verification:
    """Logits of source and output in float32 on the same prompt, their KV-cache bytes per token
    (at `dtype_bytes` per number), and a few greedy tokens from the output as a generation check.
    Both load with transformers' built-in classes: convert only takes model types it has, so the
    checkpoint's own code (auto_map) is never run."""
    src = load_causal_lm(source, dtype=torch.float32, gguf_file=gguf_file, allow_pickle=allow_pickle)
    ids = _prompt(src)
    src_logits = src(input_ids=ids).logits
    src_kv = measure_kv_cache_elements_per_token(src) * dtype_bytes
    del src
    out = load_causal_lm(output, dtype=torch.float32)
    out_logits = out(input_ids=ids).logits
    out_kv = measure_kv_cache_elements_per_token(out) * dtype_bytes
    generated = out.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    return Verification(
        max_logit_diff=(src_logits - out_logits).abs().max().item(),
        same_argmax=(src_logits.argmax(-1) == out_logits.argmax(-1)).float().mean().item(),
        kv_bytes_per_token_source=src_kv,
        kv_bytes_per_token_output=out_kv,
        generated=generated.tolist(),
    )
