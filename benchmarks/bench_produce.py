"""Product throughput: the per-tile functions in one process, in a pool of 2, bare model evaluation, and Spark.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_produce.py [--models out/demo/models] [--stacks out/demo/sim/stacks]
                                                 [--dates 2] [--repeats 3] [--set K=V ...] [--before K=V ...]

(``--before``: Spark local[1] and local[2] also run with these overrides, in the same rounds, e.g.
``--before produce.min_files_per_task=1 --before produce.keep_tile_memory=false`` for the task
split and worker heap of before 2026-12-02.)

Every path does the same work per stack file (a 256 x 256 tile of the demo region): read the
feature tile (rasterio), masks and environment, the cells' change-detection climatology when the
registry has change detection (built once by a first Spark child, ``clim``, into a temporary folder
that every run below reads: ``produce`` finds it complete through ``produce.climatology_dir``, so
no run pays the build and the loop attaches the same inputs as Spark), coupled physics with the
registry's WCM parameters, the model selected per environment (XGBoost, 1 thread per task), and
one zstd Parquet file per tile. Measured in one run, each in its own process:

- ``ref``: the library functions the Spark tasks call (:func:`ssm_spark.product.tiles.read_tile_columns`,
  ``predict_tile``, ``write_tile``) in a loop, one process;
- ``pool``: the same functions in a ``multiprocessing`` pool of 2 (spawned) processes, one tile a task;
- ``limit``: bare model evaluation, one core: every ``inplace_predict`` call the per-tile path makes
  (the cells that need a prediction, each model they take), on the feature matrices captured from
  a first pass, timed alone: the floor of the per-tile path on these models; it also counts the
  boosters and trees each unmasked cell goes through (``Registry.predict`` evaluates each distinct
  model once per tile, so units served by the same files share one call per booster);
- Spark ``produce`` itself on local[1] and local[2] (Parquet only: ``produce.cog=false``,
  ``quicklook=false``, ``stac=false``, ``force``), so its figure includes the driver's work per
  date (listing, job launch, commit); then local[2] with COGs, VRT, quicklooks and the STAC items.

Then the ratios of the goals (issue 15): local[1] / loop, local[2] / pool, loop / bare evaluation;
a profile of the loop by stage; the 10-million-cell date at the 4-tile local[2] rate with every
output (a real one is measured by ``benchmarks/bench_national.py``).

Each timed run is a child process, set up once (the JVM started, one warm-up date produced, the
pool's registries built) and kept, the Spark children's Python workers too (Spark stops a worker
idle for a minute; ``--cold-workers`` lets it, so that each timed date forks new ones); the repeats run in interleaved rounds (one repeat of every run
per round, each round in another order), so a slow spell of the shared host falls on every run
instead of on one, and each goal's ratio is also given per round (the two figures measured within
a minute or two of each other), with the median of the rounds first. pixels/s is the median over
the repeats (wall clock); ``ref`` and ``limit`` also give pixels per CPU-second of their own
process (less sensitive to a loaded machine). Peak RSS is the largest sum of resident memory of the process and all its descendants
(JVM, Python workers), sampled every 0.1 s from /proc during the timed repeats, with their CPU
seconds over a repeat (the tree's, JVM and workers included; setup and JVM start are not).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ memory sampling


def _tree_sample(pid: int) -> tuple[int, dict[int, float]]:
    """Resident memory (KiB) of a process and all its descendants, and each one's CPU seconds so far
    (user + system, its waited-for children included), from /proc."""
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
    total, cpu, todo = 0, {}, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu[p] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            pass
    return total, cpu


class PeakRSS:
    """Samples the process tree every 0.1 s: peak resident memory, and CPU seconds (each process's
    last figure seen; the JVM and Spark's Python workers are no waited-for children of ours)."""

    def __init__(self) -> None:
        self.peak = 0
        self._cpu: dict[int, float] = {}
        self._first: dict[int, float] = {}  # each process's CPU at its first sample: cpu_s counts from there
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the tree since the sampling began (a process started meanwhile: all of its own)."""
        return sum(v - self._first.get(p, 0.0) for p, v in self._cpu.items())

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, cpu = _tree_sample(os.getpid())
            self.peak = max(self.peak, rss)
            if not self._cpu:
                self._first = dict(cpu)
            self._cpu.update(cpu)
            self._stop.wait(0.1)

    def __enter__(self) -> "PeakRSS":
        self._first = self._cpu = _tree_sample(os.getpid())[1]  # the start, before the first sleep
        self._cpu = dict(self._cpu)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


# ------------------------------------------------------------------------------------------ workers


def _dates(stacks: Path, n: int) -> list[str]:
    return sorted(p.name for p in stacks.iterdir() if p.is_dir() and p.name[:2] == "20")[:n]


def _reference_setup(a: argparse.Namespace):
    """What the reference and the profile share: config, grid, dates, registry (1 thread), region, files,
    and the change-detection climatology ``produce`` attaches (None when the registry has no ``cd``)."""
    from ssm_spark.config import load_config
    from ssm_spark.models.registry import load_registry
    from ssm_spark.product.region import resolve_region
    from ssm_spark.sources.stacks import discover

    cfg = load_config(overrides=a.set)
    grid = cfg.grid.build()
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates)
    reg = load_registry(a.models, nthread=1).warm()
    region = resolve_region(None, cfg, grid)
    inv = discover(stacks, grid, stacks.parent / "static", cfg.ingest.band_aliases)
    return cfg, grid, dates, reg, region, inv, _climatology(a, grid)


def _climatology(a: argparse.Namespace, grid):
    """The climatology stack built by the ``clim`` child (shared by every run), or None."""
    if not a.clim:
        return None
    from ssm_spark.product.climatology import ClimatologyStack

    return ClimatologyStack.from_summary(json.loads(Path(a.clim).read_text()), grid)


def _tile_fns(P):
    """The per-tile read and predict functions of ``ssm_spark.product.tiles`` (the column path; a
    checkout from before it has the frame path only: so the same benchmark measures both)."""
    if hasattr(P, "read_tile_columns"):
        return P.read_tile_columns, P.predict_tile
    return P.read_clipped, P.predict_rows


def _job(cfg, grid, region, date: str, staging: str, clim):
    from ssm_spark.product.tiles import DateJob

    return DateJob(date, grid, region, staging, cfg.ingest.max_slope_deg, {"date": date}, None, climatology=clim)


def run_clim(a: argparse.Namespace) -> dict:
    """Build the climatology stack ``produce`` attaches (Spark local[2], every date of the stacks) into
    ``a.clim_dir``, once for every run: the loop, the pool and the bare evaluation attach the same
    change-detection inputs as ``produce`` (which finds it built: ``produce.climatology_dir``)."""
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.models.registry import load_registry
    from ssm_spark.product.climatology import climatology_for_produce
    from ssm_spark.product.region import resolve_region
    from ssm_spark.sources.stacks import discover
    from ssm_spark.spark import session

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                 "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false'}", *a.set])
    grid = cfg.grid.build()
    stacks = Path(a.stacks)
    reg = load_registry(a.models)
    region = resolve_region(None, cfg, grid)
    inv = discover(stacks, grid, stacks.parent / "static", cfg.ingest.band_aliases)
    spark = session(cfg.spark)
    t0 = time.perf_counter()
    got = climatology_for_produce(spark, cfg, reg.wcm_params, stacks, stacks.parent / "static", region.tiles,
                                  Path(a.clim_dir), inv, None, None, folder=Path(a.clim_dir))
    secs = time.perf_counter() - t0
    spark.stop()
    summary = got[1] if got else None
    return {"rates": [0.0], "summary": summary, "seconds": round(secs, 1)}


def run_reference(a: argparse.Namespace) -> Iterator[dict]:
    """The loop: first its setup's figures, then one timed pass over the dates per ``next``."""
    from ssm_spark.product import tiles as P
    from ssm_spark.product.tasks import _tile_of_file

    cfg, grid, dates, reg, region, inv, clim = _reference_setup(a)
    read, predict = _tile_fns(P)
    with tempfile.TemporaryDirectory() as tmp:
        yield {"dates": dates}
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            pixels = 0
            for d in dates:
                job = _job(cfg, grid, region, d, tmp, clim)
                (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
                for f in (f for f in inv.files if f.date == d):
                    px, _ = read(f, job)
                    s = P.write_tile(predict(px, reg), *_tile_of_file(f, grid), job)
                    pixels += s["pixels"]
            yield {"rate": pixels / (time.perf_counter() - t0), "cpu_rate": pixels / (time.process_time() - c0),
                   "pixels": pixels}


_POOL: dict = {}


def _pool_init(a: argparse.Namespace) -> None:
    _POOL["setup"] = _reference_setup(a)


def _pool_tile(args: tuple) -> int:
    from ssm_spark.product import tiles as P
    from ssm_spark.product.tasks import _tile_of_file

    i, tmp = args
    cfg, grid, dates, reg, region, inv, clim = _POOL["setup"]
    f = inv.files[i]
    job = _job(cfg, grid, region, f.date, tmp, clim)
    read, predict = _tile_fns(P)
    px, _ = read(f, job)
    return P.write_tile(predict(px, reg), *_tile_of_file(f, grid), job)["pixels"]


def run_pool(a: argparse.Namespace) -> Iterator[dict]:
    """The reference's per-tile functions in a ``multiprocessing`` pool of ``a.cores`` processes
    (each builds its registry once, as a Spark Python worker does): tiles handed out one at a time.
    Spawned, not forked: the parent loads no XGBoost (OpenMP after a fork can hang)."""
    import multiprocessing as mp

    from ssm_spark.config import load_config
    from ssm_spark.sources.stacks import discover

    cfg = load_config(overrides=a.set)
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates)
    inv = discover(stacks, cfg.grid.build(), stacks.parent / "static", cfg.ingest.band_aliases)
    todo = [i for i, f in enumerate(inv.files) if f.date in dates]
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("spawn").Pool(a.cores, _pool_init, (a,)) as pool:
        for d in dates:
            (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
        pool.map(_pool_tile, [(i, tmp) for i in todo[:a.cores]], chunksize=1)  # warm: registries built
        yield {"dates": dates}
        while True:
            t0 = time.perf_counter()
            pixels = sum(pool.imap_unordered(_pool_tile, [(i, tmp) for i in todo], chunksize=1))
            yield {"rate": pixels / (time.perf_counter() - t0), "pixels": pixels}


def run_limit(a: argparse.Namespace) -> Iterator[dict]:
    """Bare model evaluation, one core: every ``inplace_predict`` the per-tile path makes (the cells
    that need a prediction: unmasked, each served model + the global one it blends with), on the
    same feature matrices prepared beforehand (float32, C-contiguous), timed alone."""
    import numpy as np

    from ssm_spark.models import candidates
    from ssm_spark.product import tiles as P

    cfg, grid, dates, reg, region, inv, clim = _reference_setup(a)
    calls: list = []
    real_point, real_quant = candidates.predict_point_matrix, candidates.predict_quantile_matrix

    def keep(real):
        def f(m, x, off):
            if m.booster is not None and len(x):
                calls.append((m.booster, np.ascontiguousarray(x, dtype=np.float32)))
            return real(m, x, off)
        return f

    candidates.predict_point_matrix, candidates.predict_quantile_matrix = keep(real_point), keep(real_quant)
    from ssm_spark.environments import MASK_BITS

    pixels, cells, live = 0, 0, 0
    for d in dates:
        job = _job(cfg, grid, region, d, "/nonexistent", clim)
        for f in (f for f in inv.files if f.date == d):
            px, _ = _tile_fns(P)[0](f, job)
            rows = _tile_fns(P)[1](px, reg)
            live += int(((np.asarray(rows["qc"]).astype(np.int64) & MASK_BITS) == 0).sum())
            pixels += len(rows["row"])
    candidates.predict_point_matrix, candidates.predict_quantile_matrix = real_point, real_quant
    cells = sum(len(x) for _, x in calls)
    trees: dict[int, int] = {}
    for booster, _ in calls:
        if id(booster) not in trees:
            model = json.loads(bytes(booster.save_raw("json")))
            trees[id(booster)] = int(model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"])
    per_cell = {"live_cells": live, "boosters_per_cell": round(cells / max(live, 1), 3),
                "trees_per_cell": round(sum(len(x) * trees[id(b)] for b, x in calls) / max(live, 1), 1),
                "boosters": len(trees), "trees_per_booster": sorted(set(trees.values()))}
    yield {"pixels": pixels, "dates": dates, "calls": len(calls), "rows_predicted": cells, **per_cell}
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        for booster, x in calls:
            booster.inplace_predict(x)
        yield {"rate": pixels / (time.perf_counter() - t0), "cpu_rate": pixels / (time.process_time() - c0),
               "pixels": pixels}


def _timer(t: dict, key: str, module, name: str):
    """Wrap ``module.name`` so that its time adds up in ``t[key]``; returns the undo."""
    real = getattr(module, name)

    def timed(*args, **kw):
        t0 = time.perf_counter()
        try:
            return real(*args, **kw)
        finally:
            t[key] += time.perf_counter() - t0

    setattr(module, name, timed)
    return lambda: setattr(module, name, real)


def run_profile(a: argparse.Namespace) -> dict:
    """Where the time goes, per stage, in the reference loop (one pass after a warm-up pass, 1 thread):
    ``read`` (read_file_columns: bands, ranges, masks, environment), ``clip`` (region clip and
    climatology attach), ``physics`` (Registry._physics_columns), ``matrix`` (the float32 feature
    matrix), ``xgboost`` (the inplace_predict calls and their offsets), ``predict_rest`` (the rest of
    predict_tile: routing, bounds, the product columns), ``arrow`` (columns -> Arrow table),
    ``parquet`` (the zstd file), ``write_rest`` (the rest of write_tile: order, summary), ``cog``."""
    from ssm_spark.models import candidates
    from ssm_spark.product import tiles as P
    from ssm_spark.product.cog import tile_arrays, write_tile_cog
    from ssm_spark.product.tasks import _tile_of_file
    from ssm_spark.sources import stacks as S

    cfg, grid, dates, reg, region, inv, clim = _reference_setup(a)
    keys = ("read", "clip", "physics", "matrix", "xgboost", "predict_rest", "arrow", "parquet", "write_rest", "cog")
    t = dict.fromkeys(keys, 0.0)
    from ssm_spark.models import registry as R

    read, predict = _tile_fns(P)
    names = [("read", S, "read_file_columns"), ("read", S, "read_file_cells"),  # whichever the path calls
             ("physics", R.Registry, "_physics_columns"), ("physics", candidates, "add_physics"),
             ("matrix", R, "feature_matrix"), ("matrix", candidates, "feature_matrix"),
             ("xgboost", candidates, "predict_point_matrix"), ("xgboost", candidates, "predict_quantile_matrix"),
             ("arrow", P, "columns_table"), ("arrow", P, "arrow_table"), ("parquet", P, "write_tile_parquet")]
    undo = [_timer(t, k, m, n) for k, m, n in names if hasattr(m, n)]
    pixels, cpu = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):  # the first pass warms caches and is not counted
            for k in t:
                t[k] = 0.0
            pixels, c0 = 0, time.process_time()
            for d in dates:
                job = _job(cfg, grid, region, d, tmp, clim)
                (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
                for f in (f for f in inv.files if f.date == d):
                    t0 = time.perf_counter()
                    r0 = t["read"]
                    px, _ = read(f, job)
                    t1 = time.perf_counter()
                    inner = t["physics"] + t["matrix"] + t["xgboost"]
                    rows = predict(px, reg)
                    t2 = time.perf_counter()
                    tr, tc = _tile_of_file(f, grid)
                    w0 = t["arrow"] + t["parquet"]
                    P.write_tile(rows, tr, tc, job)
                    t3 = time.perf_counter()
                    data = tile_arrays(rows, grid, tr, tc, ("ssm", "qc"))
                    write_tile_cog(Path(tmp) / f"{d}_{tr}_{tc}.tif", data, grid, tr, tc, ("ssm", "qc"), {"date": d})
                    t4 = time.perf_counter()
                    t["clip"] += (t1 - t0) - (t["read"] - r0)
                    t["predict_rest"] += (t2 - t1) - (t["physics"] + t["matrix"] + t["xgboost"] - inner)
                    t["write_rest"] += (t3 - t2) - (t["arrow"] + t["parquet"] - w0)
                    t["cog"] += t4 - t3
                    pixels += len(rows["row"])
            cpu = time.process_time() - c0
    for u in undo:
        u()
    return {"stage_seconds": t, "pixels": pixels, "cpu_s": cpu, "rates": [0.0]}


class _WorkerKeeper:
    """Keeps a served Spark child's Python workers alive between its timed repeats.

    PySpark's worker factory stops a Python worker that has been idle for a minute (hard-coded in
    Spark 4.0's ``PythonWorkerFactory``; measured here: the same PIDs after 45 s idle, new ones after
    75 s), and in interleaved rounds a child waits longer than that for its turn. Its next date
    would then fork new workers and build their registries again (~1.3 CPU-s a worker) while the
    pool's processes are kept: not the steady state of a run of many dates, where a worker is never
    idle that long. So a job of one short task per core runs every ``every`` seconds while the
    child waits, never during a timed repeat (``--cold-workers``: off)."""

    def __init__(self, spark, cores: int, every: float = 20.0) -> None:
        self.sc, self.cores, self.every = spark.sparkContext, cores, every
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.pings = 0
        self.thread = threading.Thread(target=self._loop, name="worker-keeper", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.every):
            with self.lock:
                if self.stopped.is_set():
                    return
                self.sc.setJobDescription("bench: keep the Python workers")
                # one task per core, each long enough that every idle worker is taken
                self.sc.parallelize(range(self.cores), self.cores).foreach(lambda _: time.sleep(0.2))
                self.pings += 1

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            pass
        self.thread.join(timeout=30)


def run_spark(a: argparse.Namespace) -> Iterator[dict]:
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.product.produce import produce
    from ssm_spark.spark import session

    logging.basicConfig(level=logging.WARNING)
    # Parquet only: no COG, quicklook, nor the STAC catalogue (its items are the COGs' footprints)
    outputs = (["produce.cog=true", "produce.quicklook=true"] if a.full else
               ["produce.cog=false", "produce.quicklook=false", "produce.stac=false"])
    # the climatology built once by the clim child: found complete, reused (not rebuilt per output folder)
    clim = [f"produce.climatology_dir={a.clim_dir}"] if a.clim_dir else []
    cfg = load_config(overrides=[f"spark.master=local[{a.cores}]", f"spark.shuffle_partitions={a.cores}",
                                 "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
                                 "spark.driver.memory: 4g}", *outputs, *clim, *a.set])
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates + 1)
    spark = session(cfg.spark)
    with tempfile.TemporaryDirectory() as tmp:
        produce(spark, cfg, a.models, stacks, None, dates[-1], dates[-1], Path(tmp) / "warm")  # warm the workers
        keeper = None if a.cold_workers else _WorkerKeeper(spark, a.cores)
        try:
            yield {"dates": dates[:-1], "workers_kept": keeper is not None}
            while True:
                with keeper.lock if keeper else contextlib.nullcontext():
                    t0 = time.perf_counter()
                    s = produce(spark, cfg, a.models, stacks, None, dates[0], dates[-2], Path(tmp) / "out",
                                force=True)
                    wall = time.perf_counter() - t0
                per = list(s["dates"].values())
                phases = {k: sum(v[k] for v in per) for k in ("tiles_seconds", "finish_seconds")}
                # the run's own setup (discovery, the region, the climatology check, the broadcast): the wall
                # outside the dates' work, defined when one date runs (dates in flight overlap otherwise)
                phases["setup_seconds"] = wall - per[0]["seconds"] if len(per) == 1 else None
                yield {"rate": s["pixels"] / wall, "pixels": s["pixels"], "wall": wall, "phases": phases,
                       "date_seconds": [v["seconds"] for v in per]}
        finally:
            if keeper:
                keeper.stop()
            spark.stop()


TIMED = {"ref": run_reference, "pool": run_pool, "limit": run_limit, "spark": run_spark}


def child(a: argparse.Namespace) -> None:
    """One run of ``profile`` or ``clim`` (a RESULT line), or a timed mode served over stdin: its
    setup, a READY line, then one timed repeat (a RESULT line, with the tree's peak memory and CPU
    over that repeat) for every ``run`` line, until ``quit``."""
    if a.mode not in TIMED:
        with PeakRSS() as mem:
            res = {"profile": run_profile, "clim": run_clim}[a.mode](a)
        res["peak_rss_tree_mib"] = round(mem.peak / 1024)
        res["cpu_tree_s"] = round(mem.cpu_s, 1)
        res["maxrss_self_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(res), flush=True)
        return
    runs = TIMED[a.mode](a)
    print("READY " + json.dumps(next(runs)), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        with PeakRSS() as mem:
            res = next(runs)
        res["peak_rss_tree_mib"] = round(mem.peak / 1024)
        res["cpu_tree_s"] = round(mem.cpu_s, 2)
        print("RESULT " + json.dumps(res), flush=True)
    runs.close()


def _cmd(a: argparse.Namespace, *extra: str, sets: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, __file__, "--child", "--models", a.models, "--stacks", a.stacks, "--dates", str(a.dates),
            "--repeats", str(a.repeats), *(["--clim-dir", a.clim_dir] if a.clim_dir else []),
            *(["--clim", a.clim] if a.clim else []), *(f"--set={kv}" for kv in (*a.set, *sets)),
            *(["--cold-workers"] if getattr(a, "cold_workers", False) else []), *extra]


def _spawn(a: argparse.Namespace, *extra: str) -> dict:
    """A one-shot child (``profile``, ``clim``): its RESULT."""
    p = subprocess.run(_cmd(a, *extra), capture_output=True, text=True, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            print(f"  ({' '.join(extra)}: {json.dumps(res)})", flush=True)  # kept if a later run fails
            return res
    raise RuntimeError(f"{' '.join(extra)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


class Served:
    """A timed mode's child process, set up once and kept: :meth:`run` times one repeat in it."""

    def __init__(self, a: argparse.Namespace, *extra: str, sets: tuple[str, ...] = ()) -> None:
        self.what = " ".join((*extra, *(f"--set {kv}" for kv in sets)))
        self._err = tempfile.TemporaryFile("w+")
        self.p = subprocess.Popen(_cmd(a, *extra, sets=sets), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                  text=True, cwd=ROOT)
        self.info = self._read("READY ")
        self.runs: list[dict] = []

    def _read(self, tag: str) -> dict:
        for line in self.p.stdout:
            if line.startswith(tag):
                return json.loads(line[len(tag):])
        self._err.seek(0)
        raise RuntimeError(f"{self.what} failed (exit {self.p.wait()}):\n{self._err.read()[-3000:]}")

    def run(self) -> dict:
        self.p.stdin.write("run\n")
        self.p.stdin.flush()
        res = self._read("RESULT ")
        self.runs.append(res)
        print(f"  ({self.what}: {json.dumps(res)})", flush=True)  # kept if a later run fails
        return res

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait(timeout=120)

    def rates(self, key: str = "rate") -> list[float]:
        return [r[key] for r in self.runs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--dates", type=int, default=2, help="dates per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["ref", "pool", "limit", "spark", "profile", "clim"], default="ref",
                    help=argparse.SUPPRESS)
    ap.add_argument("--clim", default="", help=argparse.SUPPRESS)  # the clim child's summary (JSON file)
    ap.add_argument("--clim-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configuration override for every run (e.g. the region of other stacks); repeatable")
    ap.add_argument("--before", action="append", default=[], metavar="KEY=VALUE",
                    help="also run Spark local[1] and local[2] with these overrides (e.g. a setting's old value), "
                         "in the same interleaved rounds, and print each against the runs without; repeatable")
    ap.add_argument("--cold-workers", action="store_true",
                    help="let Spark stop its idle Python workers between a child's repeats (after a minute idle, "
                         "so each timed date forks and warms new ones); default: kept, as in a run of many dates")
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    load = os.getloadavg()
    print(f"bench_produce: {a.dates} date(s) x {a.repeats} repeats, demo region, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (a shared machine: figures are noisy)")
    work = tempfile.TemporaryDirectory(prefix="bench-produce-")
    a.clim_dir = str(Path(work.name) / "climatology")
    built = _spawn(a, "--mode", "clim")
    if built["summary"] is not None:  # change detection: every run attaches the same climatology
        a.clim = str(Path(work.name) / "climatology.json")
        Path(a.clim).write_text(json.dumps(built["summary"]))
        print(f"climatology: {built['summary']['key']} built in {built['seconds']} s, shared by every run below")
    else:
        a.clim_dir = ""
        print("climatology: none (the registry has no change detection)")
    one = argparse.Namespace(**{**vars(a), "repeats": 1})
    modes = {"ref": ("--mode", "ref"), "pool": ("--mode", "pool", "--cores", "2"), "limit": ("--mode", "limit"),
             "s1": ("--mode", "spark", "--cores", "1"), "s2": ("--mode", "spark", "--cores", "2"),
             "full": ("--mode", "spark", "--cores", "2", "--full")}
    if a.before:  # the same Spark runs with other settings, for a side-by-side A/B
        modes.update({"s1b": modes["s1"], "s2b": modes["s2"]})
    res: dict[str, Served] = {}
    try:
        for k, extra in modes.items():  # set up one after the other (JVM starts, warm-up dates), then kept
            res[k] = Served(a, *extra, sets=tuple(a.before) if k.endswith("b") else ())
        keys = list(modes)
        for r in range(a.repeats):  # interleaved rounds, each in another order: a slow spell of the host
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # falls on every mode, not on one
                res[k].run()
    finally:
        for v in res.values():
            v.close()
    med = {k: statistics.median(v.rates()) for k, v in res.items()}
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    ref, lim = res["ref"], res["limit"]
    pixels = ref.runs[0]["pixels"]
    print(f"pixels per run: {pixels:,} ({len(ref.info['dates'])} dates: {', '.join(ref.info['dates'])}); "
          f"{a.repeats} interleaved rounds (one repeat of every run a round); CPU s: the run's process tree "
          "(JVM and Python workers included), median of the repeats")
    names = {"ref": "reference loop, 1 process", "pool": "pool of 2 processes", "limit": "bare inplace_predict, 1 core",
             "s1": "spark local[1]", "s2": "spark local[2]", "full": "spark local[2] + COG/VRT/PNG",
             "s1b": "spark local[1], --before", "s2b": "spark local[2], --before"}
    for k, v in res.items():
        cpu = f"; {statistics.median(v.rates('cpu_rate')):,.0f} px per CPU-s" if "cpu_rate" in v.runs[0] else ""
        print(f"{names[k]:<31} {med[k]:>9,.0f} px/s  (runs {', '.join(f'{r:,.0f}' for r in v.rates())}{cpu})  "
              f"CPU {statistics.median(r['cpu_tree_s'] for r in v.runs):.2f} s  peak RSS "
              f"{max(r['peak_rss_tree_mib'] for r in v.runs):,} MiB")
    li = lim.info
    print(f"bare evaluation: {li['calls']} inplace_predict calls, {li['rows_predicted']:,} model-rows "
          f"({li['rows_predicted'] / li['pixels']:.2f} per pixel: unmasked cells x models); per unmasked "
          f"cell {li['boosters_per_cell']:.2f} boosters, {li['trees_per_cell']:.0f} trees ({li['boosters']} boosters "
          f"of {li['trees_per_booster']} trees)")

    def per_round(num: str, den: str, key: str = "rate") -> str:
        """The ratio in each round (the two measured minutes apart at most), their median first."""
        rs = [x[key] / y[key] for x, y in zip(res[num].runs, res[den].runs)]
        return f"{statistics.median(rs):.2f} (rounds {', '.join(f'{r:.2f}' for r in rs)})"

    print(f"goal 1: local[1] / loop = {per_round('s1', 'ref')} (>= 1.0); local[2] / pool of 2 = "
          f"{per_round('s2', 'pool')} (>= 1.0)")
    print(f"goal 2: loop time / bare model time = {per_round('limit', 'ref')} wall, "
          f"{per_round('limit', 'ref', 'cpu_rate')} CPU (<= 1.3)")
    if a.before:
        print(f"against --before {' '.join(a.before)}: local[1] {per_round('s1', 's1b')}, local[2] "
              f"{per_round('s2', 's2b')} (px/s; > 1: faster without); with it, goal 1 would read "
              f"{per_round('s1b', 'ref')} and {per_round('s2b', 'pool')}")
    print(f"scaling local[2] / local[1]: {per_round('s2', 's1')}; pool of 2 / loop: {per_round('pool', 'ref')}; "
          f"COG + VRT + quicklook: {med['full'] / med['s2'] - 1:+.0%} px/s vs Parquet only")
    prof = _spawn(one, "--mode", "profile")
    st = prof["stage_seconds"]
    total = sum(st.values())
    print("where the time goes (reference loop, 1 thread, with a COG per tile): " + ", ".join(
        f"{k} {v / total:.0%}" for k, v in st.items()) + f" of {total:.1f} s for {prof['pixels']:,} px")
    print(f"goal 3: a 10-million-cell date with every output at this 4-tile rate: {1e7 / med['full']:.0f} s (the "
          "per-date work of the driver is spread over 4 tiles here; benchmarks/bench_national.py measures a "
          "real 10-million-cell date)")


if __name__ == "__main__":
    main()
