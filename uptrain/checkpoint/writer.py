"""Writing safetensors shards whose layout is fixed before any tensor is computed.

safetensors' save_file needs every tensor of a file in memory at once. Here the header is built
from the planned names, dtypes and shapes, the file is allocated in full (so a full disk fails
before any work), and each tensor is written at its offset as soon as it exists, in any order.
Resident memory stays near one tensor. The result is an ordinary safetensors file.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from uptrain.checkpoint.dtypes import SAFETENSORS_DTYPES

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
_MAX_WRITE = 1 << 30


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = torch.Size(self.shape).numel()
        return n * torch.empty((), dtype=self.dtype).element_size()


def build_header(tensors: list[PlannedTensor], metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The safetensors header for these tensors and each tensor's data offset. Larger dtypes come
    first, as safetensors itself orders them, so every tensor is aligned to its element size."""
    order = sorted(tensors, key=lambda t: -torch.empty((), dtype=t.dtype).element_size())
    header: dict[str, object] = {"__metadata__": metadata}
    offsets, position = {}, 0
    for t in order:
        header[t.name] = {
            "dtype": _DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [position, position + t.nbytes],
        }
        offsets[t.name] = position
        position += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offsets


class ShardWriter:
    """One output safetensors file, planned up front and filled tensor by tensor."""

    def __init__(
        self, path: Path, tensors: list[PlannedTensor], metadata: dict[str, str] | None = None
    ) -> None:
        self.path = path
        self.planned = {t.name: t for t in tensors}
        header, offsets = build_header(tensors, metadata or {"format": "pt"})
        self.data_start = len(header)
        self.offsets = offsets
        self.total = self.data_start + sum(t.nbytes for t in tensors)
        self.written: set[str] = set()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _allocate(self.fd, self.total)
            _pwrite_all(self.fd, memoryview(header), 0)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, name: str, tensor: torch.Tensor) -> None:
        plan = self.planned[name]
        if tensor.dtype != plan.dtype or tuple(tensor.shape) != plan.shape:
            raise AssertionError(
                f"{name}: computed {tensor.dtype} {tuple(tensor.shape)} but planned {plan.dtype} {plan.shape}"
            )
        if name in self.written:
            raise AssertionError(f"{name} written twice")
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        _pwrite_all(self.fd, memoryview(data), self.data_start + self.offsets[name])
        self.written.add(name)

    def close(self) -> None:
        """Check that every planned tensor was written, flush to disk and close."""
        try:
            missing = set(self.planned) - self.written
            if missing:
                raise AssertionError(f"{self.path.name}: tensors never written: {sorted(missing)[:5]}")
            os.fsync(self.fd)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close the file without checks (the caller removes the directory); safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the filesystem cannot preallocate
            raise
        os.ftruncate(fd, size)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    data = data.cast("B")
    while len(data):
        n = os.pwrite(fd, data[:_MAX_WRITE], offset)
        data, offset = data[n:], offset + n
