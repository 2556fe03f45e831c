"""Handing freed memory back to the operating system between large, short-lived allocations."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_heap() -> None:
    """glibc's malloc_trim(0): return the heap's free pages. Blocks freed by one layer's work (its
    weights, its float64 solves) otherwise stay in the process as fragments, and peak RSS creeps up
    layer after layer (about 20 MiB a layer at hidden 1024). A no-op where glibc is not the allocator."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
