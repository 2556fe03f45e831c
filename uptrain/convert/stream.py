"""The streaming loop: read source tensors one at a time, convert each layer's attention when its
first tensor comes up, and write every result at its planned place in the preallocated shards."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uptrain.checkpoint.writer import ShardWriter
from uptrain.convert.methods import ConversionMethod, MethodContext
from uptrain.convert.plan import ConversionPlan, convert_heads


@dataclass(frozen=True)
class StreamProgress:
    """Where a conversion is: tensors and bytes written so far, and the shard just finished."""

    tensors: int
    tensors_total: int
    bytes: int
    bytes_total: int
    shard_done: str | None = None  # the output file that this write completed, if any


Progress = Callable[[StreamProgress], None]


def write_converted(
    plan: ConversionPlan,
    directory: Path,
    method: ConversionMethod,
    context: Callable[[int], MethodContext],
    calibration: dict[int, Any] | None,
    progress: Progress | None = None,
    converted_layer: Callable[[int], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write every output tensor of `plan` into `directory`. `context(layer)` is each layer's
    MethodContext; a layer's calibration entry is dropped once it is converted. With
    `converted_layer`, each layer's output tensors are what it returns (converted during calibration)."""
    output_of = plan.output_of
    count, total = plan.tensor_count, plan.total_bytes
    writers: list[ShardWriter] = []
    try:
        for file, tensors in zip(plan.shard_files, plan.outputs, strict=True):
            writers.append(ShardWriter(directory / file, tensors))
        written = done_bytes = 0
        done_layers: set[int] = set()
        for name in plan.view.names():
            if name in plan.layer_of:
                layer = plan.layer_of[name]
                if layer in done_layers:
                    continue
                done_layers.add(layer)
                if converted_layer is not None:
                    results = converted_layer(layer)
                else:
                    tensors = {n: plan.view.load(n) for n in plan.layer_tensors[layer]}
                    results = convert_heads(tensors, plan, layer, method, context(layer))
                if calibration is not None:
                    calibration.pop(layer, None)  # its replayed inputs are no longer needed
            else:
                results = {name: plan.view.load(name)}
            for out_name in list(results):
                writer = writers[output_of[out_name]]
                planned = writer.planned[out_name]
                writer.write(out_name, results.pop(out_name).to(planned.dtype))
                written += 1
                done_bytes += planned.nbytes
                if progress:
                    finished = writer.path.name if len(writer.written) == len(writer.planned) else None
                    progress(StreamProgress(written, count, done_bytes, total, finished))
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    write_index(directory, plan)


def write_index(directory: Path, plan: ConversionPlan) -> None:
    """model.safetensors.index.json, with total_size, for a sharded output."""
    if len(plan.shard_files) == 1:
        return
    weight_map = {
        t.name: file for file, tensors in zip(plan.shard_files, plan.outputs, strict=True) for t in tensors
    }
    index = {"metadata": {"total_size": plan.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
