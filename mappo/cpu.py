"""Process settings that make CPU training faster: the one home for them (issue 16).

    with cpu_settings(flush_denormal=True, keep_freed_memory=True):
        ...  # train

- ``flush_denormal``: denormal floats (below 1.2e-38) take a slow path on x86 CPUs; settling
  physics makes them (VMAS navigation stepped 10 -> 16 ms once agents stood still), so they are
  flushed to zero inside the block, and torch's default (off) is restored after it.
- ``keep_freed_memory``: glibc's malloc gives freed memory back to the OS (it trims the heap and
  maps large blocks afresh), and every page of it then faults again when the next tensor of
  that size is written.  A [256, 256] MLP's forward and backward on a 2,048-row piece took about
  1,100 page faults on the 2-core dev VM, and ran 1.2-1.4x faster without them (median per piece
  30-37 -> 23-28 ms).  :func:`retain_freed_memory` asks glibc (``mallopt``) to keep freed blocks
  below 32 MB for reuse.  This stays on for the rest of the process, since glibc's default
  (thresholds that adapt) cannot be set back; the cost is that the process keeps its peak heap.
  PyTorch's tuning guide gets the same effect by preloading jemalloc or tcmalloc.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Iterator

import torch

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30  # free memory at the heap's top kept before trimming: in effect, never trimmed

_kept = False


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (see the module docstring).  Returns
    True when this process now does, False where the C library is not glibc (macOS, Windows,
    musl): nothing changes there."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: setting either fixes both, and a fixed 128 kB mmap threshold alone
    # would map (and fault) every activation afresh
    _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept


@contextlib.contextmanager
def cpu_settings(flush_denormal: bool, keep_freed_memory: bool) -> Iterator[None]:
    """The settings above, for the block (``keep_freed_memory`` for the rest of the process)."""
    if keep_freed_memory:
        retain_freed_memory()
    flush = flush_denormal and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)
