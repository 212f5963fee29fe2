"""A real Spark standalone cluster on this machine (deploy/standalone/cluster.sh: a master and two
workers on loopback, from the pinned pyspark with spark-class): ``produce`` submitted there with
deploy/spark-submit/standalone.sh gives exactly the local-mode product (product hash and the bytes of
every Parquet, COG, VRT and quicklook file), and still does after faults: a worker SIGKILLed mid-run
(the job goes on with the other one), then the driver SIGKILLed between two dates (a re-run resumes);
a stack file corrupted while the run reads the dates (recorded with its reason, everything else the
local product); two runs into one output at once (the output lock: one refuses, naming the holder,
never a mixed product).

The region is tiny (2 x 2 tiles of 32 cells, 2 dates) so that the whole module takes about a minute
and a half on 2 cores; the local reference is produced in-process with the shared session."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssm_spark.config import load_config
from regions import trained_region

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "standalone" / "cluster.sh"
SUBMIT = ROOT / "deploy" / "spark-submit" / "standalone.sh"
# the test_produce region; master and jars left to spark-submit (the same resolved config, and so the
# same config hash in every output, locally and on the cluster)
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
         "produce.dates_in_flight=1",  # one date at a time: the driver is killed between two commits
         "spark.master=null", "spark.jars.mode=cluster"]
D1, D2 = "2024-04-01", "2024-04-07"
KINDS = (".parquet", ".tif", ".vrt", ".png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outputs(root: Path) -> dict[str, bytes]:
    """Every product file (Parquet, COG, VRT, quicklook) by relative path: markers and product.json
    hold timings, so they are compared on their content fields instead."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in KINDS}


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Master + 2 workers (1 core, 1 GiB each) on free loopback ports; stopped by pid at the end."""
    state = tmp_path_factory.mktemp("standalone")
    env = dict(os.environ, CLUSTER_DIR=str(state), SPARK_HOST="127.0.0.1", MASTER_PORT=str(_free_port()),
               MASTER_WEBUI_PORT=str(_free_port()), WORKERS="2", WORKER_CORES="1", WORKER_MEMORY="1536m",
               PYTHON=sys.executable)
    start = subprocess.Popen([str(CLUSTER), "start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield start, env, state
    res = subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert not list(state.glob("*.pid"))


def _url(cluster) -> str:
    start, env, state = cluster
    out, err = start.communicate(timeout=120)
    assert start.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def region(spark, cluster, tmp_path_factory):
    """The simulated region, its registry, and the local-mode product (in-process, shared session)."""
    from ssm_spark.cli import main

    root = tmp_path_factory.mktemp("cluster_region")
    # a copy of the defaults, read by every run: the same config hash in every output even if
    # conf/default.yaml changes while the module runs
    shutil.copy(ROOT / "conf" / "default.yaml", root / "default.yaml")
    cfg = load_config([root / "default.yaml"], SMALL)
    trained_region(spark, cfg, root)
    args = ["--config", str(root / "default.yaml"), "--models", str(root / "models"),
            "--stacks", str(root / "sim" / "stacks"), "--start", D1, "--end", D2]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["produce", "-q", *_sets(SMALL), *args, "--output", str(root / "local")]) == 0
    local = json.loads(buf.getvalue())
    assert local["produced"] == 2 and local["pixels"] == 2 * 64 * 64 and not local["failed_files"]
    return root, args, local


@pytest.fixture(scope="module")
def url(cluster) -> str:
    return _url(cluster)


def _run(url: str, cluster, region, name: str, on_start=None, args=None, log: str | None = None
         ) -> tuple[int, dict | None, str]:
    """``standalone.sh produce`` into ROOT/NAME (own process group; logs in files, so that a hook that
    waits on the run cannot block it on a full pipe); ``args`` replaces the region's produce arguments,
    ``log`` names the log files (default NAME)."""
    root, region_args, _ = region
    log = log or name
    args = region_args if args is None else args
    _, env, _ = cluster
    env = dict(env, MASTER=url, ENV_ARCHIVE="none", PYTHON=sys.executable, DRIVER_PYTHON=sys.executable,
               SUBMIT_ARGS="--executor-memory 1g --conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false")
    rel = [os.path.relpath(a, root) if a.startswith(str(root)) else a for a in args]
    # relative paths on purpose: made absolute on the driver (executors run in their own folders)
    with open(root / f"{log}.out", "w") as fo, open(root / f"{log}.err", "w") as fe:
        proc = subprocess.Popen([str(SUBMIT), "produce", "-q", *_sets(SMALL[:-2]), *rel, "--output", name],
                                env=env, cwd=root, stdout=fo, stderr=fe, text=True, start_new_session=True)
        try:
            if on_start is not None:
                on_start(proc)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out, err = (root / f"{log}.out").read_text(), (root / f"{log}.err").read_text()
    try:  # the run's summary: the JSON object printed last
        summary = json.loads(out[out.index("{\n"):]) if "{\n" in out else None
    except ValueError:
        summary = None
    if proc.returncode == 0 and summary is None:
        raise AssertionError(f"no JSON summary on stdout: {out[:2000]!r}\n{_why(err)}")
    return proc.returncode, summary, err


def _why(err: str) -> str:
    """The job's own messages and errors from a spark-submit log (not Spark's INFO chatter)."""
    keep = [ln for ln in err.splitlines() if "ssm_spark" in ln or "ERROR" in ln or "Error" in ln or "Traceback" in ln]
    return "\n".join(keep[-40:]) or err[-3000:]


def _wait_for(predicate, proc, seconds: float = 180) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_produce_on_the_cluster_equals_local_mode(cluster, region, url):
    root, _, local = region
    _, _, state = cluster
    t0 = time.perf_counter()
    rc, summary, err = _run(url, cluster, region, "on_cluster")
    assert rc == 0, _why(err)
    assert summary["product_hash"] == local["product_hash"] and summary["config_hash"] == local["config_hash"]
    assert summary["produced"] == 2 and summary["pixels"] == local["pixels"] and not summary["failed_files"]
    ref, got = _outputs(root / "local"), _outputs(root / "on_cluster")
    assert sorted(got) == sorted(ref)
    for kind, n in (("parquet/", 8), ("cog/", 8), ("vrt/", 2), ("quicklook/", 2)):  # 2 dates x 4 tiles
        assert sum(k.startswith(kind) for k in ref) == n, kind
    assert [k for k in ref if got[k] != ref[k]] == []
    for d in (D1, D2):
        m_ref, m_got = (json.loads((r / "parquet" / f"date={d}" / "_SUCCESS.json").read_text())
                        for r in (root / "local", root / "on_cluster"))
        assert m_got["counts"] == m_ref["counts"] and m_got["product_hash"] == m_ref["product_hash"]
    # it ran on the cluster: both workers hosted an executor of the application
    apps = [sorted((state / f"work-{i}").glob("app-*")) for i in (1, 2)]
    assert all(apps), apps
    print(f"cluster run {time.perf_counter() - t0:.1f} s")


@pytest.mark.long  # ~45-60 s on 2 cores: `make test-long`; the suite's CI time (docs/pipeline.md)
def test_a_worker_then_the_driver_killed_mid_run_and_the_resumed_output_is_identical(cluster, region, url):
    """Two faults in one run: a node lost (worker 1 and its executor, SIGKILL) while the first date's
    tiles are being staged: the job goes on with the other worker and commits the date; then the
    driver's machine lost (the whole spark-submit process group, SIGKILL) before the second date is
    committed. A re-run skips the committed date, recomputes the other, and the product is the
    local-mode one, byte for byte, with no staging left."""
    root, _, local = region
    _, env, state = cluster
    out = root / "faults"
    marker = out / "parquet" / f"date={D1}" / "_SUCCESS.json"
    events: dict = {}

    def faults(proc):
        staging = out / "_staging"
        if _wait_for(lambda: staging.is_dir() and any(staging.glob("*/**/*.parquet")), proc):
            res = subprocess.run([str(CLUSTER), "kill-worker", "1"], env=env, capture_output=True, text=True)
            events["worker"] = res.returncode == 0 and proc.poll() is None
        if _wait_for(marker.is_file, proc):
            os.killpg(proc.pid, signal.SIGKILL)
            events["driver"] = True

    rc, summary, err = _run(url, cluster, region, out.name, on_start=faults)
    assert events == {"worker": True, "driver": True}, (events, rc, _why(err))
    assert rc == -signal.SIGKILL and summary is None and not (state / "worker-1.pid").exists()
    assert marker.is_file() and not (out / "parquet" / f"date={D2}" / "_SUCCESS.json").exists()

    rc, summary, err = _run(url, cluster, region, out.name)
    assert rc == 0, _why(err)
    assert summary["product_hash"] == local["product_hash"] and not summary["failed_files"]
    assert (summary["produced"], summary["skipped"]) == (1, 1)
    ref, got = _outputs(root / "local"), _outputs(out)
    assert sorted(got) == sorted(ref) and [k for k in ref if got[k] != ref[k]] == []
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())


def test_a_stack_file_corrupted_mid_run_is_recorded_and_everything_else_completes(cluster, region, url):
    """A tile of the second date is overwritten with garbage while the first date's tiles are being
    staged (after the driver's checks at the start): its task records the read failure, the date is
    committed as incomplete with its other tiles, and every other file is the local product's."""
    root, args, local = region
    stacks = root / "sim_corrupted" / "stacks"  # static/ beside the stacks, as in sim/
    shutil.copytree(root / "sim" / "stacks", stacks)
    shutil.copytree(root / "sim" / "static", stacks.parent / "static")
    bad = sorted((stacks / D2).glob("*.tif"))[0]
    out = root / "corrupted"
    events: dict = {}

    def corrupt(proc):
        staging = out / "_staging"
        if _wait_for(lambda: staging.is_dir() and any(staging.glob("*/**/*.parquet")), proc):
            blob = bytearray(bad.read_bytes())
            blob[200:len(blob) // 2] = b"\xff" * (len(blob) // 2 - 200)  # header intact, data blocks garbage
            bad.write_bytes(bytes(blob))
            events["corrupted"] = proc.poll() is None

    run_args = [a if a != str(root / "sim" / "stacks") else str(stacks) for a in args]
    assert run_args != args
    rc, summary, err = _run(url, cluster, region, out.name, on_start=corrupt, args=run_args)
    assert events == {"corrupted": True} and rc == 0, (events, rc, _why(err))
    assert [Path(f["file"]).name for f in summary["failed_files"]] == [bad.name], summary["failed_files"]
    assert summary["failed_files"][0]["reason"]
    assert summary["dates"][D1]["status"] == "produced" and summary["dates"][D2]["status"] == "incomplete"
    marker = json.loads((out / "parquet" / f"date={D2}" / "_SUCCESS.json").read_text())
    assert marker["status"] == "incomplete" and [Path(f["file"]).name for f in marker["failed_files"]] == [bad.name]
    ref, got = _outputs(root / "local"), _outputs(out)
    tile = bad.stem  # the tile's files: absent from the product, not half-written
    missing = sorted(k for k in ref if tile in k and D2 in k)
    assert missing and sorted(set(ref) - set(got)) == missing and not (set(got) - set(ref))
    # the mosaic and quicklook of D2 differ (a tile is missing); every other file is the local one
    differ = sorted(k for k in got if got[k] != ref[k])
    assert all(D2 in k and (k.endswith(".vrt") or k.endswith(".png")) for k in differ), differ


@pytest.mark.long  # ~45-60 s on 2 cores: `make test-long`; the suite's CI time (docs/pipeline.md)
def test_two_runs_into_one_output_at_once_never_mix(cluster, region, url):
    """Two ``produce`` runs started together into the same folder: the output lock lets one in; the
    other finishes first (then the second skips every date) or is refused with exit 2 naming the
    holder. Either way the product is the local one, byte for byte."""
    import threading

    root, _, local = region
    out = root / "concurrent"
    results: dict = {}

    def go(i: int) -> None:
        results[i] = _run(url, cluster, region, out.name, log=f"{out.name}_{i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    rcs = sorted(r[0] for r in results.values())
    assert len(rcs) == 2 and rcs[0] == 0 and rcs[1] in (0, 2), {i: (r[0], _why(r[2])) for i, r in results.items()}
    for rc, summary, err in results.values():
        if rc == 2:
            assert "is in use by another produce" in err, _why(err)
        else:
            assert summary["product_hash"] == local["product_hash"]
    if rcs == [0, 0]:  # one after the other: the second found every date committed
        assert sorted(r[1]["produced"] for r in results.values()) == [0, 2]
    ref, got = _outputs(root / "local"), _outputs(out)
    assert sorted(got) == sorted(ref) and [k for k in ref if got[k] != ref[k]] == []
    assert not (out / "_LOCK.json").exists()
