"""The source model without its weights: built by transformers on the meta device from config.json,
so the calibration pass never holds the whole model. Weights are read from the source's shards a
part at a time (the embeddings, then one decoder layer) and put back on meta when done.

Tensors are loaded with transformers' own loading step (its checkpoint-to-model conversions, such
as the fused MoE experts of transformers 5), so every layer holds what from_pretrained would give it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims
from uptrain.checkpoint.devices import COMPUTE_DTYPES
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.errors import UptrainError


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" bar, once per layer, is noise here."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


class Skeleton:
    """The source model on meta, filled a part at a time. `model` has real buffers (RoPE frequencies
    computed from the config) and meta parameters until a part is loaded."""

    def __init__(self, source: SourceCheckpoint, arch: Architecture, dims: AttentionDims, dtype: str) -> None:
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.conversion_mapping import get_model_conversion_mapping

        self.source, self.arch, self.dims = source, arch, dims
        self.dtype = COMPUTE_DTYPES[dtype]
        config = AutoConfig.from_pretrained(str(source.root or source.model_path))
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        self.model.eval()
        self._mapping = get_model_conversion_mapping(self.model)
        self.layer_prefix = arch.prefix(0).rsplit(".", 2)[0] + "."  # "model.layers."
        self.attention_name = arch.prefix(0).rsplit(".", 1)[1]  # "self_attn"

    def decoder(self, layer: int) -> torch.nn.Module:
        return self.model.get_submodule(self.arch.prefix(layer).rsplit(".", 1)[0])

    def decoders(self) -> list[torch.nn.Module]:
        return [self.decoder(i) for i in range(self.dims.layers)]

    def _load(self, names: list[str], device: torch.device, prefix: str | None) -> None:
        """Read `names` from the shards and load them into the model with transformers' conversions;
        every parameter under `prefix` (None: outside the layers) must then be real."""
        from transformers.core_model_loading import convert_and_load_state_dict_in_model
        from transformers.modeling_utils import LoadStateDictConfig

        state = {n: self.source.load(n) for n in names}
        config = LoadStateDictConfig(weight_mapping=self._mapping, dtype=self.dtype)
        with _quiet_loading():
            convert_and_load_state_dict_in_model(self.model, state, config)
        del state
        missing = [n for n, p in self._parameters(prefix) if p.is_meta]
        if prefix is not None and missing:
            raise UptrainError(
                f"the source has no weights for {', '.join(missing[:3])}; the checkpoint is incomplete, "
                "re-download it"
            )
        for name, p in self._parameters(prefix):
            if not p.is_meta and p.device != torch.device(device):
                self._move(name, device)

    def _parameters(self, prefix: str | None) -> list[tuple[str, torch.nn.Parameter]]:
        def inside(name: str) -> bool:
            under = name.startswith(self.layer_prefix)
            return under if prefix is None else name.startswith(prefix)

        if prefix is None:
            return [(n, p) for n, p in self.model.named_parameters() if not inside(n)]
        return [(n, p) for n, p in self.model.named_parameters() if inside(n)]

    def _move(self, name: str, device: torch.device | str) -> None:
        from accelerate.utils import set_module_tensor_to_device

        set_module_tensor_to_device(self.model, name, device)

    def load_embeddings(self, device: torch.device) -> None:
        """Everything outside the decoder layers but the output head (not needed to reach the layers)."""
        head = self._head_names()
        names = [n for n in self.source.names() if not n.startswith(self.layer_prefix) and n not in head]
        self._load(names, device, None)
        for name, buffer in self.model.named_buffers():  # RoPE frequencies, made on the CPU from the config
            if not buffer.is_meta and buffer.device != torch.device(device):
                self._move(name, device)

    def _head_names(self) -> set[str]:
        head = self.model.get_output_embeddings()
        tied = self.model.get_input_embeddings()
        return {
            f"{name}.{p}"
            for name, module in self.model.named_modules()
            if module is head and head is not tied
            for p, _ in module.named_parameters()
        }

    def release_embeddings(self) -> None:
        for name, p in self._parameters(None):
            if not p.is_meta:
                self._move(name, "meta")

    def load_layer(self, layer: int, device: torch.device) -> torch.nn.Module:
        prefix = self.arch.prefix(layer).rsplit(".", 1)[0] + "."
        self._load([n for n in self.source.names() if n.startswith(prefix)], device, prefix)
        return self.decoder(layer)

    def release_layer(self, layer: int) -> None:
        prefix = self.arch.prefix(layer).rsplit(".", 1)[0] + "."
        for name, _ in self._parameters(prefix):
            self._move(name, "meta")


def attention_implementation(model: Any) -> str | None:
    return model.config._attn_implementation
