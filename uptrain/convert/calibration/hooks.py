"""Hooks on one layer's attention module that take what the calibrated methods need from its
calls: the inputs' second moments (float64, (hidden+1)^2 numbers whatever the token count), the
moments of the inputs as each query mixes them (where the module returns its attention
probabilities), and the first batches' inputs with the module's other arguments, kept for `refine`
to replay. LayerAccumulator watches one stream (the source's); PairedAccumulator, for sequential
calibration, pairs the converted stream's input with the source's.
"""

from __future__ import annotations

from typing import Any

import torch

from uptrain.convert.calibration.stats import Moments, ReplayBatch, add_distances, add_mixed, replay_kwargs


class Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class LayerAccumulator:
    """Hooks on one attention module: its inputs' moments, the moments of the inputs as each query
    mixes them (where the module returns its attention probabilities), replayable batches."""

    def __init__(self, hidden: int, device: torch.device) -> None:
        self.inputs = Moments(hidden, device)
        self.mixed = Moments(hidden, device)
        self.distances: torch.Tensor | None = None  # attention mass per query-key distance
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
            self.distances = add_distances(self.distances, probs)


class PairedAccumulator:
    """Hooks on layer l's attention: first `capture` the converted stream's input x~ (and stop),
    then run the source stream, accumulating E[x~ x~^T], E[x x~^T] and x~ as the source's
    attention mixes it."""

    def __init__(self, hidden: int, device: torch.device) -> None:
        self.converted = Moments(hidden, device)
        self.mixed = Moments(hidden, device)
        self.cross = torch.zeros(
            hidden + 1, hidden + 1, dtype=torch.float64, device=device
        )  # sum [x;1][x~;1]^T
        self.rotary_dim: int | None = None
        self.replay: list[ReplayBatch] = []
        self.capture = True
        self.keep = False
        self._x_conv: torch.Tensor | None = None

    def before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = (args[0] if args else kwargs["hidden_states"]).detach().to(torch.float32)
        if self.capture:
            self._x_conv = hidden
            raise Stop
        xs, xc = hidden.reshape(-1, hidden.shape[-1]), self._x_conv.reshape(-1, hidden.shape[-1])
        ones = torch.ones(xs.shape[0], 1, device=xs.device)
        self.converted.add(xc.T @ xc, xc.sum(0), xc.shape[0])
        self.cross += (torch.cat([xs, ones], 1).T @ torch.cat([xc, ones], 1)).double()
        if self.rotary_dim is None:
            cos = (kwargs.get("position_embeddings") or (None,))[0]
            self.rotary_dim = 0 if cos is None else int(cos.shape[-1])
        if self.keep:
            rest = replay_kwargs(kwargs)
            self.replay.append(ReplayBatch(self._x_conv.clone(), rest, teacher_hidden=hidden.clone()))

    def after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is not None and probs.dim() == 4:
            add_mixed(self.mixed, probs, self._x_conv)
