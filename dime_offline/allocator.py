"""Keeping freed memory in the process between updates (glibc's malloc), for training runs.

A DIME update allocates and frees the same few hundred activation and gradient buffers every time
(0.1-3 MiB each for the "cpu" preset). With glibc's defaults, buffers above the mmap threshold
(128 KiB, raised dynamically up to the largest one freed) are returned to the kernel on free, and the
heap's free top is trimmed back once it exceeds twice that: the next update then page-faults the
same memory in again, zero-filled, hundreds of pages per update. :func:`keep_freed_memory` raises
both thresholds so the buffers stay mapped and are reused: measured on a 2-core CPU, no page faults
in steady state instead of 280-470 per update, and cpu-preset updates faster
(docs/benchmarks.md, "Keeping freed memory"). The price: the process keeps its peak heap resident
(up to ``TRIM_THRESHOLD`` of free memory); allocations above ``MMAP_THRESHOLD`` (datasets, replay
rings) are still mapped and unmapped as before.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 64 << 20
"""Allocations from this size on stay separate mappings, returned to the kernel when freed."""
TRIM_THRESHOLD = 512 << 20
"""Free memory at the heap's top is returned to the kernel only beyond this (the paper preset's
update peaks at ~200 MiB)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers

_user_tunables = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module's docstring). Returns
    whether they were set: false on other C libraries and platforms, and when the user configured
    malloc through the environment (``GLIBC_TUNABLES`` with malloc settings, ``MALLOC_*_``), which wins."""
    if not sys.platform.startswith("linux"):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(name in os.environ for name in _user_tunables):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt parameters of these numbers)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
