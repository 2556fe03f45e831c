"""The DeepseekV3 tensors of an MLA conversion, planned and streamed into shards like any conversion
(checkpoint.writer): every tensor outside the attention keeps its name, shard and values (in the
output dtype); each layer's q/k/v projections become q_proj, kv_a_proj_with_mqa, kv_a_layernorm and
kv_b_proj in the shard of its q_proj; o_proj is carried as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from uptrain.architectures import Architecture, AttentionDims
from uptrain.checkpoint.shards import SourceCheckpoint
from uptrain.checkpoint.writer import PlannedTensor, ShardWriter
from uptrain.convert.plan import shard_file_names
from uptrain.convert.stream import Progress, StreamProgress, write_index

REPLACED = ("q", "k", "v")  # the source projections each layer's MLA tensors replace


def mla_shapes(dims: AttentionDims, rank: int, rope: int) -> dict[str, tuple[int, ...]]:
    """The shapes of one layer's MLA tensors (names relative to the attention module)."""
    hd, heads = dims.head_dim, dims.heads
    return {
        "q_proj.weight": (heads * hd, dims.hidden),
        "kv_a_proj_with_mqa.weight": (rank + rope, dims.hidden),
        "kv_a_layernorm.weight": (rank,),
        "kv_b_proj.weight": (heads * (2 * hd - rope), rank),
    }


@dataclass
class MlaPlan:
    shard_files: list[str]
    outputs: list[list[PlannedTensor]]  # per output shard
    layer_of: dict[str, int]  # each replaced source tensor -> its layer

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for shard in self.outputs for t in shard)

    @property
    def tensor_count(self) -> int:
        return sum(len(shard) for shard in self.outputs)


def plan_mla(
    source: SourceCheckpoint, arch: Architecture, dims: AttentionDims, rank: int, rope: int,
    dtype: torch.dtype | None,
) -> MlaPlan:  # fmt: skip
    """Every output tensor's name, dtype, shape and shard."""
    shard_index = {id(s): i for i, s in enumerate(source.shards)}
    layer_of = {
        f"{arch.prefix(i)}.{getattr(arch, role)}.weight": i for i in range(dims.layers) for role in REPLACED
    }
    outputs: list[list[PlannedTensor]] = [[] for _ in source.shards]
    shapes = mla_shapes(dims, rank, rope)
    done: set[int] = set()
    for name in source.names():
        meta = source.meta(name)
        out_dtype = dtype if dtype is not None and meta.dtype.is_floating_point else meta.dtype
        home = outputs[shard_index[id(source.shard_of(name))]]
        if name not in layer_of:
            home.append(PlannedTensor(name, out_dtype, tuple(meta.shape)))
        elif layer_of[name] not in done:
            layer = layer_of[name]
            done.add(layer)
            home.extend(PlannedTensor(f"{arch.prefix(layer)}.{n}", out_dtype, s) for n, s in shapes.items())
    return MlaPlan(shard_file_names(len(source.shards)), outputs, layer_of)


def write_mla(
    plan: MlaPlan,
    source: SourceCheckpoint,
    directory: Path,
    layer_tensors: Callable[[int], dict[str, torch.Tensor]],
    progress: Progress | None = None,
) -> None:
    """Stream every planned tensor into `directory`; `layer_tensors(layer)` computes a layer's MLA
    tensors (full names) when its first replaced tensor comes up."""
    writers: list[ShardWriter] = []
    try:
        for file, tensors in zip(plan.shard_files, plan.outputs, strict=True):
            writers.append(ShardWriter(directory / file, tensors))
        where = {name: w for w in writers for name in w.planned}
        written = done_bytes = 0
        done: set[int] = set()
        for name in source.names():
            layer = plan.layer_of.get(name)
            if layer is None:
                results = {name: source.load(name)}
            elif layer in done:
                continue
            else:
                done.add(layer)
                results = layer_tensors(layer)
            for out_name, tensor in results.items():
                writer = where[out_name]
                planned = writer.planned[out_name]
                writer.write(out_name, tensor.to(planned.dtype))
                written, done_bytes = written + 1, done_bytes + planned.nbytes
                if progress:
                    finished = writer.path.name if len(writer.written) == len(writer.planned) else None
                    progress(
                        StreamProgress(written, plan.tensor_count, done_bytes, plan.total_bytes, finished)
                    )
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    write_index(directory, plan)  # the GQA path's index writer: it reads shard_files, outputs, total_bytes
