"""The reference loop of ``bench_produce.py`` under the Spark workers' process settings, interleaved.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_loop_settings.py [--rounds 3] [--repeats 3] [--clim CLIMATOLOGY_JSON]

Each round runs, in a fresh process each, the one-process loop over the demo's first 4 dates (16
tiles) ``--repeats`` times after a warm-up pass, with: nothing changed (``plain``); glibc's heap
kept between tiles (``alloc``: :func:`ssm_spark.allocator.keep_tile_memory`, as the workers do with
``produce.keep_tile_memory``); the objects at start frozen out of the collector's reach (``freeze``:
``gc.freeze()``, as ``product.tasks._freeze``); and both. Printed: pixels per CPU-second and per
second of each variant, median and every repeat. Session 10 (docs/performance.md): the four medians
225-236 CPU-ms a tile (278,000-291,000 px per CPU-s), every variant spanning ~200-246 ms, so the
spread between runs minutes apart is the host's, not these settings'. ``--clim``: the climatology summary ``bench_produce.py``'s ``clim`` child builds (e.g.
``/tmp/spark-acct-climatology/climatology.json`` after ``spark_cpu_account.py``); without it the loop
attaches none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("plain", "alloc", "freeze", "alloc+freeze")


def child(a: argparse.Namespace) -> None:
    """One variant: ``bench_produce.run_reference``'s loop (its setup first, then one pass a ``next``)."""
    sys.path.insert(0, str(HERE))
    import bench_produce as B

    loop = B.run_reference(argparse.Namespace(models=a.models, stacks=a.stacks, dates=a.dates, clim=a.clim, set=[]))
    next(loop)  # the setup: config, registry, files
    if "alloc" in a.variant:
        from ssm_spark.allocator import keep_tile_memory

        keep_tile_memory()
    if "freeze" in a.variant:
        import gc

        gc.collect()
        gc.freeze()
    next(loop)  # the first pass warms the caches
    print(json.dumps([next(loop) for _ in range(a.repeats)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clim", default="", help="a climatology summary (climatology.json) to attach")
    ap.add_argument("--variant", default="", choices=("", *VARIANTS), help=argparse.SUPPRESS)
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
        cpu = [x["cpu_rate"] for x in xs]
        print(f"{v:13s} px per CPU-s {statistics.median(cpu):9,.0f}, px/s {statistics.median(x['rate'] for x in xs):9,.0f}"
              f"  (px per CPU-s of every repeat: {', '.join(f'{c:,.0f}' for c in cpu)})")

if __name__ == "__main__":
    main()
