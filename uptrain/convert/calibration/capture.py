"""What each decoder layer is called with: one pass of the embeddings per batch, through a model
whose layers hold no weights yet. For that pass every decoder layer's forward is replaced by one
that records its arguments (RoPE cos/sin, the mask of its attention type, ...) and hands its input
on unchanged; the model's own code builds them, whatever the family."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from uptrain.convert.calibration.hooks import Stop
from uptrain.convert.calibration.skeleton import Skeleton
from uptrain.convert.calibration.stats import NOT_REPLAYED

LayerArguments = list[list[dict[str, Any]]]  # [layer][batch] -> the layer's keyword arguments


@torch.no_grad()
def layer_arguments(
    skeleton: Skeleton, batches: list[tuple[torch.Tensor, bool]], device: torch.device
) -> tuple[LayerArguments, list[torch.Tensor]]:
    """Every decoder layer's call arguments for every batch, and the first layer's inputs (in the
    model's dtype). The embeddings must be loaded."""
    decoders = skeleton.decoders()
    arguments: LayerArguments = [[{} for _ in batches] for _ in decoders]
    first: list[torch.Tensor] = []
    current = 0

    def recorder(i: int):  # noqa: ANN202
        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            hidden = args[0] if args else kwargs["hidden_states"]
            arguments[i][current] = {
                k: v for k, v in kwargs.items() if k not in ("hidden_states", *NOT_REPLAYED)
            }
            if i == 0:
                first.append(hidden.detach())
            if i == len(decoders) - 1:
                raise Stop
            return hidden

        return forward

    for i, decoder in enumerate(decoders):
        decoder.forward = recorder(i)
    try:
        for current, (batch, _) in enumerate(batches):  # noqa: B007 - read by the recorders
            with contextlib.suppress(Stop):
                skeleton.model(input_ids=batch.to(device), use_cache=False, logits_to_keep=1)
    finally:
        for decoder in decoders:
            del decoder.forward  # the class's forward again
    return arguments, first
