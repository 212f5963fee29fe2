"""GeoTIFF stacks -> pixel table: Spark (rasterio on the executors) vs one process without Spark.

Run by hand (not a test), after `make demo` (or `ssm-spark simulate --output out/demo/sim`):
    .venv/bin/python benchmarks/bench_stacks.py [--stacks out/demo/sim/stacks] [--repeats 3]

Reference: one Python process reads every file with the same function the executors run
(`read_file_cells`: rasterio read, explode valid cells, lon/lat, environment, masks) into pandas.
Spark: `read_pixels` on local[1] and local[2], forced with a no-op write. Prints pixels/s (median),
the ratios, and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from ssm_spark.config import SparkConfig, load_config
    from ssm_spark.sources.stacks import discover, read_file_cells, read_pixels
    from ssm_spark.spark import session

    cfg = load_config()
    grid = cfg.grid.build()
    stacks = Path(a.stacks)
    inv = discover(stacks, grid, stacks.parent / "static")
    ref = []
    n = 0
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        n = sum(len(read_file_cells(f, grid, cfg.ingest.max_slope_deg)) for f in inv.files)
        ref.append(n / (time.perf_counter() - t0))
    ref_med = statistics.median(ref)
    print(f"{len(inv.files)} files, {n:,} pixels")
    print(f"reference (1 process, rasterio + pandas): {ref_med:,.0f} px/s  (runs: {', '.join(f'{r:,.0f}' for r in ref)})")
    res = {}
    for cores in (1, 2):
        spark = session(SparkConfig(master=f"local[{cores}]", conf={"spark.ui.enabled": "false", "spark.driver.memory": "4g",
                                                                    "spark.ui.showConsoleProgress": "false"}))
        df = read_pixels(spark, inv, grid, cfg.ingest.max_slope_deg)
        df.write.format("noop").mode("overwrite").save()
        rates = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            df.write.format("noop").mode("overwrite").save()
            rates.append(n / (time.perf_counter() - t0))
        res[cores] = statistics.median(rates)
        print(f"spark local[{cores}]: {res[cores]:,.0f} px/s  (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        spark.stop()
        from pyspark import SparkContext

        SparkContext._gateway = None
        SparkContext._jvm = None
    print(f"ratio local[1] / reference (equal cores): {res[1] / ref_med:.2f}")
    print(f"scaling local[2] / local[1]:             {res[2] / res[1]:.2f}")
    print(f"peak RSS: driver Python {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB, "
          f"largest child {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
