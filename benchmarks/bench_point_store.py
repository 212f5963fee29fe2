"""Point latency on stacks on object storage by URL against the same stacks in a folder.

Run by hand (not a test; needs the SeaweedFS binary that ``scripts/setup.sh`` builds)::

    .venv/bin/python benchmarks/bench_point_store.py --models out/demo/models --stacks out/demo/sim/stacks

Starts SeaweedFS's S3 gateway on loopback (``tests/s3server.py``), uploads the stacks and their
``static/`` folder, then for the folder and for the URL: a service started (``service_load_s``), its
first point (``cold_point_ms``: its date's files checked, as ``ssm-spark point`` does), every file
checked (``check_all_s``, as ``serve`` starts), the p50 of 50 points on cells of one date
(``p50_warm_same_date_ms``), of 50 on random dates (most touching a file for the first time), the
same 50 again, a 30-day series cold and warm, every date of the stacks as a series; the LISTs made on the store;
and a product tile's cell read on the store (:func:`tile_reads`: one row group, as produce writes
tiles, against row groups of 2048 rows). The
1-minute load average before and after. Figures measured: docs/object_storage.md, section 7.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def measure(cfg, models: str, stacks: str, seed: int = 0) -> dict:
    from ssm_spark.point import PointService

    grid = cfg.grid.build()
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    svc = PointService(cfg, models, stacks)
    load = time.perf_counter() - t
    dates = svc.dates()
    mid = dates[len(dates) // 3]
    f0 = svc.stacks._inv  # nothing checked yet: the first point checks its date's files (ssm-spark point's case)
    lon0, lat0 = grid.to_lonlat(*_centre(svc, mid))
    t = time.perf_counter()
    svc.point(lat0, lon0, mid, strict=False)
    cold = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    svc.stacks.check_all()  # as serve does at start-up
    check_all = time.perf_counter() - t
    files = [f for fs in f0.values() for f in fs]
    r0, c0 = min(f.row_off for f in files), min(f.col_off for f in files)
    r1, c1 = max(f.row_off + f.height for f in files), max(f.col_off + f.width for f in files)
    pts = [grid.to_lonlat(int(r), int(c))[::-1] for r, c in zip(rng.integers(r0, r1, 101), rng.integers(c0, c1, 101))]

    def q(lat: float, lon: float, d: str) -> float:
        t = time.perf_counter()
        svc.point(lat, lon, d, strict=False)
        return (time.perf_counter() - t) * 1e3

    same = [q(*p, mid) for p in pts[1:51]]
    pairs = [(p, dates[int(rng.integers(0, len(dates)))]) for p in pts[51:101]]
    first = [q(*p, d) for p, d in pairs]
    after = [q(*p, d) for p, d in pairs]
    d0 = dates[len(dates) // 4]
    d1 = (np.datetime64(d0) + np.timedelta64(29, "D")).astype(str)
    t = time.perf_counter()
    s1 = svc.series(*pts[3], d0, d1)
    ser_cold = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    svc.series(*pts[3], d0, d1)
    ser_warm = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    s3 = svc.series(*pts[7], dates[0], dates[-1])
    ser_all = (time.perf_counter() - t) * 1e3
    lists = getattr(svc.stacks, "listings", None)
    return {"service_load_s": round(load, 2), "cold_point_ms": round(cold, 1), "check_all_s": round(check_all, 2),
            "p50_warm_same_date_ms": round(statistics.median(same), 2),
            "p50_first_touch_random_dates_ms": round(statistics.median(first), 2),
            "p50_same_random_dates_again_ms": round(statistics.median(after), 2),
            "series_30d_cold_ms": round(ser_cold, 1), "series_30d_warm_ms": round(ser_warm, 1),
            "series_30d_n": s1["n"], "series_all_ms": round(ser_all, 1), "series_all_n": s3["n"],
            "lists": lists.lists if lists else None}


def tile_reads(fs, n: int = 256, seed: int = 0) -> dict:
    """A product tile's cell read on the store (``store.read_cell_row``): a 256 x 256 tile written as
    produce writes it (one row group) and with row groups of 2048 rows; cold (footer) and p50 of 50."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pandas as pd

    from ssm_spark.point.store import read_cell_row

    rng = np.random.default_rng(seed)
    r, c = np.repeat(np.arange(n), n).astype("i4") + 2048, np.tile(np.arange(n), n).astype("i4") + 17408
    t = pa.Table.from_pandas(pd.DataFrame({
        "grid": "ease2_1km", "tile_row": np.int32(8), "tile_col": np.int32(68), "row": r, "col": c,
        "ssm": rng.uniform(0.05, .5, n * n).astype("f4"), "ssm_p05": rng.uniform(0, .05, n * n).astype("f4"),
        "ssm_p95": rng.uniform(.5, .6, n * n).astype("f4"), "qc": rng.integers(0, 8, n * n).astype("i4"),
        "env": rng.choice(["crop/temperate", "forest/temperate"], n * n), "model_id": "m/u/xgb_coupled"}),
        preserve_index=False)
    out = {}
    for name, rg in (("one_row_group", 1 << 20), ("row_groups_2048", 2048)):
        p = Path(tempfile.mkdtemp()) / f"{name}.parquet"
        pq.write_table(t, p, compression="zstd", compression_level=3, write_statistics=True, row_group_size=rg)
        size = p.stat().st_size
        fs.put_file(str(p), f"bench-point/tiles/{name}.parquet")
        url = f"s3://bench-point/tiles/{name}.parquet"
        cold_n: dict = {}
        t0 = time.perf_counter()
        read_cell_row(fs, url, size, "v1", 2148, 17415, cold_n)
        cold = (time.perf_counter() - t0) * 1e3
        ms, warm_n = [], {}
        for _ in range(50):
            t0 = time.perf_counter()
            read_cell_row(fs, url, size, "v1", 2048 + int(rng.integers(0, n)), 17408 + int(rng.integers(0, n)), warm_n)
            ms.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"file_bytes": size, "cold_ms": round(cold, 1), "cold_requests": cold_n["requests"],
                     "cold_bytes": cold_n["bytes"], "p50_warm_ms": round(statistics.median(ms), 2),
                     "warm_requests_per_point": warm_n["requests"] / 50, "warm_bytes_per_point": warm_n["bytes"] // 50}
    return out


def _centre(svc, date: str) -> tuple[int, int]:
    """A cell of the date's first stack file (listed, not checked)."""
    from ssm_spark import storage

    name = sorted(p.name for p, is_dir in storage.listdir(f"{svc.stacks.root}/{date}") if not is_dir)[0]
    tr, tc = (int(x) for x in Path(name).stem.split("_")[-2:])
    n = svc.grid.tile_size
    return tr * n + n // 2, tc * n + n // 3


def main() -> None:
    import s3server

    from ssm_spark import storage
    from ssm_spark.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=str(ROOT / "out/demo/models"))
    ap.add_argument("--stacks", default=str(ROOT / "out/demo/sim/stacks"))
    ap.add_argument("--set", action="append", default=[], help="configuration overrides (as ssm-spark --set)")
    args = ap.parse_args()
    cfg = load_config(overrides=args.set)
    srv = s3server.start(Path(tempfile.mkdtemp(prefix="bench-point-store-")))
    os.environ.update(srv.env())
    try:
        fs = storage.filesystem("s3://bench-point")
        for attempt in range(60):  # the gateway listens before its filer is ready
            try:
                fs.mkdir("bench-point")
                break
            except Exception:  # noqa: BLE001
                if attempt == 59:
                    raise
                time.sleep(0.5)
        stacks = Path(args.stacks)
        t = time.perf_counter()
        fs.put(str(stacks), "bench-point/data/stacks", recursive=True)
        if (stacks.parent / "static").is_dir():
            fs.put(str(stacks.parent / "static"), "bench-point/data/static", recursive=True)
        out = {"upload_s": round(time.perf_counter() - t, 1), "load_before": os.getloadavg()[0]}
        out["local"] = measure(cfg, args.models, str(stacks))
        out["store"] = measure(cfg, args.models, "s3://bench-point/data/stacks")
        out["product_tile_on_store"] = tile_reads(fs)
        out["load_after"] = os.getloadavg()[0]
        print(json.dumps(out, indent=1))
    finally:
        srv.proc.kill()
        srv.proc.wait(10)


if __name__ == "__main__":
    main()
