"""The workers' C heap (ssm_spark.allocator) and how a date's files are split into tasks."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ssm_spark.product.tasks import task_count

# A tile's pattern in small: many 512 KiB arrays written, all freed, again; the minor page faults of
# the last 8 rounds (the first warms the heap), in a fresh process with or without the settings.
_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "kept":
    from ssm_spark.allocator import keep_tile_memory
    assert keep_tile_memory() and keep_tile_memory()   # once per process; a second call is a no-op
def round_():
    arrays = [np.full(65536, float(i)) for i in range(48)]   # 48 x 512 KiB, each written
    return sum(float(a[-1]) for a in arrays)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_kept_heap_does_not_fault_its_tiles_memory_in_again():
    default, kept = _faults("default"), _faults("kept")
    # default glibc: the heap's top is trimmed after every round and faulted in again (8 x 24 MiB
    # = ~49,000 pages); kept: the same memory reused, a few faults at most
    assert default > 20_000, default
    assert kept < default / 20, (kept, default)


@pytest.mark.parametrize("n, slots, min_files, tasks", [
    (4, 1, 4, 1),       # a 4-tile date on local[1]: one task (was 4)
    (4, 2, 4, 2),       # on local[2]: one a core
    (16, 2, 4, 4),
    (156, 2, 4, 39),    # a national date: 4 tiles a task (was 8 tasks of ~20)
    (156, 64, 4, 64),   # many cores: every one gets a task
    (3, 8, 4, 3),       # fewer files than cores: one a task
    (4, 1, 1, 4),       # min_files_per_task=1: one file a task
    (0, 2, 4, 1),
])
def test_task_count(n, slots, min_files, tasks):
    assert task_count(n, slots, min_files) == tasks
