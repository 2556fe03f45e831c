"""Every dtype table in one place: the names users write, transformers' names, safetensors' codes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from uptrain.errors import UptrainError

# The short names a user writes (--dtype, model.convert.dtype) and the torch dtype each means.
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# transformers' names for the same dtypes (config.json's "dtype"); also accepted where users write one.
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float32: "float32",
}
TORCH_DTYPES: dict[str, torch.dtype] = {**DTYPES, **{name: dtype for dtype, name in DTYPE_NAMES.items()}}

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def resolve_dtype(name: str | None) -> torch.dtype | str:
    """A --dtype value as transformers takes it ("auto" keeps the checkpoint's dtype)."""
    if name in (None, "auto"):
        return "auto"
    if name not in TORCH_DTYPES:
        raise UptrainError(f"dtype {name!r} is not one of auto, bf16, fp16, fp32")
    return TORCH_DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """transformers' name of a torch dtype, as config.json's "dtype" says it ("bfloat16")."""
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def main_dtype(tensors: Iterable[tuple[torch.dtype, Sequence[int]]]) -> torch.dtype | None:
    """The floating-point dtype that holds the most numbers of (dtype, shape) pairs: what a checkpoint
    declares as its dtype (None when it has no floating-point tensor)."""
    counts: dict[torch.dtype, int] = {}
    for dtype, shape in tensors:
        if dtype.is_floating_point:
            counts[dtype] = counts.get(dtype, 0) + math.prod(shape)
    return max(counts, key=counts.__getitem__) if counts else None
