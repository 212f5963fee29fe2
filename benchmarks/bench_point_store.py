"""Point latency on stacks on object storage by URL against the same stacks in a folder.

Run by hand (not a test; needs the SeaweedFS binary that ``scripts/setup.sh`` builds)::

    .venv/bin/python benchmarks/bench_point_store.py --models out/demo/models --stacks out/demo/sim/stacks

Starts SeaweedFS's S3 gateway on loopback (``tests/s3server.py``), uploads the stacks and their
``static/`` folder, then for the folder and for the URL: a service started (``service_load_s``), its
first point (``cold_point_ms``: its date's files checked, as ``ssm-spark point`` does), every file
checked (``check_all_s``, as ``serve`` starts), the p50 of 50 points on cells of one date
(``p50_warm_same_date_ms``), of 50 on random dates (most touching a file for the first time), the
same 50 again, a 30-day series cold and warm, every date of the stacks as a series; the LISTs made on the store. The
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
        out["load_after"] = os.getloadavg()[0]
        print(json.dumps(out, indent=1))
    finally:
        srv.proc.kill()
        srv.proc.wait(10)


if __name__ == "__main__":
    main()
