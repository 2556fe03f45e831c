"""The calibration pass, one decoder layer at a time, as GPTQ-style quantizers calibrate: the
source model is built on the meta device (skeleton.py), each layer's call arguments are recorded
from the embeddings (capture.py), and then each layer in turn is read from the shards onto the
device, run on the hidden states carried up from the layer below, measured by hooks on its
attention (hooks.py), handed to the sink (which converts it and keeps the result), and freed.

Plain mode carries one stream: the source's hidden states. Sequential mode carries two: the
source's, and the converted model's, whose layer l runs with its converted attention swapped in
once layer l is converted, so each layer is calibrated on the inputs the converted layers below it
produce (as GPTQ does for quantization). A converted layer's output is off by a little, so the
layers above it see inputs the source never gave them. Calibrated on the partly converted model's
own inputs x~, layer l's fit can absorb what the layers below lost: its projections are fitted to
reproduce the source's W x from x~ (least squares: W E[x x~^T] E[x~ x~^T]^-1, the transfer in
metric.py), in the metric of x~, and `refine` trains it on x~ against the source's output on x.

Memory: one layer's weights, the carried hidden states of the calibration tokens (one or two
streams), one layer's replayed inputs, and that layer's statistics; the whole model never is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from uptrain.architectures import AttentionWeights
from uptrain.convert.calibration.capture import LayerArguments, layer_arguments
from uptrain.convert.calibration.hooks import LayerAccumulator, PairedAccumulator, Stop, hidden_of
from uptrain.convert.calibration.modules import AttentionModules
from uptrain.convert.calibration.skeleton import Skeleton
from uptrain.convert.calibration.stats import LayerCalibration, calibration_batches
from uptrain.heap import trim_heap

ConvertLayer = Callable[[int, AttentionWeights, LayerCalibration], AttentionWeights]


@dataclass
class Carry:
    """Where a pass is: the layers done, and the hidden states they hand to the next one."""

    done: int
    source: list[torch.Tensor]  # per batch, the source stream's input to layer `done`
    converted: list[torch.Tensor] | None = None  # sequential: the converted stream's


class LayerSink(Protocol):
    def resume(self) -> Carry | None:
        """A carry saved by an interrupted pass with the same settings, if any."""

    def finish(self, layer: int, calibration: LayerCalibration, carry: Carry) -> None:
        """Layer `layer` is calibrated (and, sequential, converted); `carry` is the state after it."""


@dataclass
class _Pass:
    skeleton: Skeleton
    batches: list[tuple[torch.Tensor, bool]]
    arguments: LayerArguments
    device: torch.device
    implementation: str | None
    keys_normalized: bool


@torch.no_grad()
def walk_layers(
    skeleton: Skeleton,
    sequences: torch.Tensor,
    keep_sequences: int,
    sink: LayerSink,
    device: torch.device,
    convert_layer: ConvertLayer | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_batch_tokens: int = 512,
) -> None:
    """Calibrate every layer of the source on `sequences` (N, T), in order, from the shards; the
    first `keep_sequences` sequences' attention inputs are kept for replay. With `convert_layer`
    (sequential mode) each layer is converted here, on the partly converted model's inputs."""
    model = skeleton.model
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")  # eager returns the probabilities the hooks read
    batches = calibration_batches(sequences, keep_sequences, keep_batch_tokens)
    config = skeleton.source.config
    try:
        skeleton.load_embeddings(device)
        arguments, first = layer_arguments(skeleton, batches, device)
        skeleton.release_embeddings()
        carry = sink.resume()
        if carry is None:
            carry = Carry(0, first, [h.clone() for h in first] if convert_layer else None)
        del first
        run = _Pass(
            skeleton, batches, arguments, device, implementation, skeleton.arch.normalizes_keys(config)
        )
        if progress:
            progress(carry.done, skeleton.dims.layers)
        for layer in range(carry.done, skeleton.dims.layers):
            skeleton.load_layer(layer, device)
            try:
                if convert_layer is None:
                    calibration = _plain_layer(run, layer, carry)
                else:
                    calibration = _sequential_layer(run, layer, carry, convert_layer)
            finally:
                skeleton.release_layer(layer)
            carry.done = layer + 1
            sink.finish(layer, calibration, carry)
            del calibration
            trim_heap()
            if progress:
                progress(layer + 1, skeleton.dims.layers)
    finally:
        model.set_attn_implementation(implementation)


def _result(run: _Pass, layer: int, acc: Any, moments: Any) -> LayerCalibration:
    arch, dims = run.skeleton.arch, run.skeleton.dims
    return LayerCalibration(
        second_moment=moments.matrix(),
        mixed_moment=acc.mixed.matrix(),
        distances=getattr(acc, "distances", None),
        tokens=moments.count,
        rope=arch.rope,
        rotary_dim=0 if arch.rope == "none" else (acc.rotary_dim or 0),
        keys_normalized=run.keys_normalized,
        replay=acc.replay,
        modules=AttentionModules.of(run.skeleton.model, arch, dims, layer, run.implementation),
    )


def _hooked(attention: torch.nn.Module, acc: Any) -> list:
    return [
        attention.register_forward_pre_hook(acc.before, with_kwargs=True),
        attention.register_forward_hook(acc.after, with_kwargs=True),
    ]


def _plain_layer(run: _Pass, layer: int, carry: Carry) -> LayerCalibration:
    """Run layer `layer` on the source stream, measuring its attention's inputs."""
    decoder = run.skeleton.decoder(layer)
    acc = LayerAccumulator(run.skeleton.dims.hidden, run.device)
    handles = _hooked(getattr(decoder, run.skeleton.attention_name), acc)
    try:
        for b, (_, keep) in enumerate(run.batches):
            acc.keep = keep
            carry.source[b] = hidden_of(decoder(carry.source[b], **run.arguments[layer][b]))
    finally:
        for handle in handles:
            handle.remove()
    return _result(run, layer, acc, acc.inputs)


def _sequential_layer(run: _Pass, layer: int, carry: Carry, convert_layer: ConvertLayer) -> LayerCalibration:
    """Measure layer `layer` on both streams, convert it, and run the converted stream through the
    layer with its converted attention."""
    assert carry.converted is not None
    decoder, name = run.skeleton.decoder(layer), run.skeleton.attention_name
    attention = getattr(decoder, name)
    acc = PairedAccumulator(run.skeleton.dims.hidden, run.device)
    handles = _hooked(attention, acc)
    try:
        for b, (_, keep) in enumerate(run.batches):
            acc.capture, acc.keep = True, keep
            with contextlib.suppress(Stop):
                decoder(carry.converted[b], **run.arguments[layer][b])
            acc.capture = False
            carry.source[b] = hidden_of(decoder(carry.source[b], **run.arguments[layer][b]))
    finally:
        for handle in handles:
            handle.remove()
    calibration = _result(run, layer, acc, acc.converted)
    calibration.cross_moment = acc.cross.cpu() / acc.converted.count
    modules = calibration.modules
    assert modules is not None
    with torch.enable_grad():  # refine trains
        calibration.converted = convert_layer(
            layer, modules.weights(attention, run.skeleton.dims.kv_heads), calibration
        )
    calibration.replay = []  # this layer is done: its replayed inputs are no longer needed
    setattr(decoder, name, modules.build(calibration.converted, dtype=run.skeleton.model.dtype))
    try:
        for b in range(len(run.batches)):
            carry.converted[b] = hidden_of(decoder(carry.converted[b], **run.arguments[layer][b]))
    finally:
        setattr(decoder, name, attention)
    return calibration
