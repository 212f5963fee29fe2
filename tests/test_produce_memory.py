"""produce keeps bounded memory: a region 4x the area (4x the pixels) raises no process's peak memory.

One subprocess with its own Spark session (``local[2]``, ``spark.driver.memory=512m``) produces a
small region (256 x 256 km on ease2_1km, 4 tiles of 128 cells) and then a region 4 times its area
(512 x 512 km, 16 tiles), 3 dates each, with COGs, VRTs and quicklooks (the quicklook's read capped
at the small region's side in both runs, as ``produce.quicklook_max_px`` caps it for real regions). After each run the kernel's
high-water mark (``VmHWM``) of every process of the tree is read from ``/proc`` and classified
(driver Python, driver JVM, Python workers; ``benchmarks/bench_produce_memory.py`` holds the
sampler), and the JVM reports its heap through ``java.lang.management``. High-water marks only
rise, so "the large run raised the mark by at most 10 % + 48 MiB" says that its peak stayed within
that of the small region although it had 4x the pixels. The registry is trained without Spark on
synthetic matchups (its values do not matter here; its size is the same in both runs).

What the tolerance can and cannot see is checked, not assumed: the large product's rows held in one
process (as pandas, the cheapest form) would take more than twice any allowance, so a process that
kept the product (or collected its rows) fails the test. A process that held one date of rows
grows by less than that here; ``bench_produce_memory.py`` covers that with the 512 km demo region
at 1x, 4x and 9x.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ssm_spark.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_produce_memory as bench  # noqa: E402  (the /proc sampler and the produce subprocess)

TILE = 128
SMALL_KM, LARGE_KM = 256, 512  # 4 and 16 tiles of 128 x 128 cells; 65,536 and 262,144 cells per date
DATES = 3
DRIVER_MEMORY = "512m"
REL, ABS_MIB = 0.10, 48.0  # allowed rise of a high-water mark: 10 % of the small run's + 48 MiB


def _synthetic_matchups(seed: int = 5) -> pd.DataFrame:
    """A matchup table (two environments, 8 stations x 12 dates each) with a precipitation-driven SSM."""
    rng = np.random.default_rng(seed)
    frames = []
    for env in ("cropland_C", "grassland_C"):
        ns, nd = 8, 12
        n = ns * nd
        clay, precip = np.repeat(rng.uniform(5, 40, ns), nd), rng.gamma(0.8, 10.0, n)
        vv = rng.normal(-11, 2, n)
        frames.append(pd.DataFrame({
            "station_id": np.repeat([f"{env}.S{i:02d}" for i in range(ns)], nd), "network": "SYN",
            "date": np.tile(pd.date_range("2024-04-01", periods=nd, freq="6D").date, ns),
            "vv_db": vv, "vh_db": vv - 8 + rng.normal(0, 1, n), "incidence_deg": rng.uniform(30, 46, n),
            "ndvi": rng.uniform(0.05, 0.6, n), "lst_k": rng.uniform(280, 305, n), "precip_mm": precip,
            "clay_pct": clay, "sand_pct": 40.0, "bulk_density": 1.35,
            "elevation_m": np.repeat(rng.uniform(0, 800, ns), nd), "slope_deg": 1.0, "qc": 0, "env": env,
            "ssm": 0.06 + 0.25 * (1 - np.exp(-precip / 15.0)) + 0.003 * clay + rng.normal(0, 0.01, n),
        }))
    return pd.concat(frames, ignore_index=True)


def _registry(path: Path) -> Path:
    from ssm_spark.models import registry, selection

    cfg = load_config(overrides=["train.k_folds=2", "train.min_stations=4", "train.min_samples=30",
                                 "train.candidates=[physics, xgb_raw, global]", "train.xgb.n_estimators=20",
                                 "train.xgb.nthread=1"])
    registry.save_registry(path, selection.train_models(_synthetic_matchups(), cfg), cfg)
    return path


def _region(km: int) -> list[str]:
    """A km x km region about the demo centre, DATES consecutive dates, little spin-up (fast to simulate)."""
    return bench.region_overrides(1, DATES, 8, base_km=km, tile_size=TILE, revisit_days=1, spinup_days=1)


def _pandas_bytes_per_row(product: Path) -> float:
    """In-memory bytes of one product row as pandas (deep), from one of the product's files."""
    f = next(product.glob("parquet/date=*/*.parquet"))
    df = pq.read_table(f).to_pandas()
    return float(df.memory_usage(deep=True).sum()) / len(df)


@pytest.mark.slow
@pytest.mark.spark
def test_peak_memory_does_not_grow_with_the_region(tmp_path: Path):
    from ssm_spark.sources.simulate import simulate

    t0 = time.perf_counter()
    models = _registry(tmp_path / "models")
    # one simulation: the small region is the middle 2 x 2 tiles of the large one (both snap to tiles)
    sim = tmp_path / "sim"
    simulate(load_config(overrides=_region(LARGE_KM)), sim)
    # the quicklook's decimated read is capped by produce.quicklook_max_px (1024 by default, so it grows
    # with regions up to 1024 cells a side, and no further): cap both runs at the small region's side
    pin = [f"produce.quicklook_max_px={SMALL_KM}"]
    runs = [{"overrides": _region(km) + bench.spark_overrides(2, DRIVER_MEMORY) + pin, "models": models,
             "stacks": sim / "stacks", "output": tmp_path / f"product{km}"} for km in (SMALL_KM, LARGE_KM)]
    res, _ = bench.run_sampled(bench.produce_cmd(runs), timeout=900)
    small, large = res["runs"]
    elapsed = time.perf_counter() - t0

    # the products are complete: every cell of the region on every date, every file of every tile
    for km, r in ((SMALL_KM, small), (LARGE_KM, large)):
        tiles = (km // TILE) ** 2
        files = bench.output_files(tmp_path / f"product{km}")
        assert r["failed"] == 0 and r["dates"] == DATES and r["tiles"] == tiles
        assert r["region_cells"] == tiles * TILE**2 and r["pixels"] == r["region_cells"] * DATES == files["rows"]
        assert files["parquet"]["n"] == files["cog"]["n"] == tiles * DATES
        assert files["vrt"]["n"] == files["png"]["n"] == DATES
    assert large["pixels"] == 4 * small["pixels"]

    # the processes were all seen: a driver JVM, the driver Python and at least one Python worker
    for r in (small, large):
        assert r["hwm"]["driver_jvm"] > 100 and r["hwm"]["driver_py"] > 100 and r["hwm"]["worker_max"] > 100, r["hwm"]
        assert r["jvm"]["heap_max"] <= 600, r["jvm"]  # the small budget was in force

    # the tolerance can see a process that holds the large product's rows
    product_mib = large["pixels"] * _pandas_bytes_per_row(tmp_path / f"product{LARGE_KM}") / 2**20
    report = (f"small {small['pixels']:,} px: {small['hwm']}, jvm {small['jvm']}; large {large['pixels']:,} px: "
              f"{large['hwm']}, jvm {large['jvm']}; large product as pandas {product_mib:.0f} MiB; "
              f"{elapsed:.0f} s in all")
    print(report)
    for role in ("driver_py", "worker_max", "driver_jvm"):
        allowed = small["hwm"][role] * (1 + REL) + ABS_MIB
        assert product_mib > 2 * (allowed - small["hwm"][role]), report
        assert large["hwm"][role] <= allowed, f"{role} peak grew with the region: {report}"
    # the JVM heap: what it keeps (after a full GC) and what reached the old generation do not grow
    assert large["jvm"]["live_after_gc"] <= small["jvm"]["live_after_gc"] * (1 + REL) + ABS_MIB, report
    assert large["jvm"]["old_gen_peak"] <= small["jvm"]["old_gen_peak"] * (1 + REL) + ABS_MIB, report
