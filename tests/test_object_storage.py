"""Object storage end to end against a real S3 server (SeaweedFS, started here on loopback).

A product written to ``s3://`` has the same bytes as the same run written to a local folder; a run
killed in the middle of publishing a date resumes to those bytes, with an older run's leftover
object removed; the ``ssm-spark produce`` job reads its stacks from ``s3://`` through GDAL's
``/vsis3/`` and writes its product there, and a second run skips what the store's markers say is
complete. The secret key appears in no log line, summary or object.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssm_spark import storage
from ssm_spark.errors import InputError, InputIOError

import s3server

ROOT = Path(__file__).resolve().parents[1]
D1, D2 = "2024-04-01", "2024-04-07"
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3"]
BUCKET = "ssm-test"


class _Interrupt(RuntimeError):
    pass


# --------------------------------------------------------------------------------- no server


def test_urls_map_to_gdal_paths_settings_and_spark():
    assert storage.is_remote("s3://b/k") and storage.is_remote("/vsis3/b/k") and not storage.is_remote("/Volumes/c/s/v")
    assert storage.gdal_path("s3://b/stacks/2024-04-01/t.tif") == "/vsis3/b/stacks/2024-04-01/t.tif"
    assert storage.gdal_path("gs://b/k") == "/vsigs/b/k"
    assert storage.gdal_path("abfss://cont@acct.dfs.core.windows.net/k/x.tif") == "/vsiadls/cont/k/x.tif"
    assert storage.gdal_path("/Volumes/c/s/v/x.tif") == "/Volumes/c/s/v/x.tif"
    assert storage.url_of("/vsis3/b/k/x.tif") == "s3://b/k/x.tif"
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8333", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert storage.gdal_env(env) == {"AWS_S3_ENDPOINT": "127.0.0.1:8333", "AWS_HTTPS": "NO",
                                     "AWS_VIRTUAL_HOSTING": "FALSE"}
    assert storage.gdal_env({}) == {}  # AWS itself: GDAL's defaults
    conf = storage.s3a_conf(env)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:8333"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert "s3cr3t" not in json.dumps(conf)  # credentials stay in the environment
    with pytest.raises(InputError, match="not an object-store URL"):
        storage.filesystem("ftp://host/x")


# --------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback, its keys in the environment (restored after), a bucket."""
    srv = s3server.start(tmp_path_factory.mktemp("seaweedfs"))
    saved = {k: os.environ.get(k) for k in srv.env()}
    os.environ.update(srv.env())
    try:
        fs = storage.filesystem(f"s3://{BUCKET}")
        import time

        for attempt in range(60):  # the gateway listens before the filer behind it is ready
            try:
                fs.mkdir(BUCKET)
                break
            except Exception:  # noqa: BLE001 - retried, the last one raised
                if attempt == 59:
                    raise
                time.sleep(0.5)
        yield srv
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        srv.stop()


def _objects(url: str) -> dict[str, bytes]:
    fs = storage.filesystem(url)
    root = url.split("://", 1)[1].rstrip("/")
    return {k[len(root) + 1:]: fs.cat_file(k) for k in sorted(fs.find(root))}


def _decoded(data: bytes, name: str):
    """A Parquet file's rows or a GeoTIFF's pixels, without file metadata."""
    import io

    import pyarrow.parquet as pq
    from rasterio.io import MemoryFile

    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).replace_schema_metadata(None).to_pandas().to_json()
    with MemoryFile(data) as mem, mem.open() as src:
        return src.read().tobytes(), src.transform, src.descriptions


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_wrong_credentials_are_named_not_shown(s3, monkeypatch):
    storage.write_bytes(f"s3://{BUCKET}/probe/x.bin", b"abc")
    assert storage.read_bytes(f"s3://{BUCKET}/probe/x.bin") == b"abc"
    assert storage.read_bytes(f"s3://{BUCKET}/probe/none.bin") is None
    assert [p.name for p, _ in storage.listdir(f"s3://{BUCKET}/probe")] == ["x.bin"]
    assert storage.stat(f"/vsis3/{BUCKET}/probe/x.bin")[0] == 3
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3.secret_key[:6])
    with pytest.raises(InputIOError, match=f"s3://{BUCKET}/probe/y.bin: cannot write it.*credentials") as exc:
        storage.write_bytes(f"s3://{BUCKET}/probe/y.bin", b"abc")
    assert s3.secret_key[:6] not in str(exc.value)


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory):
    """A small simulated region (2 x 2 tiles of 32 cells) with a registry trained on it, and its local product."""
    from ssm_spark.config import load_config
    from ssm_spark.pipeline import matchups_run, train_run
    from ssm_spark.product.produce import produce
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("objstore")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    matchups_run(spark, cfg, root / "sim" / "stacks", root / "sim" / "insitu", root / "matchups.parquet")
    train_run(spark, cfg, root / "matchups.parquet", root / "models")
    produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, root / "local")
    return cfg, root


@pytest.mark.spark
@pytest.mark.slow
def test_product_on_s3_same_bytes_resume_and_leftovers(spark, s3, small, caplog):
    from ssm_spark.product.produce import produce

    cfg, root = small
    url = f"s3://{BUCKET}/product"
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, url)

    def stop(s, d):
        if (s, d) == ("publishing", D2):
            raise _Interrupt(f"killed at {s} {d}")

    caplog.set_level(logging.INFO)
    with pytest.raises(_Interrupt):  # killed with D2's first object PUT, its marker not
        produce(*args, hook=stop)
    half = _objects(url)
    assert f"parquet/date={D1}/_SUCCESS.json" in half and f"parquet/date={D2}/_SUCCESS.json" not in half
    assert any(D2 in k for k in half)  # an object of a date not committed
    storage.write_bytes(f"{url}/cog/{D2}/ease2_1km_0_0.tif", b"left by an older run")  # a leftover to clean
    again = produce(*args)
    assert again["dates"][D1]["status"] == "skipped" and again["dates"][D2]["status"] == "produced"
    assert again["output"] == url
    ref = _files(root / "local")  # less the change-detection climatology: it stays in the working folder
    ref = {k: v for k, v in ref.items() if not k.startswith("climatology/")}
    assert _objects(url) == ref  # every object, the same bytes as the local product (markers, STAC included)
    third = produce(*args)  # a fresh working folder: resume keyed on the store's markers alone
    assert third["skipped"] == 2 and _objects(url) == ref
    text = "\n".join(r.getMessage() for r in caplog.records) + json.dumps([again, third], default=str)
    assert s3.secret_key not in text and all(s3.secret_key.encode() not in b for b in _objects(url).values())


@pytest.mark.spark
@pytest.mark.slow
def test_produce_job_reads_stacks_from_s3(s3, small):
    cfg, root = small
    fs = storage.filesystem(f"s3://{BUCKET}")
    for sub in ("stacks", "static"):
        fs.put(str(root / "sim" / sub), f"{BUCKET}/sim/{sub}", recursive=True)
    out = f"s3://{BUCKET}/from-s3"
    cmd = [sys.executable, str(ROOT / "jobs" / "produce.py"), *sum((["--set", o] for o in SMALL), []),
           "--models", str(root / "models"), "--stacks", f"s3://{BUCKET}/sim/stacks",
           "--start", D1, "--end", D1, "--output", out]
    env = {**os.environ, **s3.env()}
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-4000:]
        assert s3.secret_key not in r.stdout + r.stderr
    first, second = (json.loads(r.stdout[r.stdout.index("{"):]) for r in runs)
    assert first["produced"] == 1 and first["failed_files"] == []
    assert second["skipped"] == 1 and second["produced"] == 0  # the store's marker, its inputs the store's objects
    got, ref = _objects(out), _files(root / "local")
    # the same rows and pixels as the local product (the files' tags differ: the climatology's digest, in
    # the product hash, covers its inputs' modification times, which are the objects' own on the store)
    names = sorted(k for k in ref if (k.startswith(f"parquet/date={D1}/") and k.endswith(".parquet"))
                   or k.startswith(f"cog/{D1}/"))
    assert names and sorted(k for k in got if k.startswith((f"parquet/date={D1}/", f"cog/{D1}/"))
                            and not k.endswith(".json")) == names
    for k in names:
        assert _decoded(got[k], k) == _decoded(ref[k], k), k
    marker = json.loads(got[f"parquet/date={D1}/_SUCCESS.json"])
    assert {i["file"] for i in marker["inputs"]} == {i["file"] for i in json.loads(
        ref[f"parquet/date={D1}/_SUCCESS.json"])["inputs"]}
