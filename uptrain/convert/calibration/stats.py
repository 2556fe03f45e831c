"""What calibration keeps per layer: running second moments, replayable batches, the result type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from uptrain.convert.calibration.modules import AttentionModules

BATCH_TOKENS = 2048  # tokens per forward pass
MIXED_STRIDE = 4  # every 4th query position's attention mix of the inputs is accumulated
NOT_REPLAYED = ("past_key_values", "past_key_value")  # module arguments a replay leaves out


@dataclass
class ReplayBatch:
    """One batch of a layer's attention inputs, as the module was called."""

    hidden_states: torch.Tensor  # (batch, seq, hidden) float32
    kwargs: dict[str, Any]  # position_embeddings, attention_mask, ...
    teacher_hidden: torch.Tensor | None = None  # the source's input, where it differs (sequential)


@dataclass
class LayerCalibration:
    second_moment: torch.Tensor  # (in + 1, in + 1) float64: E[x~ x~^T], x~ = [x; 1]
    mixed_moment: torch.Tensor | None  # the same for xbar = sum_t a_t x_t, each query's mix (eager only)
    tokens: int
    rope: str  # the table's RoPE pairing: half, interleaved or none
    rotary_dim: int  # head dims RoPE rotates (partial rotary: fewer than head_dim)
    keys_normalized: bool  # a norm follows k_proj (the table's qk_norm, on in this config)
    replay: list[ReplayBatch] = field(default_factory=list)
    modules: AttentionModules | None = None
    cross_moment: torch.Tensor | None = None  # sequential: E[x~_src x~^T], source input against these
    converted: Any = None  # sequential: the layer's converted AttentionWeights, made during calibration
    distances: torch.Tensor | None = None  # (T,) attention mass at each query-key distance (eager only)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # derived data (factors)


def replay_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A module call's arguments as a replay keeps them: without the hidden states and the cache, and
    floating-point tensors (RoPE cos/sin, an additive mask) in float32, as the replayed modules are
    (the source may run in bf16 on a GPU)."""

    def as_float32(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(torch.float32)
        if isinstance(value, tuple):
            return tuple(as_float32(v) for v in value)
        return value

    return {k: as_float32(v) for k, v in kwargs.items() if k != "hidden_states" and k not in NOT_REPLAYED}


class Moments:
    """Running E[x~ x~^T] with x~ = [x; 1], accumulated in float64 on the device the forward pass
    runs on (nothing crosses to the CPU per batch); `matrix` is on the CPU."""

    def __init__(self, hidden: int, device: torch.device | str = "cpu") -> None:
        self.xx = torch.zeros(hidden, hidden, dtype=torch.float64, device=device)
        self.x = torch.zeros(hidden, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, xx: torch.Tensor, x: torch.Tensor, count: int) -> None:
        self.xx += xx.double()
        self.x += x.double()
        self.count += count

    def matrix(self) -> torch.Tensor | None:
        if not self.count:
            return None
        n = self.xx.shape[0]
        s = torch.empty(n + 1, n + 1, dtype=torch.float64)
        s[:n, :n], s[:n, n], s[n, :n], s[n, n] = self.xx.cpu(), self.x.cpu(), self.x.cpu(), self.count
        return s / self.count


def add_mixed(moments: Moments, probs: torch.Tensor, hidden: torch.Tensor) -> None:
    """Accumulate xbar = sum_t a_t x_t for every head and every MIXED_STRIDE-th query position.
    probs: (B, H, T, T) attention probabilities, hidden: (B, T, in)."""
    rows = probs[:, :, ::MIXED_STRIDE].to(torch.float32)  # (B, H, T/stride, T)
    for b in range(hidden.shape[0]):  # sum_i,m xbar xbar^T = X^T (sum_i,m a^T a) X
        a = rows[b].reshape(-1, rows.shape[-1])
        x = hidden[b]
        moments.add(x.T @ ((a.T @ a) @ x), a.sum(0) @ x, a.shape[0])


def add_distances(total: torch.Tensor | None, probs: torch.Tensor) -> torch.Tensor:
    """Add the attention mass at each query-key distance d = m - n (summed over batch, heads and
    queries) of probs (B, H, T, T) to `total` (float64, as long as the longest sequence seen)."""
    mass = probs.detach().to(torch.float64).sum((0, 1))  # (T, T)
    found = torch.stack([mass.diagonal(-d).sum() for d in range(mass.shape[0])]).cpu()
    if total is None:
        return found
    if total.numel() < found.numel():
        total = torch.cat([total, total.new_zeros(found.numel() - total.numel())])
    total[: found.numel()] += found
    return total


def calibration_batches(
    sequences: torch.Tensor, keep_sequences: int, keep_batch_tokens: int = BATCH_TOKENS
) -> list[tuple[torch.Tensor, bool]]:
    """About BATCH_TOKENS tokens per batch; the first `keep_sequences` sequences (those replayed)
    in batches of their own of about `keep_batch_tokens` (a replay batch is one `refine` step).
    Each batch comes with whether it is kept."""
    per_batch = max(1, BATCH_TOKENS // sequences.shape[1])
    per_kept = max(1, keep_batch_tokens // sequences.shape[1])
    kept, rest = sequences[:keep_sequences], sequences[keep_sequences:]
    batches = [(b, True) for b in kept.split(per_kept)] + [(b, False) for b in rest.split(per_batch)]
    return [(b, keep) for b, keep in batches if len(b)]
