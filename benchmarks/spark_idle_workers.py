"""Does PySpark stop its idle Python workers? The workers' PIDs before and after pauses.

Run by hand (not a test)::

    .venv/bin/python benchmarks/spark_idle_workers.py [PAUSE_S ...]   # default: 20 45 75

Prints the PIDs of the Python workers that ran a small job on local[2], then again after each
pause. Spark 4.0's PythonWorkerFactory stops a worker idle for about a minute: a new worker forks,
imports and (in ``produce``) builds its registry again. This is why the served Spark children of
``bench_produce.py`` keep theirs busy between repeats (``_WorkerKeeper``)."""

from __future__ import annotations

import os
import sys
import time

from pyspark.sql import SparkSession


def main() -> None:
    pauses = [float(x) for x in sys.argv[1:]] or [20.0, 45.0, 75.0]
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    sc = spark.sparkContext

    def pids() -> list[int]:  # 8 tasks of 0.2 s on 2 slots: both workers run some
        return sorted(set(sc.parallelize(range(8), 2).map(lambda _: (time.sleep(0.2), os.getpid())[1]).collect()))

    a = pids()
    print(f"start: workers {a}", flush=True)
    for pause in pauses:
        time.sleep(pause)
        b = pids()
        print(f"after {pause:.0f} s idle: workers {b} ({'the same' if b == a else 'new'})", flush=True)
        a = b
    spark.stop()


if __name__ == "__main__":
    main()
