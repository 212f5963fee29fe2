"""Product throughput: the produce pipeline in one Python process (reference) vs on Spark local[1], local[2].

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_produce.py [--models out/demo/models] [--stacks out/demo/sim/stacks]
                                                 [--dates 2] [--repeats 3]

Every path does the same work per stack file (a 256 x 256 tile of the demo region): read the
feature tile (rasterio), masks and environment, coupled physics with the registry's WCM parameters,
the model selected per environment (XGBoost, 1 thread per task), and one zstd Parquet file per
tile. The reference calls the library functions that the Spark tasks call
(:func:`ssm_spark.product.tiles.read_clipped`, ``predict_rows``, ``write_tile``) in a loop; Spark
runs ``produce`` itself (``produce.cog=false``, ``produce.quicklook=false``, ``force``), so its
figure includes the driver's work per date (listing, job launch, commit). A last Spark local[2]
run with COGs, VRT and quicklooks shows what the raster outputs add, and a profile of the reference
loop splits its time into reading, physics, XGBoost, Parquet and COG writing.

Each configuration runs in its own process (clean memory figures): pixels/s is the median over
the repeats (after one warm-up date for Spark); peak RSS is the largest sum of resident memory of
the process and all its descendants (JVM, Python workers), sampled every 0.1 s from /proc.
The 10-million-cell estimate divides 1e7 by the measured local[2] rate, and by that rate scaled to
16 and 64 cores with the measured local[2]/local[1] efficiency (an assumption, said so in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ memory sampling


def _tree_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class PeakRSS:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_kib(os.getpid()))
            self._stop.wait(0.1)

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


# ------------------------------------------------------------------------------------------ workers


def _dates(stacks: Path, n: int) -> list[str]:
    return sorted(p.name for p in stacks.iterdir() if p.is_dir() and p.name[:2] == "20")[:n]


def _reference_setup(a: argparse.Namespace):
    """What the reference and the profile share: config, grid, dates, registry (1 thread), region, files."""
    from ssm_spark.config import load_config
    from ssm_spark.models.registry import load_registry
    from ssm_spark.product.region import resolve_region
    from ssm_spark.sources.stacks import discover

    cfg = load_config()
    grid = cfg.grid.build()
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates)
    reg = load_registry(a.models, nthread=1).warm()
    region = resolve_region(None, cfg, grid)
    inv = discover(stacks, grid, stacks.parent / "static", cfg.ingest.band_aliases)
    return cfg, grid, dates, reg, region, inv


def run_reference(a: argparse.Namespace) -> dict:
    from ssm_spark.product import tiles as P
    from ssm_spark.product.tasks import _tile_of_file

    cfg, grid, dates, reg, region, inv = _reference_setup(a)
    rates, pixels = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            pixels = 0
            for d in dates:
                job = P.DateJob(d, grid, region, tmp, cfg.ingest.max_slope_deg, {"date": d}, None)
                (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
                for f in (f for f in inv.files if f.date == d):
                    px, _ = P.read_clipped(f, job)
                    s = P.write_tile(P.predict_rows(px, reg), *_tile_of_file(f, grid), job)
                    pixels += s["pixels"]
            rates.append(pixels / (time.perf_counter() - t0))
    return {"rates": rates, "pixels_per_run": pixels, "dates": dates}


def run_profile(a: argparse.Namespace) -> dict:
    """Where the time goes, per stage, in the reference loop (one pass, 1 thread): read + masks +
    clip, coupled physics, XGBoost (point + quantile models), Parquet, COG."""
    from ssm_spark.models import candidates
    from ssm_spark.product import tiles as P
    from ssm_spark.product.cog import tile_arrays, write_tile_cog
    from ssm_spark.product.tasks import _tile_of_file

    cfg, grid, dates, reg, region, inv = _reference_setup(a)
    t = dict.fromkeys(("read", "physics", "xgboost", "parquet", "cog"), 0.0)
    orig = candidates.add_physics

    def timed_physics(*args, **kw):
        t0 = time.perf_counter()
        try:
            return orig(*args, **kw)
        finally:
            t["physics"] += time.perf_counter() - t0

    candidates.add_physics = timed_physics
    pixels = 0
    with tempfile.TemporaryDirectory() as tmp:
        for d in dates:
            job = P.DateJob(d, grid, region, tmp, cfg.ingest.max_slope_deg, {"date": d}, None)
            (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
            for f in (f for f in inv.files if f.date == d):
                t0 = time.perf_counter()
                px, _ = P.read_clipped(f, job)
                t1 = time.perf_counter()
                phys0 = t["physics"]
                rows = P.predict_rows(px, reg)
                t2 = time.perf_counter()
                tr, tc = _tile_of_file(f, grid)
                P.write_tile(rows, tr, tc, job)
                t3 = time.perf_counter()
                data = tile_arrays(rows, grid, tr, tc, ("ssm", "qc"))
                write_tile_cog(Path(tmp) / f"{d}_{tr}_{tc}.tif", data, grid, tr, tc, ("ssm", "qc"), {"date": d})
                t4 = time.perf_counter()
                t["read"] += t1 - t0
                t["xgboost"] += (t2 - t1) - (t["physics"] - phys0)
                t["parquet"] += t3 - t2
                t["cog"] += t4 - t3
                pixels += len(px)
    candidates.add_physics = orig
    return {"stage_seconds": t, "pixels": pixels, "rates": [0.0]}


def run_spark(a: argparse.Namespace) -> dict:
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.product.produce import produce
    from ssm_spark.spark import session

    logging.basicConfig(level=logging.WARNING)
    outputs = ["produce.cog=true", "produce.quicklook=true"] if a.full else ["produce.cog=false", "produce.quicklook=false"]
    cfg = load_config(overrides=[f"spark.master=local[{a.cores}]", f"spark.shuffle_partitions={a.cores}",
                                 "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
                                 "spark.driver.memory: 4g}", *outputs])
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates + 1)
    spark = session(cfg.spark)
    rates, pixels, per_date = [], 0, []
    with tempfile.TemporaryDirectory() as tmp:
        produce(spark, cfg, a.models, stacks, None, dates[-1], dates[-1], Path(tmp) / "warm")  # warm the workers
        for i in range(a.repeats):
            t0 = time.perf_counter()
            s = produce(spark, cfg, a.models, stacks, None, dates[0], dates[-2], Path(tmp) / "out", force=True)
            rates.append(s["pixels"] / (time.perf_counter() - t0))
            pixels = s["pixels"]
            per_date += [v["seconds"] for v in s["dates"].values()]
    spark.stop()
    return {"rates": rates, "pixels_per_run": pixels, "dates": dates[:-1], "date_seconds": per_date}


def child(a: argparse.Namespace) -> None:
    with PeakRSS() as mem:
        res = {"ref": run_reference, "spark": run_spark, "profile": run_profile}[a.mode](a)
    res["peak_rss_tree_mib"] = round(mem.peak / 1024)
    res["maxrss_self_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    res["maxrss_largest_child_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print("RESULT " + json.dumps(res), flush=True)


def _spawn(a: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--models", a.models, "--stacks", a.stacks, "--dates", str(a.dates),
           "--repeats", str(a.repeats), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(extra)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--dates", type=int, default=2, help="dates per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["ref", "spark", "profile"], default="ref", help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    load = os.getloadavg()
    print(f"bench_produce: {a.dates} date(s) x {a.repeats} repeats, demo region, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (a shared machine: figures are noisy)")
    ref = _spawn(a, "--mode", "ref")
    s1 = _spawn(a, "--mode", "spark", "--cores", "1")
    s2 = _spawn(a, "--mode", "spark", "--cores", "2")
    full = _spawn(argparse.Namespace(**{**vars(a), "repeats": 1}), "--mode", "spark", "--cores", "2", "--full")
    med = {k: statistics.median(v["rates"]) for k, v in (("ref", ref), ("s1", s1), ("s2", s2), ("full", full))}

    def runs(v: dict) -> str:
        return ", ".join(f"{r:,.0f}" for r in v["rates"])

    print(f"pixels per run: {ref['pixels_per_run']:,} ({len(ref['dates'])} dates: {', '.join(ref['dates'])})")
    print(f"reference, 1 process, 1 core:   {med['ref']:>9,.0f} px/s  (runs {runs(ref)})  peak RSS {ref['peak_rss_tree_mib']:,} MiB")
    print(f"spark local[1]:                 {med['s1']:>9,.0f} px/s  (runs {runs(s1)})  peak RSS {s1['peak_rss_tree_mib']:,} MiB "
          f"(driver {s1['maxrss_self_mib']:,}, largest child {s1['maxrss_largest_child_mib']:,})")
    print(f"spark local[2]:                 {med['s2']:>9,.0f} px/s  (runs {runs(s2)})  peak RSS {s2['peak_rss_tree_mib']:,} MiB "
          f"(driver {s2['maxrss_self_mib']:,}, largest child {s2['maxrss_largest_child_mib']:,})")
    print(f"spark local[2] + COG/VRT/PNG:   {med['full']:>9,.0f} px/s  (1 run)  peak RSS {full['peak_rss_tree_mib']:,} MiB")
    print(f"ratio local[1] / reference (equal cores): {med['s1'] / med['ref']:.2f}")
    print(f"ratio local[2] / reference:               {med['s2'] / med['ref']:.2f}")
    print(f"scaling local[2] / local[1]:              {med['s2'] / med['s1']:.2f}")
    print(f"COG + VRT + quicklook (local[2]):         {med['full'] / med['s2'] - 1:+.0%} px/s vs Parquet only")
    prof = _spawn(argparse.Namespace(**{**vars(a), "repeats": 1}), "--mode", "profile")
    st = prof["stage_seconds"]
    total = sum(st.values())
    print("where the time goes (reference loop, 1 thread, with a COG per tile): " + ", ".join(
        f"{k} {v / total:.0%}" for k, v in st.items()) + f" of {total:.1f} s for {prof['pixels']:,} px")
    eff = min(1.0, (med["s2"] / med["s1"]) / 2)
    per_core = med["full"] / 2
    print(f"10-million-cell date: {1e7 / med['full'] / 60:.1f} min at the local[2] rate with rasters on this machine; "
          f"{1e7 / (per_core * 16 * eff) / 60:.1f} min on 16 cores, {1e7 / (per_core * 64 * eff) / 60:.1f} min on 64 "
          f"(assumes the measured local[2] efficiency {eff:.2f} holds; tiles are independent tasks)")


if __name__ == "__main__":
    main()
