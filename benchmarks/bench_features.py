"""Coupled-feature throughput: the numpy/pandas kernel alone vs the same kernel through Spark.

Run by hand (not a test):  .venv/bin/python benchmarks/bench_features.py [--rows 2000000] [--repeats 5]

Both paths process the same rows on the same machine. The reference is one Python process calling
``coupled_features`` on pandas chunks of the Arrow batch size; Spark runs ``add_coupled_features`` on
local[N] over a cached DataFrame and forces every row with a no-op write (``format("noop")``).
Prints pixels/s (median of the repeats), the ratio Spark/reference at equal cores, local[2]/local[1],
and peak memory (max RSS of this driver process and of the Python workers, from getrusage).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import pandas as pd


def make_rows(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "vv_db": rng.uniform(-20, -5, n), "vh_db": rng.uniform(-28, -12, n),
        "incidence_deg": rng.uniform(29, 46, n), "ndvi": rng.uniform(0.05, 0.85, n),
        "env": rng.choice(["cropland_C", "forest_D", "shrubgrass_B", "bare_B"], n),
        "qc": np.zeros(n, dtype="int32"),
    })


def reference(pdf: pd.DataFrame, batch: int) -> float:
    from ssm_spark.physics.features import coupled_features

    t0 = time.perf_counter()
    for i in range(0, len(pdf), batch):
        coupled_features(pdf.iloc[i:i + batch])
    return len(pdf) / (time.perf_counter() - t0)


def spark_rate(pdf: pd.DataFrame, cores: int, repeats: int, batch: int) -> list[float]:
    from ssm_spark.config import SparkConfig
    from ssm_spark.spark import session
    from ssm_spark.transforms import add_coupled_features

    spark = session(SparkConfig(master=f"local[{cores}]", arrow_batch_size=batch, shuffle_partitions=cores,
                                conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                                      "spark.driver.memory": "6g"}))
    df = spark.createDataFrame(pdf).repartition(cores * 4).cache()
    df.count()
    out = add_coupled_features(df)
    out.write.format("noop").mode("overwrite").save()  # warm the Python workers
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out.write.format("noop").mode("overwrite").save()
        rates.append(len(pdf) / (time.perf_counter() - t0))
    df.unpersist()
    spark.stop()
    from pyspark import SparkContext

    SparkContext._gateway = None  # let the next session start a fresh JVM with other cores
    SparkContext._jvm = None
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50_000)
    a = ap.parse_args()
    pdf = make_rows(a.rows)
    ref = [reference(pdf, a.batch) for _ in range(a.repeats)]
    ref_med = statistics.median(ref)
    print(f"rows={a.rows} batch={a.batch} repeats={a.repeats}")
    print(f"reference (1 process, 1 core): {ref_med:,.0f} px/s  (runs: {', '.join(f'{r:,.0f}' for r in ref)})")
    res = {}
    for cores in (1, 2):
        rates = spark_rate(pdf, cores, a.repeats, a.batch)
        res[cores] = statistics.median(rates)
        print(f"spark local[{cores}]: {res[cores]:,.0f} px/s  (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    print(f"ratio spark local[1] / reference (equal cores): {res[1] / ref_med:.2f}")
    print(f"ratio spark local[2] / reference (1 core):      {res[2] / ref_med:.2f}")
    print(f"scaling local[2] / local[1]:                    {res[2] / res[1]:.2f}")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: driver Python {self_mb:,.0f} MiB, largest child (JVM or Python worker) {kids_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
