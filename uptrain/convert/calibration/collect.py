"""The calibration pass: run the source model on calibration text and keep, per layer, only what
the calibrated methods need.

Forward pre-hooks on every layer's attention module see its input x (after the input norm) and
accumulate E[x~ x~^T] with x~ = [x; 1] in float64: (hidden+1)^2 numbers per layer, whatever the
token count. Query, key and value statistics all follow from it and the weights (metric.py). For
`refine`, the attention inputs of the first `keep_tokens` tokens are kept as they are, with the
other arguments the module got (RoPE cos/sin, mask), so it can be replayed layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims
from uptrain.convert.calibration.modules import AttentionModules
from uptrain.convert.calibration.stats import (
    LayerCalibration,
    Moments,
    ReplayBatch,
    add_mixed,
    calibration_batches,
    replay_kwargs,
)


class _LayerAccumulator:
    """Hooks on one attention module: its inputs' moments, the moments of the inputs as each query
    mixes them (where the module returns its attention probabilities), replayable batches."""

    def __init__(self, hidden: int, device: torch.device) -> None:
        self.inputs = Moments(hidden, device)
        self.mixed = Moments(hidden, device)
        self.rotary_dim: int | None = None
        self.replay: list[ReplayBatch] = []
        self.keep = False
        self._hidden: torch.Tensor | None = None

    def before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = (args[0] if args else kwargs["hidden_states"]).detach().to(torch.float32)
        flat = hidden.reshape(-1, hidden.shape[-1])
        self.inputs.add(flat.T @ flat, flat.sum(0), flat.shape[0])
        self._hidden = hidden
        if self.rotary_dim is None:
            cos = (kwargs.get("position_embeddings") or (None,))[0]
            self.rotary_dim = 0 if cos is None else int(cos.shape[-1])
        if self.keep:
            rest = replay_kwargs(kwargs)
            self.replay.append(ReplayBatch(hidden.clone(), rest))

    def after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        hidden, self._hidden = self._hidden, None
        if probs is not None and hidden is not None and probs.dim() == 4:
            add_mixed(self.mixed, probs, hidden)


@torch.no_grad()
def collect_statistics(
    model: Any,
    arch: Architecture,
    dims: AttentionDims,
    config: dict,
    sequences: torch.Tensor,
    keep_sequences: int = 0,
    progress: Callable[[int, int], None] | None = None,
    keep_batch_tokens: int = 512,
) -> dict[int, LayerCalibration]:
    """Run `model` on `sequences` (N, T) and return each layer's calibration. The first
    `keep_sequences` sequences' attention inputs are kept for replay, in batches of about
    `keep_batch_tokens`. The model runs with eager
    attention (which returns the probabilities the hooks read); replays use its own. The model runs
    where it is, in its dtype; the hooks take its attention inputs in float32 and keep the replayed
    batches on that device (refine runs there)."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    device = next(model.parameters()).device
    accumulators = [_LayerAccumulator(dims.hidden, device) for _ in range(dims.layers)]
    handles = []
    for i, acc in enumerate(accumulators):
        module = model.get_submodule(arch.prefix(i))
        handles.append(module.register_forward_pre_hook(acc.before, with_kwargs=True))
        handles.append(module.register_forward_hook(acc.after, with_kwargs=True))
    batches = calibration_batches(sequences, keep_sequences, keep_batch_tokens)
    try:
        for done, (batch, keep) in enumerate(batches):
            for acc in accumulators:
                acc.keep = keep
            model(input_ids=batch.to(device), use_cache=False, logits_to_keep=1)
            if progress:
                progress(done + 1, len(batches))
    finally:
        for handle in handles:
            handle.remove()
        model.set_attn_implementation(implementation)
    normalized = arch.normalizes_keys(config)
    return {
        i: LayerCalibration(
            second_moment=acc.inputs.matrix(),
            mixed_moment=acc.mixed.matrix(),
            tokens=acc.inputs.count,
            rope=arch.rope,
            rotary_dim=0 if arch.rope == "none" else (acc.rotary_dim or 0),
            keys_normalized=normalized,
            replay=acc.replay,
            modules=AttentionModules.of(model, arch, dims, i, implementation),
        )
        for i, acc in enumerate(accumulators)
    }
