"""Where a model runs: the one meaning of `--device` (uptrain eval, uptrain convert) and of the compute
dtype that goes with it, checked before any model is loaded or anything is written.

    auto (or unset)   the first CUDA device when this machine has one, else the CPU
    cpu, cuda, cuda:N  that device; a CUDA device this machine lacks is a one-line error
"""

from __future__ import annotations

import torch

from uptrain.errors import SettingError

AUTO = "auto"
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(setting: str | None) -> torch.device:
    """The device `setting` names (None or auto: cuda:0 where CUDA is available, else cpu), with a
    one-line error for a name torch does not know or a CUDA device this machine does not have."""
    if setting is None or setting == AUTO:
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(setting)
    except (RuntimeError, ValueError):
        raise SettingError(
            f"<device> {setting!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"<device> {setting}: this machine has no CUDA GPU; use <device> cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise SettingError(
                f"<device> {setting}: this machine has {count} GPUs; use cuda:0 ... cuda:{count - 1}"
            )
    return device


def device_name(device: torch.device) -> str:
    """How a record writes a device: cpu, cuda:0, ..."""
    return device.type if device.index is None else f"{device.type}:{device.index}"


def resolve_compute_dtype(setting: str, device: torch.device, field: str = "calibration_dtype") -> str:
    """A forward pass's compute dtype by name: auto is bf16 on a GPU and fp32 on the CPU (where bf16
    matmuls are emulated unless the CPU has AMX, and fp32 keeps today's results bit for bit)."""
    if setting == AUTO:
        return "bf16" if device.type == "cuda" else "fp32"
    if setting not in COMPUTE_DTYPES:
        raise SettingError(f"<{field}> {setting!r} is not one of {', '.join([AUTO, *COMPUTE_DTYPES])}")
    return setting
