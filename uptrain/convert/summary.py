"""`uptrain inspect`: what a checkpoint is, read from its config and safetensors headers only."""

from __future__ import annotations

from dataclasses import dataclass

from uptrain.architectures import AttentionDims, get_architecture, get_layout, read_dims, valid_groups
from uptrain.architectures.kv_cache import cached_kv_bytes_per_token
from uptrain.architectures.route import source_variant
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.convert.tensor_rules import RuledSource, TensorRules


@dataclass(frozen=True)
class CheckpointSummary:
    model_type: str
    dims: AttentionDims
    parameters: int
    dtype: str
    kv_bytes_per_token: int
    valid_groups: list[int]

    def kv_bytes(self, context: int, batch: int = 1) -> int:
        return self.kv_bytes_per_token * context * batch

    @property
    def attention_kind(self) -> str:
        if self.dims.kv_heads == self.dims.heads:
            return "MHA"
        return "MQA" if self.dims.kv_heads == 1 else "GQA"


def summarize(source: SourceCheckpoint) -> CheckpointSummary:
    arch = get_architecture(source.config.get("model_type"))
    dims = read_dims(arch, source.config)
    variant = source_variant(arch, source.config)
    view = RuledSource(source, TensorRules(arch.translate))
    first_attention = get_layout(variant.layout).layer_tensors(arch, dims, 0, set(view.names()))[0]
    dtype = view.meta(first_attention).dtype
    parameters = sum(_numel(source.meta(n).shape) for n in source.names())
    return CheckpointSummary(
        model_type=arch.model_type,
        dims=dims,
        parameters=parameters,
        dtype=str(dtype).removeprefix("torch."),
        kv_bytes_per_token=cached_kv_bytes_per_token(
            source.config, dtype, dims.layers, dims.kv_heads, dims.head_dim
        ),
        valid_groups=valid_groups(arch, source.config, dims),
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
