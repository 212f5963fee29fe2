"""Point retrieval latency: cold start, points, series, the HTTP service (wall and CPU time).

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_point.py --models out/demo/models --stacks out/demo/sim/stacks \
        [--n 200] [--repeats 3] [--set region.size_km=[512,512]] [--climatology DIR]

Every figure is the median over ``--repeats`` runs; wall clock (``time.perf_counter``) beside the CPU
time of this process (``time.process_time``: the machine's load inflates wall time, not CPU time;
XGBoost predicts on 1 thread here) and the 1-minute load average before and after.

- ``cold_start_s``: a fresh process importing ssm_spark, loading the registry (Boosters built) and
  answering its first point (``ssm-spark point``'s work, without the argument parsing).
- ``point_first_touch_ms``: a warm service (registry loaded, every file checked, as ``serve`` starts)
  answering ``--n`` queries each on a stack file it has not read yet: every query decodes the blocks
  holding its cell (a new service per run, so nothing is decoded before).
- ``point_ms``: the steady state: ``--n`` random cells and dates over every file, after one pass over
  all files (their decoded blocks in GDAL's block cache, the datasets open).
- ``series_365d_ms`` / ``series_demo_ms``: every date of a 365-day range from the first stack date,
  and of the stacks' own range (first to last date), at one point: ``cold`` at a tile no query has
  read (a new service, files checked), ``warm`` the same query again.
- ``http_point_ms`` / ``http_series_365d_ms``: ``GET /point`` of the steady-state queries and ``GET
  /series`` of the warm series on the real server on 127.0.0.1, one connection per request.

Measured 2026-12-01 on the demo (4 tiles x 31 dates, 124 stack files; 2 shared cores, 1-min load
2-3.6; two runs, each a median of 3; wall / CPU ms): cold start 1.9-2.5 s; first touch p50 18-23 /
18-23, p95 27-32; steady state p50 9.6-15 / 9.6-15, p95 14-21; series (31 dates, 365-day range) cold
234-286 / 226-259, warm 17-26 / 17-25; HTTP point p50 14-17, p95 22-25; HTTP series 21-26. Before
(datasets opened and whole bands read per query, one registry call per series): point p50 113, p95
166 (CPU 41); series 2 s. Of a steady-state point's ~10-15 ms CPU, ~10 is ``Registry.predict`` on a
one-row frame; a cold series is the decoding of 31 x 6 deflate strips of 256 x 256 (the stacks are
striped): the same files tiled 64 x 64 read 31 cold cells in 13 ms instead of 208 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _files(svc) -> list:
    from ssm_spark.sources.stacks import discover

    return discover(svc.stacks.root, svc.grid, svc.stacks.static).files


def _cell_query(svc, f, rng) -> tuple[float, float, str]:
    r, c = f.row_off + int(rng.integers(f.height)), f.col_off + int(rng.integers(f.width))
    lon, lat = svc.grid.to_lonlat(r, c)
    return lat, lon, f.date


def _time(fn, items) -> tuple[list[float], list[float]]:
    """Wall and CPU ms of ``fn(item)`` for each item."""
    from ssm_spark.point import PointError

    wall, cpu = [], []
    for it in items:
        t, c = time.perf_counter(), time.process_time()
        try:
            fn(it)
        except PointError:
            pass
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def _summary(runs: list[tuple[list[float], list[float]]]) -> dict:
    med = statistics.median
    return {"p50": round(med(_pct(w, 50) for w, _ in runs), 2), "p95": round(med(_pct(w, 95) for w, _ in runs), 2),
            "cpu_p50": round(med(_pct(c, 50) for _, c in runs), 2),
            "cpu_p95": round(med(_pct(c, 95) for _, c in runs), 2)}


def _cold(models: str, stacks: str, sets: list[str], clim, q) -> float:
    code = (f"import time; t=time.perf_counter()\n"
            f"from ssm_spark.config import load_config\nfrom ssm_spark.point import PointService\n"
            f"s=PointService(load_config(overrides={sets!r}), {models!r}, {stacks!r}, climatology={clim!r})\n"
            f"s.point({q[0]!r}, {q[1]!r}, {q[2]!r}, strict=False)\nprint(time.perf_counter()-t)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - t


def _get(port: int, target: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 404, 422):
            raise RuntimeError(f"GET {target}: HTTP {resp.status}")
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--climatology", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()

    from ssm_spark.config import load_config
    from ssm_spark.point import PointService
    from ssm_spark.serve import serve_in_thread

    load_before = os.getloadavg()[0]
    cfg = load_config(overrides=args.sets)

    def service():
        s = PointService(cfg, registry, args.stacks, climatology=args.climatology)
        s.stacks.check_all()  # as serve does at start-up
        return s

    first = PointService(cfg, args.models, args.stacks, climatology=args.climatology)
    registry = first.registry
    files = _files(first)
    dates = first.dates()
    rng = np.random.default_rng(1)
    res: dict = {"n": args.n, "repeats": args.repeats, "registry": str(args.models), "stacks": str(args.stacks),
                 "files": len(files), "dates": len(dates), "cpu_count": os.cpu_count()}
    q0 = _cell_query(first, files[0], rng)
    res["cold_start_s"] = round(statistics.median(_cold(args.models, args.stacks, args.sets, args.climatology, q0)
                                                  for _ in range(args.repeats)), 3)

    # first touch: one query per file, each file new to its service
    runs = []
    for k in range(args.repeats):
        svc = service()
        order = np.random.default_rng(10 + k).permutation(len(files))[:args.n]
        qs = [_cell_query(svc, files[i], rng) for i in order]
        runs.append(_time(lambda q: svc.point(*q, strict=False), qs))
    res["point_first_touch_ms"] = {**_summary(runs), "queries": len(runs[0][0])}

    # steady state: every file read once, then random cells and dates
    svc = service()
    for f in files:
        svc.point(*_cell_query(svc, f, rng), strict=False)
    qs = [_cell_query(svc, files[int(rng.integers(len(files)))], rng) for _ in range(args.n)]
    res["point_ms"] = _summary([_time(lambda q: svc.point(*q, strict=False), qs) for _ in range(args.repeats)])

    # series: a tile no query has read (a new service each run), then the same series again
    d0 = dt.date.fromisoformat(dates[0])
    spans = {"series_365d_ms": (dates[0], (d0 + dt.timedelta(days=364)).isoformat()),
             "series_demo_ms": (dates[0], dates[-1])}
    tiles = sorted({(f.row_off, f.col_off) for f in files})
    for name, (a, b) in spans.items():
        cold, warm = [], []
        for k in range(args.repeats):
            s = service()
            r0, c0 = tiles[k % len(tiles)]
            lon, lat = s.grid.to_lonlat(r0 + 17 + k, c0 + 29 + k)
            cold.append(_time(lambda _: s.series(lat, lon, a, b), [0]))
            warm.append(_time(lambda _: s.series(lat, lon, a, b), [0, 1, 2]))
        out = s.series(lat, lon, a, b)
        res[name] = {"start": a, "end": b, "dates": out["n"] + len(out["skipped"]), "points": out["n"],
                     "cold": _summary(cold), "warm": _summary(warm)}

    srv = serve_in_thread(svc, "127.0.0.1", 0)
    port = srv.server_address[1]
    try:
        targets = [f"/point?lat={la!r}&lon={lo!r}&date={d}" for la, lo, d in qs]
        res["http_point_ms"] = _summary([_time(lambda t: _get(port, t), targets) for _ in range(args.repeats)])
        lat, lon, _ = qs[0]
        a, b = spans["series_365d_ms"]
        svc.series(lat, lon, a, b)  # its blocks decoded: the warm figure
        target = f"/series?lat={lat!r}&lon={lon!r}&start={a}&end={b}"
        res["http_series_365d_ms"] = _summary([_time(lambda t: _get(port, t), [target] * 5)
                                               for _ in range(args.repeats)])
    finally:
        srv.server_close()
    res["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
