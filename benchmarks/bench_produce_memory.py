"""Peak memory of ``ssm-spark produce`` against the size of the region (issue 6, bounded memory).

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_produce_memory.py [--scales 1,4,9] [--dates 3] [--repeats 2]
                                                        [--work out/bench_memory] [--models REGISTRY]

Regions: the simulator's demo region (``region.size_km`` 512 x 512 on ease2_1km, 256-cell tiles:
4 tiles, 262,144 cells) scaled by area, ``size_km = 512 * sqrt(scale)`` about the same centre
(4x: 1024 km, 16 tiles; 9x: 1536 km, 36 tiles), ``--dates`` dates each (6 days apart). Only the
stacks and static layers matter to ``produce``; the registry is trained once on the 1x region
(few stations, ``ssm-spark matchups`` + ``train`` with the default models) and reused for every
scale, or taken from ``--models``.

Each (scale, repeat) runs ``produce`` (Parquet + COG + VRT + quicklook, ``force``) in its own
process with its own Spark session on ``local[2]`` (``spark.driver.memory`` from
``--driver-memory``), while this process samples that process tree from ``/proc`` every
``--interval`` seconds and classifies each process by its command line:

* driver Python: the child process itself;
* driver JVM: its ``java`` descendant (in local mode the JVM is also the executor);
* Python workers: the ``pyspark.daemon`` (or ``ssm_spark.pyspark_daemon``) the JVM starts (reported apart) and the workers it forks.

A process's peak is the kernel's high-water mark ``VmHWM`` (exact between samples, not a sampled
RSS); "tree peak" is the largest sum of ``VmRSS`` over the tree at one sample (what the machine
had to hold at once). After the run, the child reads the JVM's own figures through py4j
(``java.lang.management``): the peak of the old generation, the sum of the heap pools' peaks (an
upper bound of the peak heap) and the heap in use after a full GC (the live set). Wall time and
pixels/s are ``produce``'s own (session start-up excluded). Outputs are counted by kind.

Figures are medians over ``--repeats``; the machine is shared (2 cores), so timings are noisy;
memory peaks much less so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_KM = 512
FIRST_DATE = dt.date(2024, 4, 1)


# ----------------------------------------------------------------------------------------- config


def region_overrides(scale: float, dates: int, stations: int, *, base_km: int = BASE_KM, tile_size: int = 256,
                     min_per_env: int = 1, revisit_days: int = 6, spinup_days: int = 10) -> list[str]:
    """Config overrides of a simulated region ``scale`` times the area of ``base_km`` x ``base_km``
    (side rounded to whole tiles), ``dates`` dates ``revisit_days`` apart from 2024-04-01."""
    side = int(round(base_km * math.sqrt(scale) / tile_size)) * tile_size
    end = FIRST_DATE + dt.timedelta(days=revisit_days * (dates - 1))
    return [f"region.size_km=[{side}, {side}]", f"grid.tile_size={tile_size}", f"simulate.n_stations={stations}",
            f"simulate.min_stations_per_env={min_per_env}", f"simulate.start={FIRST_DATE}", f"simulate.end={end}",
            f"simulate.revisit_days={revisit_days}", f"simulate.spinup_days={spinup_days}"]


def spark_overrides(cores: int, driver_memory: str) -> list[str]:
    return [f"spark.master=local[{cores}]", f"spark.shuffle_partitions={cores}",
            "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
            f"spark.driver.memory: {driver_memory}}}"]


# ------------------------------------------------------------------------------- process sampling


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    out[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


class RoleSampler:
    """Samples a process tree from /proc: per-process peak (VmHWM) by role, and the peak tree sum."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root, self.interval = root, interval
        self.role: dict[int, str] = {}
        self.hwm: dict[int, int] = {}  # KiB
        self.tree_peak = 0  # KiB
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _classify(self, pid: int, parents: dict[int, int]) -> str:
        if pid == self.root:
            return "driver_py"
        cmd = _cmdline(pid)
        exe = os.path.basename(cmd.split(" ", 1)[0])
        if exe == "java":
            return "jvm"
        if "python" in exe:
            is_daemon = "pyspark.daemon" in cmd or "ssm_spark.pyspark_daemon" in cmd  # ours in local mode
            if is_daemon and self.role.get(parents.get(pid, -1)) == "jvm":
                return "daemon"
            return "worker" if self.role.get(parents.get(pid, -1)) in ("daemon", "jvm") else "other"
        return "other"

    def sample(self) -> None:
        parents = _parents()
        kids: dict[int, list[int]] = {}
        for p, pp in parents.items():
            kids.setdefault(pp, []).append(p)
        todo, total = [self.root], 0
        while todo:  # breadth first: a parent is classified before its children
            pid = todo.pop(0)
            todo.extend(sorted(kids.get(pid, [])))
            st = _status(pid)
            if not st:
                continue
            if self.role.get(pid, "other") == "other":  # again while "other": spark-submit's bash execs java
                self.role[pid] = self._classify(pid, parents)
            self.hwm[pid] = max(self.hwm.get(pid, 0), st.get("VmHWM", 0))
            total += st.get("VmRSS", 0)
        self.tree_peak = max(self.tree_peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "RoleSampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    def peaks_mib(self) -> dict:
        by: dict[str, list[int]] = {}
        for pid, r in self.role.items():
            by.setdefault(r, []).append(self.hwm.get(pid, 0))

        def mx(r: str) -> float:
            return round(max(by.get(r, [0])) / 1024, 1)

        return {"driver_jvm": mx("jvm"), "driver_py": mx("driver_py"), "daemon": mx("daemon"),
                "worker_max": mx("worker"), "workers": len(by.get("worker", [])),
                "tree_peak": round(self.tree_peak / 1024, 1),
                "roles_seen": sorted(by)}


def run_sampled(cmd: list[str], interval: float = 0.2, timeout: float | None = None,
                env: dict | None = None) -> tuple[dict, dict]:
    """Run ``cmd`` (prints one ``RESULT {json}`` line), sampling its tree; returns (result, peaks)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    sampler = RoleSampler(p.pid, interval)
    with sampler:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise RuntimeError(f"{cmd[-4:]} timed out after {timeout} s:\n{err[-3000:]}")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:]), sampler.peaks_mib()
    raise RuntimeError(f"{' '.join(cmd[-6:])} failed (rc {p.returncode}):\n{out[-2000:]}\n{err[-4000:]}")


def output_files(out: Path) -> dict:
    """Number and total bytes of the product's files by kind, and the Parquet row count."""
    import pyarrow.parquet as pq

    kinds = {".parquet": "parquet", ".tif": "cog", ".vrt": "vrt", ".png": "png"}
    res = {k: {"n": 0, "bytes": 0} for k in kinds.values()}
    rows = 0
    for p in out.rglob("*"):
        k = kinds.get(p.suffix)
        if k and p.is_file() and "_staging" not in p.parts:
            res[k]["n"] += 1
            res[k]["bytes"] += p.stat().st_size
            if k == "parquet":
                rows += pq.ParquetFile(p).metadata.num_rows
    res["rows"] = rows
    return res


# ------------------------------------------------------------------------------------ child modes


def jvm_memory(spark, reset: bool = False) -> dict:
    """The driver JVM's heap figures (MiB) through py4j: old-gen peak, sum of heap-pool peaks (an upper
    bound of the peak heap), live set after a full GC; ``reset``: then start the pools' peaks afresh."""
    mf = spark._jvm.java.lang.management.ManagementFactory
    mib = 1 / 2**20
    old_peak, pool_peaks = 0, 0
    pools = [p for p in mf.getMemoryPoolMXBeans() if str(p.getType()) == "Heap memory"]
    for pool in pools:
        used = pool.getPeakUsage().getUsed()
        pool_peaks += used
        if "Old" in pool.getName() or "Tenured" in pool.getName():
            old_peak = max(old_peak, used)
    mem = mf.getMemoryMXBean()
    mem.gc()
    heap = mem.getHeapMemoryUsage()
    if reset:
        for pool in pools:
            pool.resetPeakUsage()
    return {"old_gen_peak": round(old_peak * mib, 1), "heap_pools_peak_sum": round(pool_peaks * mib, 1),
            "live_after_gc": round(heap.getUsed() * mib, 1), "heap_max": round(heap.getMax() * mib, 1)}


def child_setup(a: argparse.Namespace) -> None:
    """Simulate each scale's region (kept when its simulation.json matches) and train the registry."""
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.sources.simulate import simulate

    logging.basicConfig(level=logging.WARNING)
    work = Path(a.work)
    res: dict = {"scales": {}}
    for scale in a.scales:
        cfg = load_config(overrides=region_overrides(scale, a.dates, a.stations if scale == 1 else 12,
                                                     min_per_env=3 if scale == 1 else 1))
        sim = work / f"x{scale:g}" / "sim"
        meta = sim / "simulation.json"
        if not (meta.is_file() and json.loads(meta.read_text()).get("config_hash") == cfg.hash()):
            shutil.rmtree(sim, ignore_errors=True)
            t0 = time.perf_counter()
            simulate(cfg, sim)
            res["scales"][scale] = {"simulated_s": round(time.perf_counter() - t0, 1)}
    models = work / "models"
    if a.models:
        res["models"] = str(Path(a.models).resolve())
    elif not (models / "manifest.json").is_file():
        from ssm_spark.pipeline import matchups_run, train_run
        from ssm_spark.spark import session

        cfg = load_config(overrides=region_overrides(1, a.dates, a.stations, min_per_env=3)
                          + ["train.k_folds=3", "train.min_stations=4", "train.min_samples=30"]
                          + spark_overrides(2, "2g"))
        spark = session(cfg.spark)
        sim = work / "x1" / "sim"
        matchups_run(spark, cfg, sim / "stacks", sim / "insitu", work / "matchups.parquet")
        t = train_run(spark, cfg, work / "matchups.parquet", models)
        spark.stop()
        res["trained"] = {k: t[k] for k in ("manifest_id", "rows", "stations", "seconds")}
    print("RESULT " + json.dumps(res), flush=True)


def child_produce(a: argparse.Namespace) -> None:
    """Runs of ``produce`` (``--runs``: JSON list of ``{"overrides", "models", "stacks", "output"}``), one
    after the other in one Spark session (built from the first run's ``spark`` section); after each, the
    kernel's high-water marks of this process tree (:class:`RoleSampler`, one sample: workers are
    reused, so alive) and the JVM's heap figures. Prints ``RESULT {"runs": [...]}``."""
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.product.produce import produce
    from ssm_spark.spark import session

    logging.basicConfig(level=logging.WARNING)
    runs = json.loads(a.runs)
    spark = None
    out = []
    for run in runs:
        cfg = load_config(overrides=run["overrides"])
        spark = spark or session(cfg.spark)
        s = produce(spark, cfg, run["models"], run["stacks"], None, None, None, run["output"], force=True)
        win = s["region"].get("window") or {}
        res = {"pixels": s["pixels"], "dates": len(s["dates"]), "seconds": s["seconds"],
               "px_per_s": s["pixels_per_s"], "failed": len(s["failed_files"]),
               "tiles": max(v.get("tiles", 0) for v in s["dates"].values()),
               "region_cells": int(win.get("height", 0) * win.get("width", 0))}
        snap = RoleSampler(os.getpid())
        snap.sample()
        res["hwm"] = snap.peaks_mib()
        try:
            res["jvm"] = jvm_memory(spark, reset=True)
        except Exception as exc:  # noqa: BLE001 - optional figures
            res["jvm"] = {"error": str(exc)}
        out.append(res)
    spark.stop()
    print("RESULT " + json.dumps({"runs": out}), flush=True)


def produce_cmd(runs: list[dict]) -> list[str]:
    """The command line of :func:`child_produce` (``runs``: ``{"overrides", "models", "stacks", "output"}``)."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", "produce", "--runs",
            json.dumps(runs, default=str)]


# ------------------------------------------------------------------------------------------- main


def _me(a: argparse.Namespace, mode: str, *extra: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--work", str(a.work), "--dates",
           str(a.dates), "--stations", str(a.stations), "--cores", str(a.cores), "--driver-memory", a.driver_memory]
    if a.models:
        cmd += ["--models", str(a.models)]
    return cmd + list(extra)


def _fmt_mib(v: float) -> str:
    return f"{v:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--scales", default="1,4,9", help="region areas in units of the 512 x 512 km demo region")
    ap.add_argument("--dates", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stations", type=int, default=60, help="stations of the 1x region (training only)")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_memory"))
    ap.add_argument("--models", default=None, help="an existing registry (default: train one on the 1x region)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="4g", help="spark.driver.memory of the produce runs")
    ap.add_argument("--interval", type=float, default=0.2, help="sampling interval, s")
    ap.add_argument("--child", choices=["setup", "produce"], help=argparse.SUPPRESS)
    ap.add_argument("--runs", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.scales = [float(s) for s in str(a.scales).split(",")]
    if a.child == "setup":
        return child_setup(a)
    if a.child == "produce":
        return child_produce(a)

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"bench_produce_memory: scales {a.scales} x {a.dates} dates, {a.repeats} repeat(s), local[{a.cores}], "
          f"spark.driver.memory {a.driver_memory}; {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f} (a shared machine: times are noisy; medians)", flush=True)
    t0 = time.perf_counter()
    setup, _ = run_sampled(_me(a, "setup", "--scales", ",".join(f"{s:g}" for s in a.scales)))
    print(f"setup {time.perf_counter() - t0:.0f} s: {json.dumps(setup)}", flush=True)
    models = Path(a.models) if a.models else work / "models"
    reg_bytes = sum(p.stat().st_size for p in (models / "models").rglob("*") if p.is_file())
    print(f"registry {models}: {reg_bytes / 2**20:.2f} MiB of model files (broadcast once per run)")

    rows = []
    for scale in a.scales:
        runs = []
        for r in range(a.repeats):
            out = work / f"x{scale:g}" / "product"
            shutil.rmtree(out, ignore_errors=True)
            ov = region_overrides(scale, a.dates, 12) + spark_overrides(a.cores, a.driver_memory)
            cmd = produce_cmd([{"overrides": ov, "models": models, "stacks": work / f"x{scale:g}" / "sim" / "stacks",
                                "output": out}])
            res, peaks = run_sampled(cmd, a.interval)
            res = res["runs"][0]
            files = output_files(out)
            runs.append({**res, **peaks, "files": files})
            print(f"  x{scale:g} run {r + 1}: {json.dumps(runs[-1])}", flush=True)
        rows.append((scale, runs))

    def med(runs: list, *keys: str) -> float:
        vals = []
        for run in runs:
            v = run
            for k in keys:
                v = v.get(k, {}) if isinstance(v, dict) else {}
            if isinstance(v, (int, float)):
                vals.append(v)
        return statistics.median(vals) if vals else float("nan")

    print()
    print("peak memory (MiB, median over repeats; per-process peaks are VmHWM, 'tree' the largest sum of VmRSS "
          "at one sample)")
    hdr = (f"{'scale':>5} {'tiles':>5} {'px/date':>10} {'dates':>5} {'rows ok':>7} | {'JVM':>6} {'drv py':>6} "
           f"{'worker':>6} {'daemon':>6} {'nwork':>5} {'tree':>6} | {'old gen':>7} {'heap pk':>7} {'live':>6} | "
           f"{'wall s':>6} {'px/s':>8} | {'parquet':>14} {'cog':>14} {'vrt':>10} {'png':>12}")
    print(hdr)
    print("-" * len(hdr))
    base = None
    for scale, runs in rows:
        r0 = runs[0]
        px_date = r0["pixels"] // max(1, r0["dates"])
        ok = all(r["files"]["rows"] == r["pixels"] and r["failed"] == 0 for r in runs)

        def kind(k: str) -> str:
            return f"{r0['files'][k]['n']:>4} {r0['files'][k]['bytes'] / 2**20:>7.1f}MiB"

        line = (f"{scale:>5g} {r0['tiles']:>5} {px_date:>10,} {r0['dates']:>5} {'yes' if ok else 'NO':>7} | "
                f"{_fmt_mib(med(runs, 'driver_jvm')):>6} {_fmt_mib(med(runs, 'driver_py')):>6} "
                f"{_fmt_mib(med(runs, 'worker_max')):>6} {_fmt_mib(med(runs, 'daemon')):>6} "
                f"{med(runs, 'workers'):>5g} {_fmt_mib(med(runs, 'tree_peak')):>6} | "
                f"{_fmt_mib(med(runs, 'jvm', 'old_gen_peak')):>7} {_fmt_mib(med(runs, 'jvm', 'heap_pools_peak_sum')):>7} "
                f"{_fmt_mib(med(runs, 'jvm', 'live_after_gc')):>6} | "
                f"{med(runs, 'seconds'):>6.1f} {med(runs, 'px_per_s'):>8,.0f} | "
                f"{kind('parquet'):>14} {kind('cog'):>14} {kind('vrt'):>10} {kind('png'):>12}")
        print(line)
        if base is None:
            base = runs
    print()
    b = rows[0][1]
    for scale, runs in rows[1:]:
        ratios = {k: med(runs, k) / med(b, k) for k in ("driver_jvm", "driver_py", "worker_max", "tree_peak")}
        print(f"x{scale:g} vs x{rows[0][0]:g}: pixels x{med(runs, 'pixels') / med(b, 'pixels'):.1f}; peaks " +
              ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()))
    print("columns: JVM = driver JVM (also the executor in local mode); drv py = driver Python; worker = largest "
          "Python worker; daemon = pyspark.daemon; tree = whole process tree at once; old gen / heap pk / live = "
          "JVM old-generation peak, sum of heap-pool peaks (upper bound), heap in use after a full GC; wall s = "
          "produce's own time (no session start); outputs of one run: count and size.")


if __name__ == "__main__":
    main()
