"""A real Spark standalone cluster on this machine (deploy/standalone/cluster.sh: a master and two
workers on loopback, from the pinned pyspark with spark-class): ``produce`` submitted there with
deploy/spark-submit/standalone.sh gives exactly the local-mode product (product hash and the bytes of
every Parquet, COG, VRT and quicklook file), and still does when a worker is SIGKILLed mid-run (the
job completes on the other worker; had it failed, a re-run completes to the same bytes).

The region is tiny (2 x 2 tiles of 32 cells, 2 dates) so that the whole module takes about a minute
and a half on 2 cores; the local reference is produced in-process with the shared session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssm_spark.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "standalone" / "cluster.sh"
SUBMIT = ROOT / "deploy" / "spark-submit" / "standalone.sh"
# the test_produce region; master and jars left to spark-submit (the same resolved config, and so the
# same config hash in every output, locally and on the cluster)
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
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
    from ssm_spark.pipeline import matchups_run, train_run
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("cluster_region")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    matchups_run(spark, cfg, root / "sim" / "stacks", root / "sim" / "insitu", root / "matchups.parquet")
    train_run(spark, cfg, root / "matchups.parquet", root / "models")
    args = ["--models", str(root / "models"), "--stacks", str(root / "sim" / "stacks"), "--start", D1, "--end", D2]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["produce", "-q", *_sets(SMALL), *args, "--output", str(root / "local")]) == 0
    local = json.loads(buf.getvalue())
    assert local["produced"] == 2 and local["pixels"] == 2 * 64 * 64 and not local["failed_files"]
    return root, args, local


@pytest.fixture(scope="module")
def url(cluster) -> str:
    return _url(cluster)


def _run(url: str, cluster, region, name: str, on_start=None) -> tuple[int, dict | None, str]:
    root, args, _ = region
    _, env, _ = cluster
    env = dict(env, MASTER=url, ENV_ARCHIVE="none", PYTHON=sys.executable, DRIVER_PYTHON=sys.executable,
               SUBMIT_ARGS="--executor-memory 1g --conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false")
    rel = [os.path.relpath(a, root) if a.startswith(str(root)) else a for a in args]
    # relative paths on purpose: made absolute on the driver (executors run in their own folders)
    proc = subprocess.Popen([str(SUBMIT), "produce", "-q", *_sets(SMALL[:-2]), *rel, "--output", name],
                            env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(proc)
    out, err = proc.communicate(timeout=300)
    summary = None
    try:
        summary = json.loads(out)
    except ValueError:
        pass
    return proc.returncode, summary, err


def test_produce_on_the_cluster_equals_local_mode(cluster, region, url):
    root, _, local = region
    _, _, state = cluster
    t0 = time.perf_counter()
    rc, summary, err = _run(url, cluster, region, "on_cluster")
    assert rc == 0, err[-4000:]
    assert summary["product_hash"] == local["product_hash"] and summary["config_hash"] == local["config_hash"]
    assert summary["produced"] == 2 and summary["pixels"] == local["pixels"] and not summary["failed_files"]
    ref, got = _outputs(root / "local"), _outputs(root / "on_cluster")
    assert sorted(got) == sorted(ref) and len(ref) == 2 * (4 + 4 + 1 + 1)
    assert [k for k in ref if got[k] != ref[k]] == []
    for d in (D1, D2):
        m_ref, m_got = (json.loads((r / "parquet" / f"date={d}" / "_SUCCESS.json").read_text())
                        for r in (root / "local", root / "on_cluster"))
        assert m_got["counts"] == m_ref["counts"] and m_got["product_hash"] == m_ref["product_hash"]
    # it ran on the cluster: both workers hosted an executor of the application
    apps = [sorted((state / f"work-{i}").glob("app-*")) for i in (1, 2)]
    assert all(apps), apps
    print(f"cluster run {time.perf_counter() - t0:.1f} s")


def test_a_worker_killed_mid_run_and_the_output_is_still_identical(cluster, region, url):
    root, _, local = region
    _, env, state = cluster
    out = root / "worker_killed"
    killed = {}

    def kill_when_tiles_are_staged(proc):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list((out / "_staging").glob("*/**/*.parquet")) if (out / "_staging").is_dir() else []
            if staged:
                res = subprocess.run([str(CLUSTER), "kill-worker", "1"], env=env, capture_output=True, text=True)
                killed.update(rc=res.returncode, staged=len(staged), running=proc.poll() is None)
                return
            time.sleep(0.05)

    rc, summary, err = _run(url, cluster, region, out.name, on_start=kill_when_tiles_are_staged)
    assert killed.get("rc") == 0 and killed["running"], (killed, err[-3000:])
    if rc != 0:  # failed: cleanly, and a re-run completes
        assert "Traceback" not in err.splitlines()[-1]
        rc, summary, err = _run(url, cluster, region, out.name)
    assert rc == 0, err[-4000:]
    assert summary["product_hash"] == local["product_hash"] and not summary["failed_files"]
    ref, got = _outputs(root / "local"), _outputs(out)
    assert sorted(got) == sorted(ref) and [k for k in ref if got[k] != ref[k]] == []
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())
    assert not (state / "worker-1.pid").exists()
