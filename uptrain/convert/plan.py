"""Planning a conversion: every output tensor's name, dtype, shape and shard, learned by running each
layer's transform on the meta device, before a byte is read or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uptrain.architectures import (
    Architecture,
    AttentionDims,
    AttentionWeights,
    Route,
    get_layout,
    output_config,
    plan_route,
)
from uptrain.architectures.rope_order import to_target_rope
from uptrain.checkpoint.dtypes import main_dtype
from uptrain.checkpoint.serving_keys import with_architectures, with_dtype
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.writer import PlannedTensor
from uptrain.convert.methods import ConversionMethod, MethodContext
from uptrain.convert.pooling import map_kv
from uptrain.convert.tensor_rules import RuledSource, TensorRules


def _shapes_layer(attn: AttentionWeights, groups: int, ctx: MethodContext) -> AttentionWeights:
    """What every method returns, as far as shapes go: `groups` KV heads, the rest unchanged."""
    return map_kv(attn, lambda x: x.new_empty((groups, *x.shape[1:])))


# Planning runs on the meta device. Only shapes matter there, and arithmetic on meta tensors (mean,
# clone) goes through torch's Python reference kernels, whose first use imports sympy and
# torch._dynamo: seconds of start-up. Empty tensors of the right shape cost nothing.
SHAPES = ConversionMethod("shapes", _shapes_layer, "planning only: output shapes, no arithmetic")


@dataclass
class ConversionPlan:
    route: Route
    view: RuledSource  # the source's tensors under the name as the output has it
    layer_tensors: dict[int, list[str]]  # source attention tensors of each layer
    layer_of: dict[str, int]
    shard_files: list[str]
    outputs: list[list[PlannedTensor]]  # per output shard

    @property
    def arch(self) -> Architecture:
        return self.route.source

    @property
    def dims(self) -> AttentionDims:
        return self.route.dims

    @property
    def groups(self) -> int:
        return self.route.groups

    @property
    def output_of(self) -> dict[str, int]:
        return {t.name: i for i, shard in enumerate(self.outputs) for t in shard}

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for shard in self.outputs for t in shard)

    @property
    def tensor_count(self) -> int:
        return sum(len(shard) for shard in self.outputs)


def _output_dtype(dtype: torch.dtype, target: torch.dtype | None) -> torch.dtype:
    return target if target is not None and dtype.is_floating_point else dtype


def shard_file_names(n: int) -> list[str]:
    return (
        ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )


def convert_heads(
    source_tensors: dict[str, torch.Tensor],
    plan: ConversionPlan,
    layer: int,
    method: ConversionMethod,
    ctx: MethodContext,
) -> dict[str, torch.Tensor]:
    """One layer's attention tensors, read in the source's layout, converted, written in the target's."""
    route = plan.route
    converted = getattr(ctx.calibration, "converted", None)  # done during sequential calibration
    if converted is None:
        reader = get_layout(route.source_variant.layout)
        attn = reader.to_heads(route.source, route.dims, layer, source_tensors).to(torch.float32)
        attn = to_target_rope(route, plan.view.source.config, attn)  # GPT-J's RoPE pairs into phi's
        converted = run_method(method, attn, route.groups, ctx)
    writer = get_layout(route.target_variant.layout)
    return writer.from_heads(route.target, route.dims, layer, converted)


def run_method(method: ConversionMethod, attn: Any, groups: int, ctx: MethodContext) -> Any:
    new = method.convert_layer(attn, groups, ctx)
    if new.kv_heads != groups:
        raise AssertionError(f"method {method.name} returned {new.kv_heads} KV heads, not {groups}")
    return new


def plan_conversion(
    source: SourceCheckpoint, groups: int, dtype: torch.dtype | None = None, route: Route | None = None
) -> ConversionPlan:
    """Every output tensor's name, dtype, shape and shard, learned by converting on the meta device;
    `route` is plan_route(source.config, groups) where the caller planned it already."""
    route = route or plan_route(source.config, groups)
    arch, dims = route.source, route.dims
    view = RuledSource(source, TensorRules(arch.translate))
    layout = get_layout(route.source_variant.layout)
    names = view.names()
    available = set(names)
    layer_tensors = {i: layout.layer_tensors(arch, dims, i, available) for i in range(dims.layers)}
    layer_of = {name: i for i, ns in layer_tensors.items() for name in ns}
    plan = ConversionPlan(route, view, layer_tensors, layer_of, shard_file_names(len(source.shards)), [])
    outputs: list[list[PlannedTensor]] = [[] for _ in source.shards]
    done_layers: set[int] = set()
    for name in names:
        home = view.shard_index(name)
        if name not in layer_of:
            meta = view.meta(name)
            outputs[home].append(PlannedTensor(name, _output_dtype(meta.dtype, dtype), meta.shape))
            continue
        layer = layer_of[name]
        if layer in done_layers:
            continue
        done_layers.add(layer)
        fakes = {}
        for n in layer_tensors[layer]:
            meta = view.meta(n)
            fakes[n] = torch.empty(meta.shape, dtype=meta.dtype, device="meta")
        ctx = MethodContext(arch=arch, dims=dims, layer=layer)
        for out_name, t in convert_heads(fakes, plan, layer, SHAPES, ctx).items():
            src_dtype = (
                view.meta(out_name).dtype if out_name in available else fakes[layer_tensors[layer][0]].dtype
            )
            target = home if out_name not in available else view.shard_index(out_name)
            outputs[target].append(PlannedTensor(out_name, _output_dtype(src_dtype, dtype), tuple(t.shape)))
    plan.outputs = outputs
    return plan


def output_dtype(plan: ConversionPlan) -> torch.dtype | None:
    """The dtype that holds most of the output's numbers: what its config.json declares."""
    return main_dtype((t.dtype, t.shape) for shard in plan.outputs for t in shard)


def converted_config(config: dict, route: Route, dtype: str | None) -> dict:
    """config.json for the output: the target's model_type and variant flags, G KV heads, head_dim,
    `dtype` (the weights', when given) and `architectures` (the class transformers loads it with, which
    serving engines choose their code by). The source's auto_map goes: the output is in the layout of
    a model_type that transformers has built in, and custom code written for the source's MHA shapes
    is never pointed at by OUT."""
    new = output_config(route, config)
    if dtype:
        new = with_dtype(new, dtype)
    new.pop("quantization_config", None)
    new.pop("auto_map", None)
    return with_architectures(new)
