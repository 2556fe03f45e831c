"""Sequential calibration: convert layer by layer, each from the inputs that the already converted
layers below it produce (as GPTQ does for quantization).

A converted layer's output is off by a little, so the layers above it see inputs the source never
gave them. Calibrated on the partly converted model's own inputs x~, layer l's fit can absorb
what the layers below lost: its projections are fitted to reproduce the source's W x from x~
(least squares: W E[x x~^T] E[x~ x~^T]^-1, the transfer in metric.py), in the metric of x~, and
`refine` trains it on x~ against the source's output on x.

Two streams of hidden states run through the source model one decoder layer at a time: the
source's, and the converted model's, whose layer l runs with its converted attention swapped in
once layer l is converted. So each layer is converted here, once (LayerCalibration.converted);
the streaming writer then only writes the result. Memory: both streams' hidden states for the
calibration tokens, and one layer's replayed inputs at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, AttentionWeights
from uptrain.convert.calibration.modules import AttentionModules
from uptrain.convert.calibration.stats import (
    NOT_REPLAYED,
    LayerCalibration,
    Moments,
    ReplayBatch,
    add_mixed,
    calibration_batches,
    replay_kwargs,
)

ConvertLayer = Callable[[int, AttentionWeights, LayerCalibration], AttentionWeights]


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class _PairedAccumulator:
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
            raise _Stop
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


def _layer_arguments(model: Any, decoders: list, batches: list) -> tuple[list, list[torch.Tensor]]:
    """Every decoder layer's call arguments for every batch, and the first layer's inputs."""
    arguments: list[list[dict]] = [[{} for _ in batches] for _ in decoders]
    first: list[torch.Tensor] = []
    current = 0

    def capture(i: int):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            arguments[i][current] = {
                k: v for k, v in kwargs.items() if k not in ("hidden_states", *NOT_REPLAYED)
            }
            if i == 0:
                first.append((args[0] if args else kwargs["hidden_states"]).detach())  # the model's dtype
            if i == len(decoders) - 1:
                raise _Stop

        return hook

    handles = [d.register_forward_pre_hook(capture(i), with_kwargs=True) for i, d in enumerate(decoders)]
    try:
        for current, (batch, _) in enumerate(batches):  # noqa: B007 - read by the hooks
            with contextlib.suppress(_Stop):
                model(input_ids=batch.to(model.device), use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return arguments, first


@torch.no_grad()
def collect_sequential(
    model: Any,
    arch: Architecture,
    dims: AttentionDims,
    config: dict,
    sequences: torch.Tensor,
    keep_sequences: int,
    convert_layer: ConvertLayer,
    progress: Callable[[int, int], None] | None = None,
    keep_batch_tokens: int = 512,
) -> dict[int, LayerCalibration]:
    """Convert every layer of `model` in order with `convert_layer`, each calibrated on the partly
    converted model's inputs; returns each layer's calibration with its `converted` weights."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    batches = calibration_batches(sequences, keep_sequences, keep_batch_tokens)
    attention_name = arch.prefix(0).rsplit(".", 1)[1]
    decoders = [model.get_submodule(arch.prefix(i).rsplit(".", 1)[0]) for i in range(dims.layers)]
    results: dict[int, LayerCalibration] = {}
    try:
        arguments, source = _layer_arguments(model, decoders, batches)
        converted = [h.clone() for h in source]
        for i, decoder in enumerate(decoders):
            attention = getattr(decoder, attention_name)
            acc = _PairedAccumulator(dims.hidden, model.device)
            handles = [
                attention.register_forward_pre_hook(acc.before, with_kwargs=True),
                attention.register_forward_hook(acc.after, with_kwargs=True),
            ]
            try:
                for b, (_, keep) in enumerate(batches):
                    acc.capture, acc.keep = True, keep
                    with contextlib.suppress(_Stop):
                        decoder(converted[b], **arguments[i][b])
                    acc.capture = False
                    source[b] = _hidden(decoder(source[b], **arguments[i][b]))
            finally:
                for handle in handles:
                    handle.remove()
            modules = AttentionModules.of(model, arch, dims, i, implementation)
            cal = LayerCalibration(
                second_moment=acc.converted.matrix(),
                mixed_moment=acc.mixed.matrix(),
                cross_moment=acc.cross.cpu() / acc.converted.count,
                tokens=acc.converted.count,
                rope=arch.rope,
                rotary_dim=0 if arch.rope == "none" else (acc.rotary_dim or 0),
                keys_normalized=arch.normalizes_keys(config),
                replay=acc.replay,
                modules=modules,
            )
            with torch.enable_grad():  # refine trains
                cal.converted = convert_layer(i, modules.weights(attention, dims.kv_heads), cal)
            cal.replay = []  # this layer is done: its replayed inputs are no longer needed
            setattr(decoder, attention_name, modules.build(cal.converted, dtype=model.dtype))
            try:
                for b in range(len(batches)):
                    converted[b] = _hidden(decoder(converted[b], **arguments[i][b]))
            finally:
                setattr(decoder, attention_name, attention)
            results[i] = cal
            if progress:
                progress(i + 1, dims.layers)
    finally:
        model.set_attn_implementation(implementation)
    return results
