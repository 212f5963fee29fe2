"""Object storage end to end against a real S3 server (SeaweedFS, started here on loopback).

A product written to ``s3://`` has the same bytes as the same run written to a local folder; a run
killed in the middle of publishing a date resumes to those bytes, with an older run's leftover
object removed; the ``ssm-spark produce`` job reads its stacks from ``s3://`` through GDAL's
``/vsis3/`` and writes its product there, and a second run skips what the store's markers say is
complete. The tiles (fine and aggregated) are PUT by the executors under the run's staging prefix
``_staging/<date>.<8 hex>/`` on the store and never land in the driver's working folder; the
published product is a local one's, byte for byte; a repeat run writes no object; a killed run's
staging prefixes of a date are removed; a date failing on a broken registry leaves the committed
date as it was and no staging; an object lost from the staging fails the date by name. The product's
lock ``_LOCK.json`` is taken by conditional write (one holder among runs
at once, the others refused naming it; stale, dead and broken locks taken over; write-then-verify for
stores without conditional writes), and two ``produce`` jobs at once into one URL give one product.
The secret key appears in no log line, summary or object.

The other jobs by URL: ``simulate`` and ``features --output s3://`` publish the local files and rows;
``validate --product s3://`` reads only the committed dates (a checked, cached copy of the stations'
tiles) and gives the local product's metrics; ``ssm-spark demo --output s3://`` (slow: three jobs and a
local demo) killed in ``produce`` resumes to the local demo's product and validation, and run again skips
every date and rewrites none of the product's or the simulation's objects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssm_spark import storage
from ssm_spark.errors import InputError, InputIOError

import emulator
import s3server
from regions import trained_region

ROOT = Path(__file__).resolve().parents[1]
D1, D2 = "2024-04-01", "2024-04-07"
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3"]
BUCKET = "ssm-test"


class _Interrupt(RuntimeError):
    pass


# --------------------------------------------------------------------------------- no server


def test_s3a_jars_match_pysparks_hadoop():
    """hadoop-aws must be the Hadoop release pyspark ships; the S3A jars are fetched (setup.sh --test) and whole."""
    import pyspark

    from ssm_spark import jars

    shipped = sorted(p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert shipped == [f"hadoop-client-api-{jars.HADOOP_VERSION}.jar"]
    got = jars.s3a_jars()
    assert [p.name for p in got] == [a.filename for a in jars.S3A_ARTIFACTS], \
        f"the S3A jars are not in {jars.jars_dir()}: run {jars.S3A_FETCH_COMMAND}"
    assert sum(p.stat().st_size for p in got) < 20 * 2 ** 20  # the SDK's modules, not its 558 MB bundle


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



def test_gdal_settings_follow_the_endpoint_but_keep_the_users(monkeypatch):
    """apply_gdal_env's own settings follow AWS_ENDPOINT_URL_S3 within a process (a second server: GDAL
    must not go on talking to the first one); a setting the user made stays."""
    for k in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(storage.settings, "_applied_gdal", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8333")
    assert storage.apply_gdal_env()["AWS_S3_ENDPOINT"] == "127.0.0.1:8333"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.example:9000")
    got = storage.apply_gdal_env()
    assert got == {"AWS_S3_ENDPOINT": "minio.example:9000", "AWS_HTTPS": "YES", "AWS_VIRTUAL_HOSTING": "FALSE"}
    assert os.environ["AWS_S3_ENDPOINT"] == "minio.example:9000"
    monkeypatch.setenv("AWS_HTTPS", "NO")  # the user's own: kept from now on
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9999")
    assert storage.apply_gdal_env() == {"AWS_S3_ENDPOINT": "127.0.0.1:9999", "AWS_HTTPS": "NO",
                                        "AWS_VIRTUAL_HOSTING": "FALSE"}
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # AWS itself: this function's settings removed, the user's kept
    assert storage.apply_gdal_env() == {}
    assert "AWS_S3_ENDPOINT" not in os.environ and "AWS_VIRTUAL_HOSTING" not in os.environ
    assert os.environ["AWS_HTTPS"] == "NO"


# --------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback, its keys in the environment (restored after), a bucket."""
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET) as srv:
        yield srv


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


_race = emulator.race_lock


def test_delete_one_object(s3):
    url = f"s3://{BUCKET}/delete-me/x.json"
    storage.write_bytes(url, b"{}")
    assert storage.read_bytes(url) == b"{}"
    storage.delete(url)
    assert storage.read_bytes(url) is None
    storage.delete(url)  # not there: no error
    assert storage.read_bytes(url) is None


def test_lock_on_the_store(s3, caplog, monkeypatch):
    """``_LOCK.json`` by conditional write: one holder, the rest refused by name; stale and dead holders taken
    over; a holder whose lock was taken finds out; write-then-verify (for stores without conditional writes)."""
    import socket
    import time

    from ssm_spark import storage as S
    from ssm_spark.product.remote import RemoteLock

    monkeypatch.setattr(S.lock, "VERIFY_WAIT_S", 1.0)  # write-then-verify's wait (2 s): the racing writes are ms apart
    url = f"s3://{BUCKET}/locked"
    lock_url = f"{url}/_LOCK.json"
    a = RemoteLock(url, "produce A")
    assert a.probe() is True  # SeaweedFS's gateway refuses a PUT with If-None-Match: * over an object
    with a:
        held = json.loads(storage.read_bytes(lock_url))
        assert held["token"] == a.token and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(InputError, match=rf"{url} is in use by another produce A: pid {os.getpid()} on "
                                             rf"{socket.gethostname()}.*lock {lock_url}, refreshed \d+ s ago"):
            RemoteLock(url, "produce B").acquire()
        a.refresh()  # a new ETag, still ours
        a.check()
    assert storage.read_bytes(lock_url) is None  # released
    # many runs at once: exactly one holds it, every other is refused naming it
    got = _race(url, 6, conditional=True)
    assert len(got) == 1 and json.loads(storage.read_bytes(lock_url))["token"] == got[0].token
    # another machine's fresh lock is refused, and taken from it with --break-lock: the old holder finds out
    b = RemoteLock(url, "produce B", break_lock=True).acquire()
    with pytest.raises(InputError, match=rf"{lock_url}: this run no longer holds the product's lock \(taken over "
                                         r"by produce B"):
        got[0].check()
    got[0].release()  # does not remove b's lock
    assert json.loads(storage.read_bytes(lock_url))["token"] == b.token
    b._stop.set()  # b is "killed": its lock stays, not refreshed
    dead = subprocess.Popen(["true"])
    dead.wait()
    storage.write_bytes(lock_url, json.dumps({"pid": dead.pid, "host": socket.gethostname(), "job": "old run",
                                              "token": "x"}).encode())
    caplog.set_level(logging.WARNING)
    with RemoteLock(url, "produce C") as c:  # a dead holder on this host: taken over, said
        assert json.loads(storage.read_bytes(lock_url))["token"] == c.token
    assert f"{lock_url}: taking over the lock of old run: pid {dead.pid}" in caplog.text and "holder is gone" in caplog.text
    storage.write_bytes(lock_url, json.dumps({"pid": 1, "host": "elsewhere", "job": "far run", "token": "y"}).encode())
    with pytest.raises(InputError, match="in use by another far run: pid 1 on elsewhere"):
        RemoteLock(url).acquire()
    time.sleep(2.2)  # the server's clock: the lock's age is its Date minus the object's Last-Modified
    with RemoteLock(url, stale_after=1.0):
        pass
    assert "not refreshed for" in caplog.text and storage.read_bytes(lock_url) is None
    # write-then-verify: the same refusals, and one holder among runs that race
    v = RemoteLock(url, "verify A", conditional=False).acquire()
    with pytest.raises(InputError, match="in use by another verify A"):
        RemoteLock(url, "verify B", conditional=False).acquire()
    v.check()
    v.release()
    assert storage.read_bytes(lock_url) is None
    got = _race(url, 3, conditional=False)  # all three find no lock and write theirs: the last writer holds it
    assert len(got) == 1 and json.loads(storage.read_bytes(lock_url))["token"] == got[0].token
    got[0].release()
    assert storage.read_bytes(lock_url) is None


def test_publish_is_whole_or_absent_and_readers_cache_by_marker(s3, tmp_path, monkeypatch):
    """A folder published marker last (leftovers removed, nothing rewritten when unchanged), a failed staging
    publishes nothing, a reader gets one whole version (cached by its marker) or an error naming the URL."""
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    url = f"s3://{BUCKET}/pub/registry"
    src = tmp_path / "v1"
    (src / "models").mkdir(parents=True)
    (src / "manifest.json").write_text('{"manifest_id": "one"}')
    (src / "models" / "a.json").write_text("a1")
    (src / "models" / "old.json").write_text("old")
    (src / ".manifest.json.0123abcd.tmp").write_text("a temporary")  # never published
    with pytest.raises(InputError, match=f"{url}: no published model registry there"):
        storage.local_copy(url, "model registry")
    with pytest.raises(RuntimeError, match="failed"), storage.staged(url, "model registry") as out:
        out.mkdir()
        (out / "manifest.json").write_text("half")
        raise RuntimeError("failed")
    assert _objects(f"s3://{BUCKET}/pub") == {}  # nothing published
    m1 = storage.publish(src, url, "model registry")
    assert sorted(m1["files"]) == ["manifest.json", "models/a.json", "models/old.json"]
    assert sorted(_objects(url)) == ["_PUBLISHED.json", "manifest.json", "models/a.json", "models/old.json"]
    c1 = storage.local_copy(url, "model registry")
    assert c1.name == "registry" and (c1 / "models" / "a.json").read_text() == "a1"
    assert storage.local_copy(url) == c1  # the same marker: the same copy, nothing downloaded
    before = _objects(url)
    assert storage.publish(src, url, "model registry") == m1 and _objects(url) == before  # unchanged: not rewritten
    (src / "models" / "old.json").unlink()
    (src / "models" / "a.json").write_text("a2")
    with storage.staged(url, "model registry") as out:  # a new version through a staging folder
        import shutil

        shutil.copytree(src, out)
    assert sorted(_objects(url)) == ["_PUBLISHED.json", "manifest.json", "models/a.json"]  # leftover removed
    c2 = storage.local_copy(url)
    assert c2 != c1 and (c2 / "models" / "a.json").read_text() == "a2" and not (c2 / "models" / "old.json").exists()
    storage.write_bytes(f"{url}/models/a.json", b"a3, mid-publication")  # an object not the marker's: refused
    with pytest.raises(InputIOError, match=rf"{url}/models/a.json: not the file {url}/_PUBLISHED.json lists"):
        storage.download(url, tmp_path / "dl")
    one = f"s3://{BUCKET}/pub/table.parquet"  # a single file: one PUT, cached by its ETag
    (tmp_path / "t.parquet").write_bytes(b"PAR1 table")
    with storage.staged(one, "matchup table") as out:
        out.write_bytes((tmp_path / "t.parquet").read_bytes())
    assert storage.local_copy(one).read_bytes() == b"PAR1 table"


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory):
    """A small simulated region (2 x 2 tiles of 32 cells) with a registry trained on it, and its local product."""
    from ssm_spark.config import load_config
    from ssm_spark.product.produce import produce

    root = tmp_path_factory.mktemp("objstore")
    cfg = load_config(overrides=SMALL)
    trained_region(spark, cfg, root)
    produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, root / "local")
    return cfg, root


@pytest.mark.spark
@pytest.mark.slow
def test_product_on_s3_same_bytes_resume_and_leftovers(spark, s3, small, caplog):
    from ssm_spark.product.produce import produce

    cfg, root = small
    url = f"s3://{BUCKET}/product"
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, url)

    refused = []

    def stop(s, d):
        if (s, d) == ("publishing", D1):  # a second run while this one publishes: refused, naming the lock
            with pytest.raises(InputError, match=rf"{url} is in use by another ssm-spark produce: pid {os.getpid()}"
                                                 rf".*lock {url}/_LOCK.json") as exc:
                produce(*args, staging_dir=root / "second")
            refused.append(str(exc.value))
        if (s, d) == ("publishing", D2):
            raise _Interrupt(f"killed at {s} {d}")

    caplog.set_level(logging.INFO)
    with pytest.raises(_Interrupt):  # killed with D2's first object PUT, its marker not
        produce(*args, hook=stop)
    half = _objects(url)
    assert refused and "_LOCK.json" not in half  # the killed run's lock released on its way out
    assert f"parquet/date={D1}/_SUCCESS.json" in half and f"parquet/date={D2}/_SUCCESS.json" not in half
    assert any(D2 in k for k in half)  # an object of a date not committed
    storage.write_bytes(f"{url}/cog/{D2}/ease2_1km_0_0.tif", b"left by an older run")  # a leftover to clean
    again = produce(*args)
    assert again["dates"][D1]["status"] == "skipped" and again["dates"][D2]["status"] == "produced"
    assert again["output"] == url
    ref = _files(root / "local")
    clim = sorted(k for k in ref if k.startswith("climatology/") and k.endswith("climatology.json"))
    assert clim  # the registry uses change detection: its climatology is kept on the store, published
    got = _objects(url)
    marker = clim[0].replace("climatology.json", "_PUBLISHED.json")
    assert set(json.loads(got.pop(marker))["files"]) == {k.split("/", 2)[2] for k in ref if k.startswith(
        clim[0].rsplit("/", 1)[0] + "/")}
    assert got == ref  # every object, the same bytes as the local product (markers, STAC, climatology included)
    before = _objects(url)
    third = produce(*args)  # a fresh working folder: resume keyed on the store's markers, the climatology fetched
    assert third["skipped"] == 2 and _objects(url) == before  # and reused: not one object rewritten
    text = "\n".join(r.getMessage() for r in caplog.records) + json.dumps([again, third], default=str)
    assert s3.secret_key not in text and all(s3.secret_key.encode() not in b for b in _objects(url).values())
    # Spark reads the product through Hadoop's S3A (jars fetch --s3a): the local product's rows
    r = subprocess.run([sys.executable, "-c", _S3A_READ, f"s3a://{BUCKET}/product/parquet",
                        str(root / "local" / "parquet")], env={**os.environ, **s3.env()}, capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    assert s3.secret_key not in r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["s3a"] == got["local"] > 0 and got["only_s3a"] == got["only_local"] == 0, got
    assert got["dates"] == [D1, D2] and "s3a.secret.key" not in got["conf"]  # credentials: the environment's only


def _listing(url: str) -> dict[str, tuple]:
    """Every object under ``url``: (size, ETag, LastModified): a PUT or copy of any object changes it."""
    fs = storage.filesystem(url)
    root = url.split("://", 1)[1].rstrip("/")
    return {k[len(root) + 1:]: (v["size"], v.get("ETag"), v.get("LastModified")) for k, v in
            fs.find(root, detail=True).items()}


def test_a_staged_object_lost_or_changed_fails_the_date_by_name(s3):
    from ssm_spark.product.outputs import _staged_objects

    url = f"s3://{BUCKET}/lost/_staging/{D1}.0123abcd"
    storage.write_bytes(f"{url}/parquet/date={D1}/ease2_1km_0_0.parquet", b"12345")
    said = [{"files": json.dumps({f"parquet/date={D1}/ease2_1km_0_0.parquet": 5})}, {"files": None}]
    assert _staged_objects(url, said) == {f"parquet/date={D1}/ease2_1km_0_0.parquet": 5}
    with pytest.raises(InputIOError, match=rf"{url}/cog/{D1}/ease2_1km_0_0.tif: a task wrote 7 bytes there, the "
                                           "store lists no object: a PUT was lost"):
        _staged_objects(url, [*said, {"files": json.dumps({f"cog/{D1}/ease2_1km_0_0.tif": 7})}])
    with pytest.raises(InputIOError, match="wrote 6 bytes there, the store lists 5"):
        _staged_objects(url, [{"files": json.dumps({f"parquet/date={D1}/ease2_1km_0_0.parquet": 6})}])


@pytest.mark.spark
@pytest.mark.slow
def test_tiles_staged_on_the_store_not_in_the_drivers_folder(spark, s3, small, tmp_path, monkeypatch):
    """The executors PUT every tile (fine and aggregated) under the run's staging prefix on the store; the
    driver's working folder never holds a tile; the product equals a local one byte for byte; a repeat
    run writes nothing; a killed run's staging is removed; a failing date leaves the committed one."""
    import hashlib

    import xgboost as xgb

    from ssm_spark.config import load_config
    from ssm_spark.errors import ModelRegistryError
    from ssm_spark.product import run as run_mod
    from ssm_spark.product.produce import produce

    _, root = small
    cfg = load_config(overrides=SMALL + ["produce.aggregate=[3, 9]", "produce.aggregate_min_fraction=0.5"])
    local = tmp_path / "local"
    produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D1, local)
    url = f"s3://{BUCKET}/staged"
    work = tmp_path / "work"
    tiles = lambda: sorted(p.relative_to(work).as_posix() for p in work.rglob("*")  # noqa: E731
                           if p.is_file() and p.suffix in (".parquet", ".tif"))
    seen, original = [], run_mod.compute_tiles

    def watched(spark_, cfg_, job, files, bc, staging):
        assert job.staging.startswith(f"{url}/_staging/{job.date}.") and len(job.staging.rsplit(".", 1)[1]) == 8
        out = original(spark_, cfg_, job, files, bc, staging)
        seen.append((job.staging, sorted(k for k in _objects(job.staging)), tiles()))
        return out

    def hook(stage, date):
        seen.append((stage, sorted(_objects(seen[0][0])) if stage == "staged" else None, tiles()))

    monkeypatch.setattr(run_mod, "compute_tiles", watched)
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D1, url)
    res = produce(*args, staging_dir=work, hook=hook)
    assert res["produced"] == 1
    ref = _files(local)
    want = sorted(k for k in ref if k.endswith((".parquet", ".tif")) and not k.startswith("climatology/"))
    assert seen[0][1] == [k for k in want if not k.startswith("agg/")]  # the fine tiles, PUT by the executors
    assert [s for s in seen if s[0] == "staged"][0][1] == want  # and the aggregated ones
    assert any(k.startswith("agg/ease2_9km/cog/") for k in want) and len(seen) > 3
    assert all(t == [] for *_, t in seen)  # no tile in the driver's folder, ever
    got = _objects(url)
    assert not any(k.startswith("_staging/") for k in got)
    clim = [k for k in got if k.startswith("climatology/") and k.endswith("_PUBLISHED.json")]
    for k in clim:
        got.pop(k)
    assert got == ref  # the same bytes: tiles, aggregates, VRTs, quicklooks, markers, STAC, product.json
    before = _listing(url)
    # a killed run's staging prefixes: the date's are removed when the date is found complete, another date's stay
    for key in (f"_staging/{D1}.deadbeef/parquet/date={D1}/ease2_1km_0_0.parquet", f"_staging/{D1}.0badc0de/x.tif",
                "_staging/2030-01-01.00000000/x.tif"):
        storage.write_bytes(f"{url}/{key}", b"left by a killed run")
    again = produce(*args)  # a fresh working folder: resume on the store's markers
    assert again["skipped"] == 1
    after = _listing(url)
    assert sorted(after) == sorted([*before, "_staging/2030-01-01.00000000/x.tif"])
    assert {k: after[k] for k in before} == before  # not one object written again
    storage.delete(f"{url}/_staging/2030-01-01.00000000/x.tif")
    # a date that fails (a registry whose estimates are out of the physical range) leaves the committed one
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    man = json.loads((models / "manifest.json").read_text())
    glob = man["serving"]["global"]
    for unit in man["serving"]:
        man["serving"][unit] = dict(glob)
    b = xgb.Booster()
    b.load_model(bytearray((models / glob["point_model"]).read_bytes()))
    j = json.loads(b.save_raw("json"))
    j["learner"]["learner_model_param"]["base_score"] = "[2.5E1]"
    b.load_model(bytearray(json.dumps(j).encode()))
    blob = bytes(b.save_raw("ubj"))
    (models / glob["point_model"]).write_bytes(blob)
    man["files"][glob["point_model"]] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (models / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelRegistryError, match="outside the physical range"):
        produce(spark, cfg, models, root / "sim" / "stacks", None, D1, D1, url, force=True)
    assert _listing(url) == before  # the committed date as it was, its staging prefix deleted
    # executors whose credentials the store refuses (a cluster without them): the store's error, by name
    with emulator.executors_with_a_wrong_secret(spark, monkeypatch):
        with pytest.raises(InputIOError, match=rf"{url}/_staging/{D1}\.[0-9a-f]{{8}}/parquet/date={D1}/ease2_1km_\d+_\d+"
                                               r"\.parquet: cannot write it from an executor \(the store's settings "
                                               r"and credentials must be in the executors' environment\)") as exc:
            produce(*args, force=True)
        assert s3.secret_key not in str(exc.value)
    assert _listing(url) == before


#: A new Spark session (its S3A settings from the environment, ssm_spark.spark.session) reading a product
#: from s3a:// and from a local folder: row counts both ways
_S3A_READ = """
import json, sys
from ssm_spark.config import SparkConfig
from ssm_spark.spark import session
spark = session(SparkConfig(master="local[1]", shuffle_partitions=2, conf={"spark.ui.enabled": "false"}))
a, b = spark.read.parquet(sys.argv[1]), spark.read.parquet(sys.argv[2])
conf = {k: v for k, v in spark.sparkContext.getConf().getAll() if "s3a" in k}
print(json.dumps({"s3a": a.count(), "local": b.count(), "only_s3a": a.exceptAll(b).count(),
                  "only_local": b.exceptAll(a).count(), "conf": sorted(conf),
                  "dates": sorted(str(r[0]) for r in a.select("date").distinct().collect())}))
"""


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
    # two runs at once into one URL: one refuses (exit 2, naming the lock and its holder), or, if it takes the
    # lock after the other released it, it skips the date the other's marker says complete; never a mixed product
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    runs = [(p.wait(timeout=400), *p.communicate()) for p in procs]
    for rc, stdout, stderr in runs:
        assert rc in (0, 2), stderr[-4000:]
        assert s3.secret_key not in stdout + stderr
    done = [json.loads(o[o.index("{"):]) for rc, o, _ in runs if rc == 0]
    refusals = [e for rc, _, e in runs if rc == 2]
    assert done and all(f"{out} is in use by another ssm-spark produce: pid" in e and f"lock {out}/_LOCK.json" in e
                        for e in refusals)
    assert sum(d["produced"] for d in done) == 1 and all(d["failed_files"] == [] for d in done)
    assert all(d["skipped"] == 1 for d in done if d["produced"] == 0)  # the store's marker, inputs the store's objects
    got, ref = _objects(out), _files(root / "local")
    assert "_LOCK.json" not in got
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


@pytest.mark.spark
@pytest.mark.slow
def test_matchups_registry_report_on_s3(spark, s3, small, tmp_path, monkeypatch, capsys):
    """``matchups``, ``train`` and ``validate`` write to s3:// (published), ``train`` reads its matchups and
    ``produce`` its registry from there: the same tables and models as the local run's."""
    import pandas as pd

    from ssm_spark.cli import main
    from ssm_spark.product.produce import produce

    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    cfg, root = small
    sets = sum((["--set", o] for o in SMALL), [])
    base = f"s3://{BUCKET}/work"
    assert main(["matchups", *sets, "--stacks", str(root / "sim" / "stacks"), "--insitu", str(root / "sim" / "insitu"),
                 "--output", f"{base}/matchups.parquet"]) == 0
    assert f'"output": "{base}/matchups.parquet"' in capsys.readouterr().out
    got = pd.read_parquet(storage.local_copy(f"{base}/matchups.parquet"))
    ref = pd.read_parquet(root / "matchups.parquet")
    key = ["station_id", "date"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True), ref.sort_values(key).reset_index(drop=True))
    assert main(["train", *sets, "--matchups", f"{base}/matchups.parquet", "--output", f"{base}/models"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["registry"] == f"{base}/models" and summary["report"] == f"{base}/models/report.html"
    reg = _objects(f"{base}/models")
    local = _files(root / "models")
    assert sorted(reg) == sorted([*local, "_PUBLISHED.json"])
    for k in local:  # the models and metrics as trained locally (the manifest's time and the report's differ)
        if k.startswith("models/") or k == "cv_metrics.json":
            assert reg[k] == local[k], k
    out = tmp_path / "from-s3-registry"
    res = produce(spark, cfg, f"{base}/models", root / "sim" / "stacks", None, D1, D1, out)
    assert res["produced"] == 1
    info = json.loads((out / "product.json").read_text())
    assert info["registry"] == f"{base}/models"
    names = sorted(p.relative_to(out).as_posix() for p in (out / "parquet" / f"date={D1}").glob("*.parquet"))
    assert names
    # the same rows but for the manifest id in model_id: it covers the git revision, which another
    # engineer's commit between the two trainings changes (the models' bytes above are the same)
    mids = [json.loads(m)["manifest_id"] for m in (reg["manifest.json"], local["manifest.json"])]
    assert info["manifest_id"] == mids[0]
    for n in names:
        assert _decoded((out / n).read_bytes(), n).replace(mids[0], "M") == \
            _decoded((root / "local" / n).read_bytes(), n).replace(mids[1], "M"), n
    # point queries take the published registry too (a cached copy); stacks and products by URL:
    # tests/test_point_store.py
    from ssm_spark.point import PointService

    grid = cfg.grid.build()
    row = pd.read_parquet(root / "local" / "parquet" / f"date={D1}").dropna(subset=["ssm"]).iloc[4]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    ans = PointService(cfg, f"{base}/models", root / "sim" / "stacks",
                       climatology=root / "local" / "climatology").point(lat, lon, D1)
    assert ans["ssm"] == pytest.approx(float(row["ssm"]), abs=1e-6) and ans["model_id"].startswith(mids[0])
    assert main(["validate", *sets, "--product", str(root / "local" / "parquet"), "--insitu",
                 str(root / "sim" / "insitu"), "--output", f"{base}/validation"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == f"{base}/validation"
    val = _objects(f"{base}/validation")
    assert sorted(val) == ["_PUBLISHED.json", "metrics.json", "pairs.parquet", "report.html"]
    assert json.loads(val["metrics.json"])["pairs"] > 0
    assert all(s3.secret_key.encode() not in b for b in [*reg.values(), *val.values()])


# ------------------------------------------------------------- the demo, simulate, features, validate by URL

#: The demo on a small region (2 x 2 tiles of 32 cells, 5 dates, 16 stations; test_demo.py's with fewer dates)
DEMO = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=16", "simulate.end=2024-04-25",
        "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
        "demo.holdout_stations=0.25", "produce.quicklook_max_px=128", "physics.change_detection.min_dates=4"]


def _fake_product(root: Path, dates: dict[str, bool]) -> None:
    """A product-shaped Parquet dataset: two tile files per date (``g_0_0``, ``g_0_1``), a marker listing them
    for the dates mapped to True."""
    import pandas as pd

    for i, (d, committed) in enumerate(sorted(dates.items())):
        part = root / "parquet" / f"date={d}"
        part.mkdir(parents=True)
        outputs = {}
        for tc in (0, 1):
            df = pd.DataFrame({"row": [1, 2], "col": [tc * 10, tc * 10 + 1], "ssm": [0.1 * i, 0.2 + tc]})
            df.to_parquet(part / f"g_0_{tc}.parquet", index=False)
            outputs[f"parquet/date={d}/g_0_{tc}.parquet"] = (part / f"g_0_{tc}.parquet").stat().st_size
        if committed:
            (part / "_SUCCESS.json").write_text(json.dumps({"status": "complete", "outputs": outputs}))


def _upload(local: Path, url: str) -> None:
    fs = storage.filesystem(url)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{storage.fs_path(url)}/{p.relative_to(local).as_posix()}")


def test_committed_dates_only_checked_and_cached(s3, tmp_path, monkeypatch, caplog):
    """A product on the store read for validation: only the dates with a marker, only the tiles asked for, every
    file checked against its marker, one copy per set of markers (cached), a date republished meanwhile refused."""
    from ssm_spark.validation.remote import committed_product, product_parquet

    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    url = f"s3://{BUCKET}/fake/product"
    _fake_product(tmp_path / "p", {"2024-04-01": True, "2024-04-07": True, "2024-04-13": False})
    _upload(tmp_path / "p", url)
    caplog.set_level(logging.INFO)
    got = committed_product(url)
    files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert files == [f"parquet/date={d}/{n}" for d in ("2024-04-01", "2024-04-07")
                     for n in ("_SUCCESS.json", "g_0_0.parquet", "g_0_1.parquet")]  # 04-13: no marker, not read
    assert (got / "parquet/date=2024-04-07/g_0_1.parquet").read_bytes() == \
        (tmp_path / "p/parquet/date=2024-04-07/g_0_1.parquet").read_bytes()
    assert "1 date(s) without a marker left out" in caplog.text
    assert committed_product(url) == got and product_parquet(f"{url}/parquet") == got / "parquet"  # cached
    one = committed_product(url, tiles={(0, 1)}, grid_name="g")  # only the tiles asked for
    assert one != got and sorted(p.name for p in one.rglob("*.parquet")) == ["g_0_1.parquet"] * 2
    part = tmp_path / "p/parquet/date=2024-04-13"
    storage.write_bytes(f"{url}/parquet/date=2024-04-13/_SUCCESS.json", json.dumps({"status": "complete", "outputs": {
        f"parquet/date=2024-04-13/{q.name}": q.stat().st_size for q in part.glob("*.parquet")}}).encode())
    new = committed_product(url)  # a date committed since: a new copy with it
    assert new != got and (new / "parquet/date=2024-04-13/g_0_0.parquet").is_file()
    storage.write_bytes(f"{url}/parquet/date=2024-04-01/g_0_0.parquet", b"a run publishing this date again")
    with pytest.raises(InputIOError, match=rf"{url}/parquet/date=2024-04-01/g_0_0.parquet: 32 bytes, its date's "
                                           r"_SUCCESS.json says \d+: the date is being published again"):
        committed_product(url, tmp_path / "copy")
    none = f"s3://{BUCKET}/fake/unmarked"
    _fake_product(tmp_path / "u", {"2024-04-01": False})
    _upload(tmp_path / "u", none)
    with pytest.raises(InputError, match=f"{none}/parquet: no committed date"):
        product_parquet(none)
    with pytest.raises(InputError, match=f"s3://{BUCKET}/fake/nothing: not a product on the store"):
        committed_product(f"s3://{BUCKET}/fake/nothing")
    storage.publish(tmp_path / "u" / "parquet" / "date=2024-04-01", f"s3://{BUCKET}/fake/estimates", "estimates")
    pub = product_parquet(f"s3://{BUCKET}/fake/estimates")  # no date partition: a published output's copy
    assert sorted(p.name for p in pub.iterdir()) == ["g_0_0.parquet", "g_0_1.parquet"]


def test_simulate_to_s3_and_a_demo_into_a_url_in_use(s3, tmp_path, monkeypatch, capsys):
    """``simulate --output s3://`` publishes the files a local run writes (byte for byte: the simulator is
    deterministic); a demo into a URL another run holds is refused before any work, naming the holder. (Stacks and
    in-situ files by URL: tests/test_object_storage_inputs.py.)"""
    from ssm_spark.cli import main
    from ssm_spark.config import load_config
    from ssm_spark.demo import run_demo
    from ssm_spark.sources.simulate import simulate

    monkeypatch.setenv("SSM_STAGING_DIR", str(tmp_path / "stage"))
    url = f"s3://{BUCKET}/simulated"
    assert main(["simulate", *sum((["--set", o] for o in DEMO), []), "--output", url]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == url
    simulate(load_config(overrides=DEMO), tmp_path / "sim")
    got = _objects(url)
    assert sorted(json.loads(got.pop("_PUBLISHED.json"))["files"]) == sorted(got)
    assert got == _files(tmp_path / "sim")
    assert list((tmp_path / "stage").iterdir()) == []  # the staging folder removed
    busy = f"s3://{BUCKET}/busy-demo"
    with storage.RemoteLock(busy, "ssm-spark demo"):
        with pytest.raises(InputError, match=rf"{busy} is in use by another ssm-spark demo: pid {os.getpid()}"):
            run_demo(load_config(overrides=DEMO), busy)
    assert _objects(busy) == {} and list((tmp_path / "stage").iterdir()) == []


@pytest.mark.spark
@pytest.mark.slow
def test_validate_and_features_by_url(spark, s3, small, tmp_path, monkeypatch, capsys):
    """``validate --product s3://.../parquet`` gives the local product's metrics, reading only committed dates
    (a partition without its marker is left out); ``features --output s3://`` publishes the local rows."""
    import pandas as pd

    from ssm_spark.cli import main
    from ssm_spark.pipeline import features_run

    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    cfg, root = small
    sets = sum((["--set", o] for o in SMALL), [])
    url = f"s3://{BUCKET}/validated/product"
    _upload(root / "local", url)
    stray = next((root / "local" / "parquet" / f"date={D1}").glob("*.parquet"))  # a date being published
    storage.filesystem(url).put_file(str(stray), f"{storage.fs_path(url)}/parquet/date=2024-04-13/{stray.name}")
    out = {}
    for name, product in (("s3", f"{url}/parquet"), ("local", str(root / "local" / "parquet"))):
        assert main(["validate", *sets, "--product", product, "--insitu", str(root / "sim" / "insitu"),
                     "--output", str(tmp_path / name)]) == 0
        capsys.readouterr()
        out[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert out["s3"]["overall"] == out["local"]["overall"] and out["s3"]["pairs"] == out["local"]["pairs"] > 0
    assert out["s3"]["product"] == f"{url}/parquet"
    pairs = {n: pd.read_parquet(tmp_path / n / "pairs.parquet") for n in out}
    pd.testing.assert_frame_equal(pairs["s3"], pairs["local"])
    assert sorted(pairs["s3"]["date"].astype(str).unique()) == [D1, D2]  # 2024-04-13 has no marker: not read
    # features: published whole (its marker last), the rows of a local run
    furl = f"s3://{BUCKET}/features"
    assert main(["features", *sets, "--stacks", str(root / "sim" / "stacks"), "--output", furl]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == furl and summary["pixels"] > 0
    features_run(spark, cfg, root / "sim" / "stacks", tmp_path / "features")
    key = ["date", "row", "col"]
    got, ref = (pd.read_parquet(p).sort_values(key).reset_index(drop=True)
                for p in (storage.local_copy(furl, "feature table"), tmp_path / "features"))
    pd.testing.assert_frame_equal(got, ref)
    objs = _objects(furl)
    assert sorted(json.loads(objs.pop("_PUBLISHED.json"))["files"]) == sorted(objs)
    assert {k for k in objs if not k.startswith("date=")} <= {"_SUCCESS"}  # the dataset by date, as locally


def _demo_cmd(url: str) -> list[str]:
    return [sys.executable, "-m", "ssm_spark", "demo", *sum((["--set", o] for o in DEMO), []), "--output", url]


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.long  # 7-10 minutes here (four demos): not in `make test`, run by `make test-long`
def test_demo_on_s3_killed_resumed_and_run_again(spark, s3, tmp_path, monkeypatch):
    """``ssm-spark demo --output s3://`` (a job of its own: its executors get the store's settings): killed in
    ``produce`` after two dates, run again it resumes (those dates skipped, the killed run's locks taken over) to
    the local demo's product (Parquet rows, COG pixels) and validation; a third run skips every date and leaves
    the product's and the simulation's objects as they were."""
    import signal
    import time

    from ssm_spark.config import load_config
    from ssm_spark.demo import run_demo
    from ssm_spark.models import manifest

    # the manifest id covers the git revision, which another engineer's commit during the test would change:
    # no revision here, none in the jobs (GIT_DIR names no repository)
    monkeypatch.setattr(manifest, "_git_revision", lambda: (None, None))
    cfg = load_config(overrides=DEMO)
    local = tmp_path / "local"
    ref_summary = run_demo(cfg, local)
    dates = sorted(p.name for p in (local / "sim" / "stacks").iterdir() if p.is_dir())
    assert len(dates) == 5 and ref_summary["produce"]["produced"] == 5
    url = f"s3://{BUCKET}/demo"
    env = {**os.environ, **s3.env(), "SSM_STAGING_DIR": str(tmp_path / "stage"),
           "SSM_CACHE_DIR": str(tmp_path / "cache"), "GIT_DIR": str(tmp_path / "no-git")}

    def run(name: str) -> dict:
        with open(tmp_path / f"{name}.log", "w") as err:
            r = subprocess.run(_demo_cmd(url), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                               timeout=900)
        log_text = (tmp_path / f"{name}.log").read_text()
        assert r.returncode == 0, log_text[-4000:]
        assert s3.secret_key not in r.stdout + log_text
        return json.loads(r.stdout[r.stdout.index("{"):])

    # 1. killed (SIGKILL, its process group: the JVM too) once the second date's marker is on the store
    second = f"{url}/product/parquet/date={dates[1]}/_SUCCESS.json"
    with open(tmp_path / "killed.log", "w") as err:
        proc = subprocess.Popen(_demo_cmd(url), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            t0 = time.monotonic()
            while not storage.exists(second):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
                assert time.monotonic() - t0 < 900
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    half = _objects(url)
    assert f"product/parquet/date={dates[0]}/_SUCCESS.json" in half
    assert f"product/parquet/date={dates[-1]}/_SUCCESS.json" not in half and "demo_summary.json" not in half
    assert "_LOCK.json" in half and "product/_LOCK.json" in half  # left by the killed run
    for part in ("sim", "features", "matchups.parquet", "models"):  # published before produce started
        assert f"{part}/_PUBLISHED.json" in half, part
    # 2. resumed: the dates committed before the kill are skipped, the rest produced; the locks taken over
    again = run("resumed")
    prod = again["produce"]
    assert prod["output"] == f"{url}/product" and prod["skipped"] >= 2 and prod["produced"] >= 1
    assert prod["skipped"] + prod["produced"] == len(dates) and not prod["failed_files"]
    text = (tmp_path / "resumed.log").read_text()
    assert f"{url}/_LOCK.json: taking over the lock" in text and f"{url}/product/_LOCK.json: taking over" in text
    got, ref = _objects(f"{url}/product"), _files(local / "product")
    data = sorted(k for k in ref if k.startswith(("parquet/", "cog/")) and not k.endswith(".json"))
    assert len(data) == 2 * 4 * len(dates)  # 4 tiles a date: a Parquet file and a COG each
    assert sorted(k for k in got if k.startswith(("parquet/", "cog/")) and not k.endswith(".json")) == data
    for k in data:  # the local demo's rows and pixels (the tags differ: the stacks' times are the objects')
        assert _decoded(got[k], k) == _decoded(ref[k], k), k
    markers = sorted(k for k in ref if k.endswith("_SUCCESS.json"))
    assert sorted(k for k in got if k.endswith("_SUCCESS.json")) == markers and len(markers) == len(dates)
    assert sorted(k for k in got if not k.startswith("climatology/")) == sorted(k for k in ref
                                                                                if not k.startswith("climatology/"))
    for name in ("held_out", "training"):  # validated from the store's product: the local metrics
        m = json.loads(storage.read_bytes(f"{url}/validation/{name}/metrics.json"))
        m_ref = json.loads((local / "validation" / name / "metrics.json").read_text())
        assert m["overall"] == m_ref["overall"] and m["pairs"] == m_ref["pairs"] > 0, name
        assert m["product"] == f"{url}/product/parquet"
    truth = json.loads(storage.read_bytes(f"{url}/validation/truth.json"))
    assert truth["pooled"] == json.loads((local / "validation" / "truth.json").read_text())["pooled"]
    assert again["validation"]["held_out"]["pooled"] == ref_summary["validation"]["held_out"]["pooled"]
    summary = storage.read_bytes(f"{url}/demo_summary.json").decode()
    assert json.loads(summary)["produce"] == prod and "ssm-demo-" not in summary and f"{url}/models" in summary
    layout = _objects(url)
    assert "_LOCK.json" not in layout and "product/_LOCK.json" not in layout
    assert {k.split("/", 1)[0] for k in layout} == {"sim", "features", "matchups.parquet", "models", "product",
                                                    "validation", "demo_summary.json"}
    for part in ("sim", "features", "matchups.parquet", "models", "validation"):
        marker = json.loads(layout[f"{part}/_PUBLISHED.json"])["files"]
        assert sorted(marker) == sorted(k[len(part) + 1:] for k in layout
                                        if k.startswith(part + "/") and k != f"{part}/_PUBLISHED.json"), part
    assert sorted(k[4:] for k in layout if k.startswith("sim/") and k != "sim/_PUBLISHED.json") == \
        sorted(_files(local / "sim"))
    # 3. run again: every date skipped, the product and the simulation not rewritten
    before = {k: v for k, v in layout.items() if k.startswith(("product/", "sim/"))}
    stamps = {k: storage.stat(f"{url}/{k}")[1] for k in before if k.endswith(("_SUCCESS.json", "_PUBLISHED.json"))}
    third = run("again")
    assert third["produce"]["skipped"] == len(dates) and third["produce"]["produced"] == 0
    after = _objects(url)
    assert {k: v for k, v in after.items() if k.startswith(("product/", "sim/"))} == before
    assert {k: storage.stat(f"{url}/{k}")[1] for k in stamps} == stamps  # markers not rewritten either
    assert third["validation"]["held_out"]["pooled"] == again["validation"]["held_out"]["pooled"]
    # the finished runs removed their staging folders; the killed one's is left
    assert len(list((tmp_path / "stage").glob("ssm-demo-*"))) == 1
