"""The PySpark worker daemon, minus a per-task cost of about 0.2 s (``spark.python.daemon.module``).

Spark starts Python workers with ``$SPARK_HOME/python/lib/pyspark.zip``, the py4j zip and the
spark-core jar on ``PYTHONPATH``. Before every task the worker calls
``importlib.invalidate_caches()`` (``pyspark.worker_util.setup_spark_files``), and since Python
3.10 a ``zipimporter`` re-reads its archive's whole directory when caches are invalidated: one
importer per package imported from the zip, about a dozen reads of a 3 MB archive (and of the
14 MB spark-core jar) per task. Measured here: 0.25 s per task for an empty task on local[1],
0.03 s without them (see ``benchmarks/bench_produce.py``).

When pyspark and py4j are installed as ordinary packages (pip, the set-up here), the zips are
copies of what is importable anyway. This daemon drops them from ``sys.path`` before forking the
workers, then runs PySpark's own daemon unchanged. Where pyspark is only in the zips (a cluster's
Spark distribution), nothing is dropped. :func:`ssm_spark.spark.session` sets it only when this
package is installed where the workers run (local mode).
"""

from __future__ import annotations

import os
import sys

_PREFIXES = ("pyspark", "py4j-", "spark-core")


def _importable_outside(paths: list[str], package: str) -> bool:
    return any(os.path.isfile(os.path.join(p, package, "__init__.py")) for p in paths if p and os.path.isdir(p))


def strip_spark_zips(path: list[str]) -> list[str]:
    """``path`` without Spark's pyspark/py4j zips and spark-core jar when pyspark and py4j are
    importable from a plain directory of ``path``; else ``path`` unchanged."""
    def is_spark_zip(p: str) -> bool:
        return p.endswith((".zip", ".jar")) and os.path.basename(p).startswith(_PREFIXES)

    rest = [p for p in path if not is_spark_zip(p)]
    if len(rest) == len(path) or not (_importable_outside(rest, "pyspark") and _importable_outside(rest, "py4j")):
        return list(path)
    return rest


def main() -> None:
    kept = strip_spark_zips(sys.path)
    dropped = set(sys.path) - set(kept)
    sys.path[:] = kept
    for key in [k for k in sys.path_importer_cache if any(k == d or k.startswith(d + os.sep) for d in dropped)]:
        del sys.path_importer_cache[key]
    from pyspark import daemon

    daemon.manager()


if __name__ == "__main__":
    main()
