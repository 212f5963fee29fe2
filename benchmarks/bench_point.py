"""Point retrieval latency: Python API (cold and warm), a one-year series, the HTTP service, the CLI.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_point.py --models out/demo/models --stacks out/demo/sim/stacks \
        [--n 200] [--repeats 3] [--set region.size_km=[512,512]]

What is measured (wall clock, ``time.perf_counter``; medians over ``--repeats`` runs of each figure):

- ``cold_start_s``: a fresh process importing ssm_spark, loading the registry (Boosters built) and
  answering its first point (subprocess, ``ssm-spark point``-equivalent Python).
- ``point_ms`` (p50, p95): ``--n`` random land cells and stack dates, one query each, through
  ``PointService.point`` reading only the queried cell (``cache_files=0``: the CLI's path, every
  query opens the stack files and decompresses the tile's block of every band).
- ``point_cached_ms``: ``--n`` random cells of the first two dates with the pixel tables of their
  files kept in memory (``cache_files=16``, the service once a tile and date were read).
- ``series_ms``: every stack date at one point (the demo has 31 dates over six months; a year of
  Sentinel-1 at one orbit is about 61), uncached and cached.
- ``http_ms``: ``GET /point`` of the cached queries on the real server on 127.0.0.1, one connection per
  request.
- ``cpu_p50``: the median CPU time of one query in this process (the machine's load does not
  inflate it as it does wall time; the Python thread is single-threaded, XGBoost uses 1 thread).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


_CPU: list[float] = []  # median CPU ms per query of each run (the machine's load does not inflate it)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _queries(svc, n: int, seed: int, dates: list[str] | None = None) -> list[tuple[float, float, str]]:
    """n (lat, lon, date) of cells inside the stack files of ``dates`` (default: all), seeded."""
    from ssm_spark.sources.stacks import discover

    rng = np.random.default_rng(seed)
    dates = dates or svc.dates()
    inv = discover(svc.stacks.root, svc.grid, svc.stacks.static, start=None)
    files = {}
    for f in inv.files:
        files.setdefault(f.date, []).append(f)
    out = []
    while len(out) < n:
        d = dates[int(rng.integers(len(dates)))]
        f = files[d][int(rng.integers(len(files[d])))]
        r, c = f.row_off + int(rng.integers(f.height)), f.col_off + int(rng.integers(f.width))
        lon, lat = svc.grid.to_lonlat(r, c)
        out.append((lat, lon, d))
    return out


def _time_points(svc, qs) -> list[float]:
    from ssm_spark.point import PointError

    ts, cpu = [], []
    for lat, lon, d in qs:
        t, c = time.perf_counter(), time.process_time()
        try:
            svc.point(lat, lon, d, strict=False)
        except PointError:
            pass
        ts.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    _CPU.append(statistics.median(cpu))
    return ts


def _cold(models: str, stacks: str, sets: list[str], q) -> float:
    code = (f"import time; t=time.perf_counter()\n"
            f"from ssm_spark.config import load_config\nfrom ssm_spark.point import PointService\n"
            f"s=PointService(load_config(overrides={sets!r}), {models!r}, {stacks!r})\n"
            f"s.point({q[0]!r}, {q[1]!r}, {q[2]!r}, strict=False)\nprint(time.perf_counter()-t)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()

    from ssm_spark.config import load_config
    from ssm_spark.point import PointService
    from ssm_spark.serve import serve_in_thread

    cfg = load_config(overrides=args.sets)
    svc = PointService(cfg, args.models, args.stacks)
    cached = PointService(cfg, svc.registry, args.stacks, cache_files=16)
    qs = _queries(svc, args.n, 1)
    qs_hot = _queries(svc, args.n, 2, dates=svc.dates()[:2])  # within the cache (2 dates: 8 demo files)
    res: dict = {"n": args.n, "repeats": args.repeats, "registry": str(args.models), "stacks": str(args.stacks),
                 "dates": len(svc.dates())}
    res["cold_start_s"] = statistics.median(_cold(args.models, args.stacks, args.sets, qs[0])
                                            for _ in range(args.repeats))
    _time_points(svc, qs[:5])  # first predictions build nothing more, but warm the OS file cache
    runs = [_time_points(svc, qs) for _ in range(args.repeats)]
    res["point_ms"] = {"p50": statistics.median(_pct(r, 50) for r in runs),
                       "p95": statistics.median(_pct(r, 95) for r in runs),
                       "cpu_p50": statistics.median(_CPU[-args.repeats:])}
    _time_points(cached, qs_hot)  # fill the cache
    runs = [_time_points(cached, qs_hot) for _ in range(args.repeats)]
    res["point_cached_ms"] = {"p50": statistics.median(_pct(r, 50) for r in runs),
                              "p95": statistics.median(_pct(r, 95) for r in runs),
                              "cpu_p50": statistics.median(_CPU[-args.repeats:])}
    res["load_average_1min"] = os.getloadavg()[0]
    lat, lon, _ = qs[0]
    dates = svc.dates()
    for name, s in (("series_ms", svc), ("series_cached_ms", cached)):
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = s.series(lat, lon, dates[0], dates[-1])
            ts.append((time.perf_counter() - t) * 1000)
        res[name] = {"median": statistics.median(ts), "dates": out["n"] + len(out["skipped"])}
    srv, _ = serve_in_thread(cached, "127.0.0.1", 0)
    port = srv.server_address[1]
    try:
        runs = []
        for _ in range(args.repeats):
            ts = []
            for la, lo, d in qs_hot:
                t = time.perf_counter()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", f"/point?lat={la!r}&lon={lo!r}&date={d}")
                conn.getresponse().read()
                conn.close()
                ts.append((time.perf_counter() - t) * 1000)
            runs.append(ts)
        res["http_ms"] = {"p50": statistics.median(_pct(r, 50) for r in runs),
                          "p95": statistics.median(_pct(r, 95) for r in runs)}
    finally:
        srv.shutdown()
        srv.server_close()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
