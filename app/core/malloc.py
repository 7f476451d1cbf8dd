"""Keep freed buffers in the process instead of handing them back to the kernel.

glibc serves allocations above its mmap threshold (128 KiB, adapting up to 32 MiB) with
fresh `mmap`s and returns them with `munmap` when freed. A step allocates several
buffers the size of the gradient (the request body, the scratch copy, the response), so
every step page-faulted megabytes back in: ~2000 minor faults per 1e6-parameter step and
~10000 at 1e7, measured at 17 ms of a 37 ms step (1e6, Redis) and 70 ms of 195 ms (1e7).
With mmap off and a high trim threshold the same memory is reused from the heap (~70 and
~200 faults a step; p50 20 ms and 126 ms). The price: up to `OPTD_MALLOC_TRIM_MB` of
freed memory stays resident after a burst (the peak is unchanged).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("optd")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
_done = False


def keep_freed_memory(trim_mb: int) -> bool:
    """Once per process; False where there is no glibc mallopt (musl, macOS) or trim_mb
    is 0 (leave the allocator alone)."""
    global _done
    if _done or trim_mb <= 0:
        return _done
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = min(trim_mb * 2**20, 2**31 - 1)
    _done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
    if not _done:
        log.warning("mallopt refused the settings; freed buffers go back to the kernel")
    return _done
