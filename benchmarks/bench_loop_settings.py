"""The reference loop of ``bench_produce.py`` under the Spark workers' process settings, interleaved.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_loop_settings.py [--rounds 3] [--repeats 3] [--clim CLIMATOLOGY_JSON]

Each round runs, in a fresh process each, the one-process loop over the demo's first 4 dates (16
tiles) ``--repeats`` times after a warm-up pass, with: nothing changed (``plain``); glibc's heap
kept between tiles (``alloc``: :func:`ssm_spark.allocator.keep_tile_memory`, as the workers do with
``produce.keep_tile_memory``); the objects at start frozen out of the collector's reach (``freeze``:
``gc.freeze()``, as ``product.tasks._freeze``); and both. Printed: the CPU and wall milliseconds a
tile, median and every repeat. Session 10 (docs/performance.md): the four medians 225-236 ms with
every variant spanning ~200-246, so the spread between runs minutes apart is the host's, not these
settings'. ``--clim``: the climatology summary ``bench_produce.py``'s ``clim`` child builds (e.g.
``/tmp/spark-acct-climatology/climatology.json`` after ``spark_cpu_account.py``); without it the loop
attaches none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("plain", "alloc", "freeze", "alloc+freeze")


def child(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    import bench_produce as B

    from ssm_spark.product import tiles as P
    from ssm_spark.product.tasks import _tile_of_file

    ns = argparse.Namespace(models=a.models, stacks=a.stacks, dates=a.dates, clim=a.clim, set=[])
    cfg, grid, dates, reg, region, inv, clim = B._reference_setup(ns)
    if "alloc" in a.variant:
        from ssm_spark.allocator import keep_tile_memory

        keep_tile_memory()
    if "freeze" in a.variant:
        import gc

        gc.collect()
        gc.freeze()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats + 1):  # the first pass warms the caches
            c0, t0, n = time.process_time(), time.perf_counter(), 0
            for d in dates:
                job = B._job(cfg, grid, region, d, tmp, clim)
                (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
                for f in (f for f in inv.files if f.date == d):
                    px, _ = P.read_tile_columns(f, job)
                    P.write_tile(P.predict_tile(px, reg), *_tile_of_file(f, grid), job)
                    n += 1
            if rep:
                out.append([(time.process_time() - c0) / n * 1e3, (time.perf_counter() - t0) / n * 1e3])
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clim", default="", help="a climatology summary (climatology.json) to attach")
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        return child(a)
    res: dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(a.rounds):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", v, "--models", a.models, "--stacks", a.stacks,
                   "--dates", str(a.dates), "--repeats", str(a.repeats), "--clim", a.clim]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"bench_loop_settings: the {v} child failed:\n{p.stderr[-3000:]}")
            res[v].extend(json.loads(p.stdout.strip().splitlines()[-1]))
    for v, xs in res.items():
        print(f"{v:13s} CPU ms a tile {statistics.median(x[0] for x in xs):6.1f}, wall "
              f"{statistics.median(x[1] for x in xs):6.1f}  (CPU of every repeat: {[round(x[0]) for x in xs]})")


if __name__ == "__main__":
    main()
