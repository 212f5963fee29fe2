"""Where Spark's CPU goes in ``produce``: CPU-seconds by process, JVM thread and phase, against the loop.

Run by hand (not a test; a few minutes)::

    .venv/bin/python benchmarks/spark_cpu_account.py [--models out/demo/models] [--stacks out/demo/sim/stacks]
        [--dates 4] [--repeats 2] [--cores 1 2] [--clim-dir DIR] [--jvm-flags "-XX:..."] [--conf k=v ...]

Each configuration runs in its own process (a fresh JVM): ``produce`` on Spark ``local[N]``, Parquet
only (``produce.cog/quicklook/stac`` off, ``force``), over the first ``--dates`` dates of the stacks,
after a warm-up date (the JVM's start, the workers' fork and imports, the registry build happen
there and are reported apart); then ``--repeats`` timed runs. The loop (the per-tile functions in one
process, as ``bench_produce.py``'s reference) runs the same tiles in another process. Every run
attaches the same change-detection climatology (``--clim-dir``: built there by ``bench_produce.py``'s
``clim`` child when absent, found complete afterwards).

What is measured, over the timed runs only (CPU = user + system, from ``/proc``):

- **JVM**: the process, and its threads by name (``/proc/<pid>/task/*/comm``): the JIT compilers, the
  garbage collector, the executor's task threads (they feed the Python workers and read their
  results), the scheduler and RPC loops, heartbeats, Py4J; threads that ended in between are the
  process's figure less its live threads'.
- **Driver Python** (this child): per phase, by wrapping the functions ``produce`` calls (their own
  thread's CPU, ``time.thread_time``): the run's setup (registry load, stack discovery, climatology
  check, broadcast), each date's ``compute_tiles`` (job submission and the collect, waiting on
  Py4J), ``finish_date``, ``commit``, ``write_product_json``; the rest of the process (the scheduler,
  Py4J, the sampler of this script, reported apart).
- **Python workers**: ``benchmarks/_acct_daemon.py`` as ``spark.python.daemon.module`` times each
  task (``worker_main``: PySpark's protocol + the task's function), the per-tile functions within it,
  ``_worker_registry``, and the daemon's ``gc.collect()`` after each task; the worker process's own
  CPU less these is what it spent between tasks.
- **Idle**: wall time x cores less all the CPU above: cores that did nothing for this run (or ran
  other processes of a shared machine: quote the load).

The table divides by the tiles of a run: per tile, the workers' CPU in the per-tile functions
against the loop's for the same functions, and the rest of Spark's CPU beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_produce_memory import _cmdline  # a process's command line from /proc, as the memory benchmark reads it

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")

#: JVM thread names (their first 15 characters, /proc's comm) -> the group they are reported in.
JVM_GROUPS = (
    ("C2 CompilerThre", "JIT compiler"), ("C1 CompilerThre", "JIT compiler"), ("Sweeper thread", "JIT compiler"),
    ("GC Thread", "garbage collector"), ("G1 ", "garbage collector"), ("VM Periodic Tas", "VM (periodic, safepoints)"),
    ("VM Thread", "VM (periodic, safepoints)"), ("Executor task l", "executor task threads"),
    ("stdout writer f", "executor task threads"), ("stderr reader f", "executor task threads"),
    ("Worker Monitor", "executor task threads"), ("dispatcher-even", "scheduler and RPC loops"),
    ("dag-scheduler-e", "scheduler and RPC loops"), ("task-result-get", "scheduler and RPC loops"),
    ("rpc-", "scheduler and RPC loops"), ("netty-rpc", "scheduler and RPC loops"),
    ("executor-heartb", "heartbeats"), ("driver-heartbea", "heartbeats"), ("heartbeat", "heartbeats"),
    ("Thread-", "Py4J gateway"), ("py4j", "Py4J gateway"), ("process reaper", "Python worker launch"),
    ("spark-listener-", "listener bus"), ("element-tracking", "context cleaner"), ("Spark Context C", "context cleaner"),
    ("block-manager", "block manager"), ("BroadcastManage", "block manager"),
)


def _stat(pid: int, tid: int | None = None) -> tuple[str, float] | None:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK  # utime + stime (live and ended threads)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class Tree:
    """CPU of the JVM (per thread), the worker daemon and its workers, sampled every ``every`` s
    (the last figure of a process or thread that ends is kept)."""

    def __init__(self, every: float = 0.25) -> None:
        self.jvm: int | None = None
        self.threads: dict[int, tuple[str, float]] = {}  # JVM tid -> (name, cpu)
        self.procs: dict[int, tuple[str, float]] = {}  # pid -> (kind, cpu)
        self._every, self._stop = every, threading.Event()
        self._t = threading.Thread(target=self._run, name="acct-sampler", daemon=True)
        self.native_id: int | None = None

    def sample(self) -> None:
        me = os.getpid()
        if self.jvm is None:
            self.jvm = next((c for c in _children(me) if "java" in _cmdline(c)), None)
        if self.jvm is None:
            return
        got = _stat(self.jvm)
        if got:
            self.procs[self.jvm] = ("jvm", got[1])
        try:
            for tid in os.listdir(f"/proc/{self.jvm}/task"):
                s = _stat(self.jvm, int(tid))
                if s:
                    self.threads[int(tid)] = s
        except OSError:
            pass
        for d in _children(self.jvm):
            cmd = _cmdline(d)
            if "daemon" not in cmd:
                continue
            s = _stat(d)
            if s:
                self.procs[d] = ("daemon", s[1])
            for w in _children(d):
                s = _stat(w)
                if s:
                    self.procs[w] = ("worker", s[1])

    def snapshot(self) -> dict:
        self.sample()
        return {"threads": dict(self.threads), "procs": dict(self.procs)}

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        while not self._stop.wait(self._every):
            self.sample()

    def __enter__(self) -> "Tree":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def _jvm_group(name: str) -> str:
    for prefix, group in JVM_GROUPS:
        if name.startswith(prefix):
            return group
    return "other JVM threads"


def _delta(a: dict, b: dict) -> dict:
    """CPU between two snapshots: the JVM by thread group, workers and daemon by process."""
    groups: dict[str, float] = {}
    for tid, (name, cpu) in b["threads"].items():
        g = _jvm_group(name)
        groups[g] = groups.get(g, 0.0) + cpu - a["threads"].get(tid, (name, 0.0))[1]
    jvm = sum(cpu - a["procs"].get(p, (k, 0.0))[1] for p, (k, cpu) in b["procs"].items() if k == "jvm")
    groups["threads ended in between"] = jvm - sum(groups.values())
    procs = {k: sum(cpu - a["procs"].get(p, (k, 0.0))[1] for p, (kk, cpu) in b["procs"].items() if kk == k)
             for k in ("daemon", "worker")}
    return {"jvm": jvm, "jvm_groups": groups, **procs}


# ------------------------------------------------------------------------------- driver phases


class Phases:
    """Thread CPU and wall of the driver functions ``produce`` calls (wrapped where they are looked up)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.events: list[tuple[str, float, float]] = []
        self._undo: list = []
        self._lock = threading.Lock()

    def wrap(self, module, name: str, key: str) -> None:
        real = getattr(module, name)

        def timed(*args, **kw):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return real(*args, **kw)
            finally:
                t1, c1 = time.perf_counter(), time.thread_time()
                with self._lock:
                    self.cpu[key] = self.cpu.get(key, 0.0) + c1 - c0
                    self.wall[key] = self.wall.get(key, 0.0) + t1 - t0
                    self.events.append((key, t0, t1))

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, real))

    def reset(self) -> None:
        with self._lock:
            self.cpu.clear()
            self.wall.clear()
            self.events.clear()


def _driver_phases() -> Phases:
    import ssm_spark.models.registry as R
    import ssm_spark.product.climatology as C
    import ssm_spark.product.produce as PR
    import ssm_spark.product.run as RUN
    import ssm_spark.sources.stacks as S

    ph = Phases()
    ph.wrap(PR, "_produce", "produce, whole (driver main thread)")
    ph.wrap(R, "load_registry", "setup: load_registry")
    ph.wrap(S, "discover", "setup: discover (stack files' headers)")
    ph.wrap(C, "climatology_for_produce", "setup: climatology_for_produce (found complete)")
    ph.wrap(PR, "product_hash", "setup: product_hash")
    ph.wrap(R.Registry, "model_bytes", "setup: model_bytes (for the broadcast)")
    ph.wrap(RUN, "compute_tiles", "per date: compute_tiles (submit, collect; thread)")
    ph.wrap(RUN, "finish_date", "per date: finish_date (reduce, outputs)")
    ph.wrap(RUN, "commit", "per date: commit (marker, moves)")
    ph.wrap(RUN, "write_product_json", "per date: write_product_json")
    return ph


# ------------------------------------------------------------------------------------- children


def _dates(stacks: Path, n: int) -> list[str]:
    return sorted(p.name for p in stacks.iterdir() if p.is_dir() and p.name[:2] == "20")[:n]


def run_spark_child(a: argparse.Namespace) -> dict:
    import logging

    from ssm_spark.config import load_config
    from ssm_spark.product.produce import produce
    from ssm_spark.spark import JVM_OPTIONS, log4j2_option, session

    logging.basicConfig(level=logging.WARNING)
    acct = Path(tempfile.mkdtemp(prefix="spark-acct-"))
    os.environ["SSM_ACCT_DIR"] = str(acct)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "4g",
            "spark.python.daemon.module": "_acct_daemon"}
    if a.jvm_flags:
        opts = f"{JVM_OPTIONS} {log4j2_option()} {a.jvm_flags}"
        conf["spark.driver.extraJavaOptions"] = opts
        conf["spark.executor.extraJavaOptions"] = opts
    for kv in a.conf:
        k, _, v = kv.partition("=")
        conf[k] = v
    conf_yaml = "{" + ", ".join(f"{k}: '{v}'" for k, v in conf.items()) + "}"
    cfg = load_config(overrides=[f"spark.master=local[{a.cores}]", f"spark.shuffle_partitions={a.cores}",
                                 f"spark.conf={conf_yaml}", "produce.cog=false", "produce.quicklook=false",
                                 "produce.stac=false", f"produce.climatology_dir={a.clim_dir}", *a.override])
    stacks = Path(a.stacks)
    dates = _dates(stacks, a.dates + 1)
    t_start, c_start = time.perf_counter(), time.process_time()
    spark = session(cfg.spark)
    t_session = time.perf_counter() - t_start
    ph = _driver_phases()
    runs = []
    with Tree() as tree, tempfile.TemporaryDirectory() as tmp:
        t0w = time.perf_counter()
        produce(spark, cfg, a.models, stacks, None, dates[-1], dates[-1], Path(tmp) / "warm")  # workers forked, imports
        warm = {"seconds": time.perf_counter() - t0w, "jvm_and_workers": _delta({"threads": {}, "procs": {}},
                                                                                tree.snapshot())}
        warm_workers = {p.name: json.loads(p.read_text()) for p in acct.glob("*.json")}
        for _ in range(a.repeats):
            ph.reset()
            s0, d0, since = tree.snapshot(), time.process_time(), time.time()
            sampler0 = _stat(os.getpid(), tree.native_id)[1] if tree.native_id else 0.0
            w0 = {p.name: json.loads(p.read_text()) for p in acct.glob("*.json")}
            t0 = time.perf_counter()
            summary = produce(spark, cfg, a.models, stacks, None, dates[0], dates[-2], Path(tmp) / "out", force=True)
            wall = time.perf_counter() - t0
            d1 = time.process_time()
            _settled(acct)
            s1 = tree.snapshot()
            sampler1 = _stat(os.getpid(), tree.native_id)[1] if tree.native_id else 0.0
            w1 = {p.name: json.loads(p.read_text()) for p in acct.glob("*.json")}
            workers = {"workers": len(w1), "new_workers": len(set(w1) - set(w0)), "tasks": 0, "task_cpu": 0.0,
                       "gc_cpu": 0.0, "import_cpu": 0.0, "process_cpu": 0.0, "fn_cpu": {}, "busy_s": 0.0}
            for name, s in w1.items():
                b = w0.get(name, {"tasks": 0, "task_cpu": 0.0, "gc_cpu": 0.0, "import_cpu": 0.0, "fn_cpu": {},
                                  "process_cpu": s["cpu_at_fork"]})
                for k in ("tasks", "task_cpu", "gc_cpu", "import_cpu", "process_cpu"):
                    workers[k] += s[k] - b[k]
                for k, v in s["fn_cpu"].items():
                    workers["fn_cpu"][k] = workers["fn_cpu"].get(k, 0.0) + v - b["fn_cpu"].get(k, 0.0)
                workers["busy_s"] += sum(e - b_ for b_, e in s["spans"] if b_ >= since)
            runs.append({"wall": wall, "pixels": summary["pixels"], "tiles": sum(v["tiles"] for v in summary["dates"].values()),
                         "driver_cpu": d1 - d0, "sampler_cpu": sampler1 - sampler0, "tree": _delta(s0, s1),
                         "workers": workers, "phases_cpu": dict(ph.cpu), "phases_wall": dict(ph.wall),
                         "dates": {d: {k: v[k] for k in ("tiles_seconds", "finish_seconds", "seconds")}
                                   for d, v in summary["dates"].items()},
                         "gaps": _gaps(ph.events, t0, t0 + wall)})
    spark.stop()
    return {"cores": a.cores, "session_s": t_session, "warm": warm, "warm_workers": warm_workers, "runs": runs,
            "dates": dates[:-1]}


def _settled(acct: Path, timeout: float = 3.0) -> None:
    """Wait until every worker has written its figures of its last task (a worker writes them after
    it has sent its results, so the driver can be back before they are on disk)."""
    end = time.time() + timeout
    while time.time() < end:
        files = [json.loads(p.read_text()) for p in acct.glob("*.json")]
        if all(s["gc_calls"] >= s["tasks"] for s in files):
            return
        time.sleep(0.05)


def _gaps(events: list, t0: float, t1: float) -> dict:
    """Wall time of the run when no date's ``compute_tiles`` was in flight (setup, the last finish,
    idle between dates), and when two were."""
    spans = sorted((s, e) for k, s, e in events if k.startswith("per date: compute_tiles"))
    none = two = 0.0
    cur, edges = 0, sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    last = t0
    for t, d in edges:
        if cur == 0:
            none += t - last
        elif cur >= 2:
            two += t - last
        cur += d
        last = t
    none += t1 - last if cur == 0 else 0.0
    first = spans[0][0] - t0 if spans else 0.0
    return {"no_job_in_flight_s": none, "before_first_job_s": first, "two_jobs_in_flight_s": two}


def run_loop_child(a: argparse.Namespace) -> dict:
    """The per-tile functions in one process (as bench_produce's reference), each function's CPU."""
    sys.path.insert(0, str(HERE))
    import bench_produce as B

    from ssm_spark.product import tiles as P
    from ssm_spark.product.tasks import _tile_of_file

    ns = argparse.Namespace(models=a.models, stacks=a.stacks, dates=a.dates, clim=a.clim, set=list(a.override))
    cfg, grid, dates, reg, region, inv, clim = B._reference_setup(ns)
    fn = {"read_tile_columns": 0.0, "predict_tile": 0.0, "write_tile": 0.0}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats + 1):  # the first pass warms caches (as Spark's warm-up date)
            for k in fn:
                fn[k] = 0.0
            t0, c0, tiles = time.perf_counter(), time.process_time(), 0
            for d in dates:
                job = B._job(cfg, grid, region, d, tmp, clim)
                (Path(tmp) / "parquet" / f"date={d}").mkdir(parents=True, exist_ok=True)
                for f in (f for f in inv.files if f.date == d):
                    c = time.process_time()
                    px, _ = P.read_tile_columns(f, job)
                    c1 = time.process_time()
                    rows = P.predict_tile(px, reg)
                    c2 = time.process_time()
                    P.write_tile(rows, *_tile_of_file(f, grid), job)
                    c3 = time.process_time()
                    fn["read_tile_columns"] += c1 - c
                    fn["predict_tile"] += c2 - c1
                    fn["write_tile"] += c3 - c2
                    tiles += 1
            if rep:
                runs.append({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "tiles": tiles,
                             "fn_cpu": dict(fn)})
    return {"runs": runs, "dates": dates}


# ------------------------------------------------------------------------------------------ table


def _med(xs):
    return statistics.median(xs) if xs else 0.0


def table(spark_res: list[dict], loop: dict, load: tuple) -> str:
    """The accounting table (medians over the timed runs; CPU-seconds per run and per tile)."""
    lr = loop["runs"]
    tiles = lr[0]["tiles"]
    cols = [f"local[{r['cores']}]" for r in spark_res]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, values: list[float | None], fmt: str = "{:.2f}") -> None:
        rows.append((label, [("-" if v is None else fmt.format(v)) for v in values]))

    def m(r: dict, f) -> float:
        return _med([f(x) for x in r["runs"]])

    loop_fn = _med([sum(x["fn_cpu"].values()) for x in lr])
    loop_cpu = _med([x["cpu"] for x in lr])
    add("wall s (one run of the dates)", [m(r, lambda x: x["wall"]) for r in spark_res] + [_med([x["wall"] for x in lr])])
    add("px/s", [m(r, lambda x: x["pixels"] / x["wall"]) for r in spark_res] +
        [None], "{:,.0f}")
    jvm_groups = sorted({g for r in spark_res for x in r["runs"] for g in x["tree"]["jvm_groups"]})
    add("JVM CPU s", [m(r, lambda x: x["tree"]["jvm"]) for r in spark_res] + [None])
    for g in jvm_groups:
        add(f"  {g}", [m(r, lambda x, g=g: x["tree"]["jvm_groups"].get(g, 0.0)) for r in spark_res] + [None])
    add("driver Python CPU s (less the sampler)", [m(r, lambda x: x["driver_cpu"] - x["sampler_cpu"]) for r in spark_res]
        + [None])
    phases = sorted({k for r in spark_res for x in r["runs"] for k in x["phases_cpu"]})
    for k in phases:
        add(f"  {k}", [m(r, lambda x, k=k: x["phases_cpu"].get(k, 0.0)) for r in spark_res] + [None])
    add("  (the sampler of this script, left out)", [m(r, lambda x: x["sampler_cpu"]) for r in spark_res] + [None])
    add("worker daemon CPU s", [m(r, lambda x: x["tree"]["daemon"]) for r in spark_res] + [None])
    add("Python workers CPU s (their /proc)", [m(r, lambda x: x["tree"]["worker"]) for r in spark_res] + [loop_cpu])
    add("  per-tile functions (read, predict, write)", [m(r, lambda x: sum(x["workers"]["fn_cpu"].get(k, 0.0) for k in
        ("read_tile_columns", "predict_tile", "write_tile"))) for r in spark_res] + [loop_fn])
    for k in ("read_tile_columns", "predict_tile", "write_tile"):
        add(f"    {k}", [m(r, lambda x, k=k: x["workers"]["fn_cpu"].get(k, 0.0)) for r in spark_res] +
            [_med([x["fn_cpu"][k] for x in lr])])
    add("  _worker_registry (per task)", [m(r, lambda x: x["workers"]["fn_cpu"].get("_worker_registry", 0.0))
                                         for r in spark_res] + [None])
    add("  PySpark per task (worker_main less the above)", [m(r, lambda x: x["workers"]["task_cpu"] - sum(
        x["workers"]["fn_cpu"].values())) for r in spark_res] + [None])
    add("  daemon's gc.collect() after each task", [m(r, lambda x: x["workers"]["gc_cpu"]) for r in spark_res] + [None])
    add("  between tasks (process less tasks and gc)", [m(r, lambda x: x["workers"]["process_cpu"] - x["workers"]["task_cpu"]
        - x["workers"]["gc_cpu"]) for r in spark_res] + [None])
    add("  tasks", [m(r, lambda x: x["workers"]["tasks"]) for r in spark_res] + [None], "{:.0f}")
    add("all CPU s of the run", [m(r, lambda x: x["tree"]["jvm"] + x["tree"]["daemon"] + x["tree"]["worker"]
        + x["driver_cpu"] - x["sampler_cpu"]) for r in spark_res] + [loop_cpu])
    add("  beyond the per-tile functions' CPU in the loop", [m(r, lambda x: x["tree"]["jvm"] + x["tree"]["daemon"] +
        x["tree"]["worker"] + x["driver_cpu"] - x["sampler_cpu"]) - loop_fn for r in spark_res] + [loop_cpu - loop_fn])
    add("idle core-s (wall x cores less all CPU)", [m(r, lambda x: x["wall"] * r["cores"] - (
        x["tree"]["jvm"] + x["tree"]["daemon"] + x["tree"]["worker"] + x["driver_cpu"] - x["sampler_cpu"]))
        for r in spark_res] + [_med([x["wall"] - x["cpu"] for x in lr])])
    add("  workers' task wall s (sum) / (wall x cores)", [m(r, lambda x: x["workers"]["busy_s"] / (x["wall"] * r["cores"]))
                                                       for r in spark_res] + [None], "{:.2f}")
    add("  wall s with no date's job in flight", [m(r, lambda x: x["gaps"]["no_job_in_flight_s"]) for r in spark_res]
        + [None])
    add("    of which before the first job (setup)", [m(r, lambda x: x["gaps"]["before_first_job_s"]) for r in spark_res]
        + [None])
    add("  wall s with two dates' jobs in flight", [m(r, lambda x: x["gaps"]["two_jobs_in_flight_s"]) for r in spark_res]
        + [None])
    add("per tile: workers' per-tile functions CPU ms", [1000 * m(r, lambda x: sum(x["workers"]["fn_cpu"].get(k, 0.0) for k in
        ("read_tile_columns", "predict_tile", "write_tile")) / x["tiles"]) for r in spark_res] + [1000 * loop_fn / tiles],
        "{:.0f}")
    add("per tile: everything else of Spark, CPU ms", [1000 * m(r, lambda x: (x["tree"]["jvm"] + x["tree"]["daemon"] +
        x["tree"]["worker"] + x["driver_cpu"] - x["sampler_cpu"] - sum(x["workers"]["fn_cpu"].get(k, 0.0) for k in
        ("read_tile_columns", "predict_tile", "write_tile"))) / x["tiles"]) for r in spark_res] +
        [1000 * (loop_cpu - loop_fn) / tiles], "{:.0f}")
    w = max(len(lab) for lab, _ in rows) + 2
    head = f"{'':<{w}}" + "".join(f"{c:>11}" for c in [*cols, "loop"])
    lines = [f"load average before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {tiles} tiles a run "
             f"({len(loop['dates'])} dates: {', '.join(loop['dates'])}); medians of {len(lr)} timed run(s)", head]
    lines += [f"{lab:<{w}}" + "".join(f"{v:>11}" for v in vals) for lab, vals in rows]
    for r in spark_res:
        lines.append(f"local[{r['cores']}] warm-up date (JVM start, workers forked and imported, registry built): "
                     f"{r['warm']['seconds']:.1f} s wall, JVM {r['warm']['jvm_and_workers']['jvm']:.1f} CPU-s, workers "
                     f"{r['warm']['jvm_and_workers']['worker']:.1f} CPU-s (imports "
                     f"{sum(s['import_cpu'] for s in r['warm_workers'].values()):.1f} s in "
                     f"{len(r['warm_workers'])} workers); session start {r['session_s']:.1f} s wall")
        for i, x in enumerate(r["runs"]):
            lines.append(f"  local[{r['cores']}] run {i + 1}: " + "; ".join(
                f"{d} tiles {v['tiles_seconds']} s finish {v['finish_seconds']} s" for d, v in x["dates"].items()))
    return "\n".join(lines)


def _spawn(a: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--models", a.models, "--stacks", a.stacks, "--dates", str(a.dates),
           "--repeats", str(a.repeats), "--clim-dir", a.clim_dir, "--clim", a.clim,
           *([f"--jvm-flags={a.jvm_flags}"] if a.jvm_flags else []), *[f"--conf={kv}" for kv in a.conf],
           *[f"--override={o}" for o in a.override], *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(extra)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def _ensure_climatology(a: argparse.Namespace) -> None:
    """``a.clim_dir`` holds the climatology (built by bench_produce's clim child when absent); ``a.clim``
    its summary, written beside it."""
    summary = Path(a.clim_dir) / "climatology.json"
    if not summary.is_file():
        bench = [sys.executable, str(HERE / "bench_produce.py"), "--child", "--mode", "clim", "--models", a.models,
                 "--stacks", a.stacks, "--clim-dir", a.clim_dir]
        p = subprocess.run(bench, capture_output=True, text=True, cwd=ROOT)
        got = next((json.loads(x[7:]) for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if got is None or got["summary"] is None:
            raise RuntimeError(f"the climatology could not be built into {a.clim_dir}:\n{p.stderr[-3000:]}")
        summary.write_text(json.dumps(got["summary"]))
    a.clim = str(summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="out/demo/models")
    ap.add_argument("--stacks", default="out/demo/sim/stacks")
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clim-dir", default=str(Path(tempfile.gettempdir()) / "spark-acct-climatology"),
                    help="the climatology's folder (built there when it has none; kept for the next run)")
    ap.add_argument("--jvm-flags", default="", help="JVM options added to the driver's (e.g. -XX:TieredStopAtLevel=1)")
    ap.add_argument("--conf", action="append", default=[], help="a Spark property k=v (repeatable)")
    ap.add_argument("--override", action="append", default=[], help="a configuration override (repeatable)")
    ap.add_argument("--no-loop", action="store_true", help="Spark only (the loop's column left empty)")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="spark", help=argparse.SUPPRESS)
    ap.add_argument("--cores-child", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--clim", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.cores = a.cores_child
        res = run_spark_child(a) if a.mode == "spark" else run_loop_child(a)
        print("RESULT " + json.dumps(res), flush=True)
        return
    load = os.getloadavg()
    _ensure_climatology(a)
    spark_res = [_spawn(a, "--mode", "spark", "--cores-child", str(c)) for c in a.cores]
    loop = {"runs": [{"wall": 0.0, "cpu": 0.0, "tiles": spark_res[0]["runs"][0]["tiles"],
                      "fn_cpu": {k: 0.0 for k in ("read_tile_columns", "predict_tile", "write_tile")}}],
            "dates": spark_res[0]["dates"]} if a.no_loop else _spawn(a, "--mode", "loop")
    if a.json:
        Path(a.json).write_text(json.dumps({"spark": spark_res, "loop": loop, "load": load}))
    print(table(spark_res, loop, load))
    after = os.getloadavg()
    print(f"load average after {after[0]:.1f} {after[1]:.1f} {after[2]:.1f}")


if __name__ == "__main__":
    main()
