"""The C heap of a process that runs product tiles: glibc's malloc kept from returning memory per tile.

A 256 x 256 tile goes through a few hundred numpy arrays of 256 KiB-8 MiB (the bands, the
physics' temporaries, the feature matrix, the Parquet columns). With glibc's defaults, an array
above the (dynamic) mmap threshold is mapped and unmapped for itself, and the heap's top is
trimmed back to the system once 2x the largest freed chunk lies free there; so each tile faults
its memory in again: ~1,200-1,800 minor page faults and 5-14 CPU-ms of kernel time a tile on
this project's 2-core machine (benchmarks in docs/performance.md), against ~0 once the freed
memory stays in the heap. :func:`keep_tile_memory` sets, once per process:

- ``M_MMAP_THRESHOLD`` 32 MiB (glibc's maximum): arrays below it come from the heap;
- ``M_TRIM_THRESHOLD`` 256 MiB: free memory at the heap's top is returned beyond that only;
- ``M_TOP_PAD`` 64 MiB: the heap grows in steps of that much.

Setting them explicitly also turns off glibc's own adjustment of the first two. What it costs:
a worker keeps its largest tile's working set (plus at most 256 MiB free) between tiles instead of
returning it; its peak is the same, and it still does not grow with the region (one tile at a
time). The same can be had from the environment (``MALLOC_TRIM_THRESHOLD_`` etc., read at start);
the call reaches executors on any cluster without their environment. Elsewhere than glibc (musl,
macOS) nothing is changed. Called by the product's Spark tasks (``produce.keep_tile_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["SETTINGS", "keep_tile_memory"]

log = logging.getLogger(__name__)

#: glibc's mallopt parameters (malloc.h) and the values set: (name, parameter, value).
SETTINGS = (("M_MMAP_THRESHOLD", -3, 32 << 20), ("M_TRIM_THRESHOLD", -1, 256 << 20), ("M_TOP_PAD", -2, 64 << 20))

_DONE: bool | None = None


def keep_tile_memory() -> bool:
    """Set :data:`SETTINGS` with glibc's ``mallopt`` once per process; True when they are in force.

    False where the C library is not glibc (a debug line) or refuses a value (a warning): the process
    runs with its allocator's defaults, which changes its speed, not its results.
    """
    global _DONE
    if _DONE is not None:
        return _DONE
    _DONE = False
    if platform.libc_ver()[0] != "glibc":
        log.debug("allocator: C library %r is not glibc; its defaults are kept", platform.libc_ver()[0] or "unknown")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        log.debug("allocator: no mallopt (%s); defaults kept", exc)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    for name, param, value in SETTINGS:
        if mallopt(param, value) != 1:
            log.warning("allocator: glibc refused mallopt(%s, %d); its defaults kept for the rest (slower "
                        "tiles, the same results)", name, value)
            return False
    _DONE = True
    return True
