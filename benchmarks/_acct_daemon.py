"""The PySpark worker daemon of ``benchmarks/spark_cpu_account.py``: ``ssm_spark.pyspark_daemon``
with each forked worker's CPU accounted by phase (not for production use).

Set as ``spark.python.daemon.module`` by the accounting script (with ``benchmarks/`` on the
workers' ``PYTHONPATH``). It does what :mod:`ssm_spark.pyspark_daemon` does (drops Spark's zips
from ``sys.path``), then wraps, in the daemon before it forks:

- ``pyspark.daemon.worker_main`` (one call per task: PySpark's protocol, the closure, the task's
  function): CPU and wall per call;
- the daemon's ``gc.collect()`` after every task of a reused worker;
- in each worker, at its first task: the imports of the per-tile path (timed once), then the
  per-tile functions ``read_tile_columns``, ``predict_tile``, ``write_tile`` and
  ``tasks._worker_registry`` (the Python worker's registry from the broadcast): CPU per call.

After every task the worker writes its figures to ``$SSM_ACCT_DIR/<pid>.json`` (replaced
atomically): process CPU (``os.times``), each phase's CPU, its tasks' (start, end) wall times.
CPU is ``time.process_time`` (the worker's every thread: XGBoost runs 1 thread per task here).
"""

from __future__ import annotations

import json
import os
import sys
import time

_STATS: dict = {}


def _new_stats() -> dict:
    return {"pid": os.getpid(), "forked_at": time.time(), "cpu_at_fork": sum(os.times()[:2]),
            "tasks": 0, "task_cpu": 0.0, "gc_cpu": 0.0, "gc_calls": 0, "import_cpu": 0.0,
            "fn_cpu": {}, "fn_calls": {}, "spans": []}


def _dump() -> None:
    d = os.environ.get("SSM_ACCT_DIR")
    if not d:
        return
    s = dict(_STATS, process_cpu=sum(os.times()[:2]), dumped_at=time.time())
    tmp = os.path.join(d, f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(s, f)
    os.replace(tmp, os.path.join(d, f"{os.getpid()}.json"))


def _timed(key: str, fn):
    def wrapper(*args, **kw):
        c0 = time.process_time()
        try:
            return fn(*args, **kw)
        finally:
            _STATS["fn_cpu"][key] = _STATS["fn_cpu"].get(key, 0.0) + time.process_time() - c0
            _STATS["fn_calls"][key] = _STATS["fn_calls"].get(key, 0) + 1
    return wrapper


def _instrument_worker() -> None:
    """In a freshly forked worker, before its first task: the per-tile path imported (timed) and wrapped."""
    global _STATS
    _STATS = _new_stats()
    c0 = time.process_time()
    from ssm_spark.product import tasks, tiles

    _STATS["import_cpu"] = time.process_time() - c0
    for name in ("read_tile_columns", "predict_tile", "write_tile"):
        wrapped = _timed(name, getattr(tiles, name))
        setattr(tiles, name, wrapped)  # the task's closure resolves these by reference when unpickled
        setattr(tasks, name, wrapped)
    tasks._worker_registry = _timed("_worker_registry", tasks._worker_registry)


class _GC:
    """The daemon's ``gc`` module, with ``collect`` timed."""

    def __getattr__(self, name):
        import gc

        return getattr(gc, name)

    @staticmethod
    def collect(*args):
        import gc

        c0 = time.process_time()
        try:
            return gc.collect(*args)
        finally:
            if _STATS:
                _STATS["gc_cpu"] += time.process_time() - c0
                _STATS["gc_calls"] += 1
                _dump()


def main() -> None:
    from ssm_spark.pyspark_daemon import strip_spark_zips

    kept = strip_spark_zips(sys.path)
    dropped = set(sys.path) - set(kept)
    sys.path[:] = kept
    for key in [k for k in sys.path_importer_cache if any(k == d or k.startswith(d + os.sep) for d in dropped)]:
        del sys.path_importer_cache[key]
    from pyspark import daemon

    real_main = daemon.worker_main

    def worker_main(infile, outfile):
        if not _STATS or _STATS["pid"] != os.getpid():
            _instrument_worker()
        t0, c0 = time.time(), time.process_time()
        try:
            return real_main(infile, outfile)
        finally:
            _STATS["task_cpu"] += time.process_time() - c0
            _STATS["tasks"] += 1
            _STATS["spans"].append((t0, time.time()))
            _dump()

    daemon.worker_main = worker_main
    daemon.gc = _GC()
    daemon.manager()


if __name__ == "__main__":
    main()
