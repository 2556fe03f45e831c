"""The calibration pass as uptrain ran it before it walked the source layer by layer: the whole
source model loaded with from_pretrained, statistics collected by hooks in one forward pass per
batch (plain), or decoder by decoder on the loaded model (sequential). Kept here, test-only, as the
reference that the layer-by-layer pass (uptrain/convert/calibration/layerwise.py) must reproduce.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, get_architecture, read_dims
from uptrain.checkpoint.devices import COMPUTE_DTYPES
from uptrain.checkpoint.loading import load_causal_lm, load_tokenizer
from uptrain.checkpoint.shards import SafetensorsShard, SourceCheckpoint
from uptrain.convert.calibration.hooks import LayerAccumulator, PairedAccumulator, Stop, hidden_of
from uptrain.convert.calibration.inputs import CalibrationSpec, calibration_token_ids
from uptrain.convert.calibration.modules import AttentionModules
from uptrain.convert.calibration.stats import NOT_REPLAYED, LayerCalibration, calibration_batches

ConvertLayer = Callable[[int, Any, LayerCalibration], Any]


def reference_calibration(
    source: SourceCheckpoint, spec: CalibrationSpec, convert_layer: ConvertLayer | None = None
) -> dict[int, LayerCalibration]:
    """Every layer's calibration as the whole-model pass gave it (with spec.sequential and
    `convert_layer`, each layer's `converted` weights too), to pass to convert_checkpoint."""
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    tokenizer = load_tokenizer(source.root or source.model_path)
    ids = calibration_token_ids(tokenizer, spec.data, spec.tokens, spec.skip_tokens)
    seq_len = min(spec.seq_len, len(ids))
    sequences = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    keep = min(len(sequences), math.ceil(spec.keep_tokens / seq_len)) if spec.keep_tokens else 0
    model = load_source_model(source, spec.device, spec.dtype)
    if spec.sequential and convert_layer is not None:
        return collect_sequential(
            model, arch, dims, source.config, sequences, keep, convert_layer, None, spec.keep_batch_tokens
        )
    return collect_statistics(model, arch, dims, source.config, sequences, keep, None, spec.keep_batch_tokens)


def load_source_model(source: SourceCheckpoint, device: str = "cpu", dtype: str = "fp32") -> Any:
    """The source as a transformers model on `device` in `dtype` (fp32, bf16 or fp16). Weights
    already in memory (GGUF) or read by uptrain's own loader (pickled .bin, which the user allowed;
    read with weights_only) are passed in as a state dict, so transformers never unpickles anything
    itself."""
    torch_dtype = COMPUTE_DTYPES[dtype]
    if not all(isinstance(s, SafetensorsShard) for s in source.shards):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        config = AutoConfig.from_pretrained(str(source.root))
        state = {name: source.load(name).to(torch_dtype) for name in source.names()}
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch_dtype)
        model.to(device)
    else:
        model = load_causal_lm(source.model_path, dtype=torch_dtype, device=device)
    return model.eval()


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
    accumulators = [LayerAccumulator(dims.hidden, device) for _ in range(dims.layers)]
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
                raise Stop

        return hook

    handles = [d.register_forward_pre_hook(capture(i), with_kwargs=True) for i, d in enumerate(decoders)]
    try:
        for current, (batch, _) in enumerate(batches):  # noqa: B007 - read by the hooks
            with contextlib.suppress(Stop):
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
            acc = PairedAccumulator(dims.hidden, model.device)
            handles = [
                attention.register_forward_pre_hook(acc.before, with_kwargs=True),
                attention.register_forward_hook(acc.after, with_kwargs=True),
            ]
            try:
                for b, (_, keep) in enumerate(batches):
                    acc.capture, acc.keep = True, keep
                    with contextlib.suppress(Stop):
                        decoder(converted[b], **arguments[i][b])
                    acc.capture = False
                    source[b] = hidden_of(decoder(source[b], **arguments[i][b]))
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
                    converted[b] = hidden_of(decoder(converted[b], **arguments[i][b]))
            finally:
                setattr(decoder, attention_name, attention)
            results[i] = cal
            if progress:
                progress(i + 1, dims.layers)
    finally:
        model.set_attn_implementation(implementation)
    return results
