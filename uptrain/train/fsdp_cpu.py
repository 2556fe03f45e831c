"""FSDP on CPU processes. `accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP, but
Accelerate's state turns FSDP on only for accelerator backends (CUDA, XPU, ...): on CPU (gloo) it
silently falls back to plain data parallelism (MULTI_CPU) and the FSDP code never runs. PyTorch's FSDP2
(fully_shard) itself works on CPU with gloo, so this switches the state to FSDP with the plugin the
launcher configured, which makes configs/accelerate/fsdp2-cpu.yaml (and the tests) run the same
sharding, sharded checkpoints and gathered final save as a GPU run."""

from __future__ import annotations

import os
from typing import Any

from uptrain.errors import UptrainError


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator: Any) -> None:
    """After Accelerator(cpu=True) under an FSDP launch config: use FSDP2 as configured."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if not fsdp_requested() or state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # read from the launcher's FSDP_* environment
    if plugin.fsdp_version != 2:
        raise UptrainError(
            "FSDP on CPU needs fsdp_version: 2 in the accelerate config (FSDP1 needs a GPU); "
            "see configs/accelerate/fsdp2-cpu.yaml"
        )
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    # AcceleratorState copies PartialState's fields whenever it is constructed again: set both
    PartialState().distributed_type = DistributedType.FSDP
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
