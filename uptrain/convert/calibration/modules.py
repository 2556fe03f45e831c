"""A layer's transformers attention module, built from AttentionWeights with any KV head count,
and read back. `refine` runs it, so every architecture's own attention code (RoPE style, partial
rotary, q/k norms, soft-capping, sliding windows, scaling) is what gets optimized.

Where the class holds G KV heads only in another layout (an MHA falcon at G = 1 is multi_query, a
gpt_bigcode's G = 1 is multi_query), the module is built with that variant's flags and layout."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from uptrain.architectures import Architecture, AttentionDims, AttentionWeights, Variant, get_layout
from uptrain.architectures.layouts import Layout
from uptrain.architectures.route import holds, source_variant


@dataclass
class AttentionModules:
    cls: type  # the source model's attention class for this layer
    config: Any  # the config it was built from
    arch: Architecture
    dims: AttentionDims  # the source's dimensions
    layer: int
    fixed: dict[str, torch.Tensor]  # the module's tensors conversion leaves alone (shared q/k norms)
    implementation: str | None = None  # attention implementation to build with (None: the config's)
    device: torch.device = torch.device("cpu")  # where the modules are built (the source model's device)

    @classmethod
    def of(
        cls,
        model: torch.nn.Module,
        arch: Architecture,
        dims: AttentionDims,
        layer: int,
        implementation: str | None = None,
    ) -> AttentionModules:
        module = model.get_submodule(arch.prefix(layer))
        config = getattr(module, "config", None) or model.config.get_text_config()
        prefix = arch.prefix(layer) + "."
        state = module.state_dict()
        layout = get_layout(source_variant(arch, config.to_dict()).layout)
        converted = set(layout.layer_tensors(arch, dims, layer, {prefix + n for n in state}))
        fixed = {n: t.detach().clone() for n, t in state.items() if prefix + n not in converted}
        device = next(module.parameters()).device
        return cls(type(module), config, arch, dims, layer, fixed, implementation, device)

    def _dims(self, kv_heads: int) -> AttentionDims:
        return dataclasses.replace(self.dims, kv_heads=kv_heads)

    def _variant(self, kv_heads: int) -> tuple[Variant, Layout, dict[str, Any]]:
        """The variant holding `kv_heads` (the source's where it can), its layout, and the config
        values that select it (as route.output_config writes them)."""
        own = source_variant(self.arch, self.config.to_dict())
        if holds(own, self.dims, kv_heads):
            return own, get_layout(own.layout), {}
        for variant in self.arch.variants:
            if holds(variant, self.dims, kv_heads):
                return variant, get_layout(variant.layout), {**variant.when, **variant.set}
        raise ValueError(f"{self.arch.model_type} holds {kv_heads} KV heads in none of its layouts")

    def trainable(self, module: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters that conversion writes (the rest, `fixed`, stay as the source has them)."""
        return [p for name, p in module.named_parameters() if name not in self.fixed]

    def build(self, attn: AttentionWeights, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The attention module holding `attn` on `device` (float32 unless `dtype`, eval mode: no
        dropout)."""
        config = copy.deepcopy(self.config)
        _, layout, flags = self._variant(attn.kv_heads)
        for key, value in flags.items():
            setattr(config, key, value)
        if self.arch.config.kv_heads:
            setattr(config, self.arch.config.kv_heads, attn.kv_heads)
        if self.implementation:
            config._attn_implementation = self.implementation
        prefix = self.arch.prefix(self.layer) + "."
        tensors = layout.from_heads(self.arch, self._dims(attn.kv_heads), self.layer, attn)
        state = {
            n.removeprefix(prefix): t.detach().to(self.device, torch.float32).clone()
            for n, t in tensors.items()
        }
        state.update({n: t.to(self.device, torch.float32).clone() for n, t in self.fixed.items()})
        with torch.device("meta"):
            module = self.cls(config, layer_idx=self.layer)
        module.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):  # buffers made in __init__
            module = self.cls(config, layer_idx=self.layer)
            module.load_state_dict(state, strict=True)
        return module.to(self.device, dtype).eval()

    def weights(self, module: torch.nn.Module, kv_heads: int) -> AttentionWeights:
        """The weights of a module built with `kv_heads` KV heads, back in canonical head form, on the
        CPU (where the methods' solves run) in float32 or wider."""
        prefix = self.arch.prefix(self.layer) + "."
        state = {
            prefix + n: t.detach().to("cpu", torch.promote_types(t.dtype, torch.float32)).clone()
            for n, t in module.state_dict().items()
            if n not in self.fixed
        }
        layout = self._variant(kv_heads)[1]
        return layout.to_heads(self.arch, self._dims(kv_heads), self.layer, state)
