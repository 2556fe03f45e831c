"""The payoff of fewer KV heads: KV-cache bytes, and decode speed with the cache.

`kv_cost` measures what a model's cache really holds per token (uptrain.architectures.kv_cache) at
the dtype the model runs in, and scales it to batch x context (sliding-window layers would hold less at long
contexts; the figure is per token times tokens). `decode_throughput` prefills `batch` random
prompts of `context` tokens, then times `new_tokens` greedy steps of one token each through the
transformers cache (DynamicCache), as generation does. The same seeded prompt is used for every
model, so two models' tokens/s compare like for like. With `prefill="random"` the cache is filled
with random keys and values of the shapes a prefill leaves (`random_cache`) instead: decoding does
the same work over it, and long contexts at large batches cost seconds instead of a CPU's minutes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from uptrain.architectures.kv_cache import (
    cache_keyword,
    kv_cache_tensors,
    measure_kv_cache_elements_per_token,
    output_cache,
)
from uptrain.checkpoint.positions import max_positions
from uptrain.errors import UptrainError
from uptrain.evaluate.scoring import accepts_logits_to_keep, model_device

PREFILLS = ("model", "random")


@dataclass(frozen=True)
class KVCost:
    bytes_per_token: int
    batch: int
    context: int

    @property
    def bytes(self) -> int:
        return self.bytes_per_token * self.batch * self.context

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes": self.bytes}


@dataclass(frozen=True)
class DecodeResult:
    batch: int
    context: int
    new_tokens: int  # timed steps per sequence
    seconds: float
    prefill_seconds: float  # the prefill (or the random cache) and one warm-up step
    tokens_per_s: float  # batch * new_tokens / seconds
    generated: list[list[int]]  # the greedy tokens, for checking against model.generate (after a
    # random prefill, the first is the prompt's last token)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "generated"}


def kv_cost(model: Any, batch: int = 1, context: int = 2048) -> KVCost:
    element = torch.empty((), dtype=model.dtype).element_size()
    return KVCost(measure_kv_cache_elements_per_token(model) * element, batch, context)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def random_cache(model: Any, batch: int, context: int) -> Any:
    """A DynamicCache holding `context` positions of random keys and values for each of `batch`
    sequences, shaped as the model's own cache (learned from a one-token forward pass)."""
    from transformers import DynamicCache

    probe = torch.zeros(batch, 1, dtype=torch.long, device=model_device(model))
    tensors = kv_cache_tensors(output_cache(model(input_ids=probe, use_cache=True)))
    cache = DynamicCache(config=model.config)
    for layer, (k, v) in enumerate(zip(tensors[0::2], tensors[1::2], strict=True)):
        cache.update(_random_positions(k, context), _random_positions(v, context), layer)
    return cache


def _random_positions(like: torch.Tensor, context: int, block: int = 256) -> torch.Tensor:
    """(..., context, d) random normal values like `like` (..., 1, d): one random block of positions,
    tiled (drawing gigabytes of random numbers would take longer than the decoding measured)."""
    base = like.new_empty(*like.shape[:-2], min(block, context), like.shape[-1]).normal_()
    reps = -(-context // base.shape[-2])
    return base.repeat(*([1] * (base.dim() - 2)), reps, 1)[..., :context, :].contiguous()


@torch.inference_mode()
def decode_throughput(
    model: Any,
    batch: int = 1,
    context: int = 512,
    new_tokens: int = 32,
    seed: int = 0,
    prefill: str = "model",
) -> DecodeResult:
    """Greedy decoding tokens/s with the KV cache after a `context`-token prefill (run through the
    model, or random: see `random_cache`). One untimed step follows the prefill (warm-up); the next
    `new_tokens` steps are timed."""
    if prefill not in PREFILLS:
        raise ValueError(f"prefill must be one of {PREFILLS}, not {prefill!r}")
    if batch < 1 or context < 1 or new_tokens < 1:
        raise UptrainError("--kv-batch, --kv-context and --decode-tokens must be at least 1")
    limit = max_positions(model)
    if limit is not None and context + new_tokens + 1 > limit:
        raise UptrainError(
            f"--kv-context {context} plus {new_tokens + 1} decoded tokens exceeds the model's {limit} "
            f"positions; use --kv-context {max(1, limit - new_tokens - 1)} or less"
        )
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(
        0, model.config.get_text_config().vocab_size, (batch, context), generator=generator
    )
    _synchronize(device)
    start = time.perf_counter()
    if prefill == "random":
        cache, token = random_cache(model, batch, context), prompt[:, -1:].to(device)
    else:
        keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        out = model(input_ids=prompt.to(device), use_cache=True, **keep)
        cache, token = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
    generated = [token]
    keyword = cache_keyword(model)
    out = model(input_ids=token, use_cache=True, **{keyword: cache})  # warm-up step
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    generated.append(token)
    _synchronize(device)
    prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=token, use_cache=True, **{keyword: output_cache(out)})
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        generated.append(token)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return DecodeResult(
        batch=batch,
        context=context,
        new_tokens=new_tokens,
        seconds=seconds,
        prefill_seconds=prefill_seconds,
        tokens_per_s=batch * new_tokens / seconds,
        generated=torch.cat(generated, dim=1).tolist(),
    )
