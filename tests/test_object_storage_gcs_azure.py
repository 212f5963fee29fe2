"""``gs://`` and ``abfss://`` end to end, by the code ``s3://`` uses, against real emulators started here on
loopback: fake-gcs-server (GCS's JSON API for gcsfs, its object reads for GDAL's ``/vsigs/``) and Azurite
(Azure's Blob API, for adlfs and GDAL's ``/vsiaz/``; it serves no ADLS Gen2 DFS endpoint, so ``/vsiadls/``
and DFS-only calls are not covered here).

Per store: the primitives (write, read, exists, stat, listing through the GDAL path, delete, a server-side
copy), a folder published marker last and read back whole (a mismatching object refused), the lock
(create-only write: one holder among racing runs, the rest refused naming it; stale and broken locks
taken over, the old holder finding out; write-then-verify), ``produce --output`` a URL giving the local
product's objects byte for byte and a second run skipping every date and rewriting nothing, and point
queries reading stacks by URL through GDAL equal to the local stacks. Long (``make test-long``): the
``produce`` job in a process of its own, its Spark executors reading the stacks by URL. The emulators are built by
``scripts/setup.sh --test``; the tests skip, saying so, only when one is absent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from ssm_spark import storage
from ssm_spark.errors import InputError, InputIOError

import azurite
import emulator
import gcsserver

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "ssm-gcs-test"
CONTAINER = "ssm-az-test"
D1, D2 = "2024-04-01", "2024-04-07"
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.end=2024-04-13", "train.xgb.n_estimators=10",
         "train.k_folds=2", "train.candidates=[physics,xgb_raw,global]", "train.group_models=false"]


# --------------------------------------------------------------------------------- no server

def test_urls_gdal_paths_and_settings(monkeypatch):
    """gs:// -> /vsigs/; abfss:// -> /vsiadls/ (DFS), or /vsiaz/ (Blob API) when the connection string names a
    BlobEndpoint; a GCS emulator's GDAL settings follow STORAGE_EMULATOR_HOST; no credential ever in them."""
    for k in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT",
              "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "STORAGE_EMULATOR_HOST", "CPL_GS_ENDPOINT",
              "GS_NO_SIGN_REQUEST", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(storage.settings, "_applied_gdal", {})
    url = "abfss://cont@acct.dfs.core.windows.net/k/x.tif"
    assert storage.gdal_path("gs://b/k/x.tif") == "/vsigs/b/k/x.tif" and storage.url_of("/vsigs/b/k") == "gs://b/k"
    assert storage.gdal_path(url) == "/vsiadls/cont/k/x.tif" and storage.gdal_path("az://cont/k") == "/vsiaz/cont/k"
    cs = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=c2VjcmV0a2V5;BlobEndpoint=http://127.0.0.1:1/acct;"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", cs)
    assert storage.gdal_path(url) == "/vsiaz/cont/k/x.tif" and storage.url_of("/vsiaz/cont/k/x.tif") == "az://cont/k/x.tif"
    assert "c2VjcmV0a2V5" not in json.dumps(storage.gdal_env())  # GDAL reads the connection string itself
    with pytest.raises(InputError, match=r"names the storage account 'other', but AZURE_STORAGE_CONNECTION_STRING "
                                         r"is the account 'acct'"):
        storage.filesystem("abfss://cont@other.dfs.core.windows.net/k")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(InputError, match="az://cont/k: no Azure storage account"):
        storage.filesystem("az://cont/k")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0a2V5")
    assert storage.filesystem("az://cont/k").account_name == "acct"
    assert storage.filesystem(url).account_name == "acct"
    with pytest.raises(InputError, match=r"names the storage account 'other', but AZURE_STORAGE_ACCOUNT_NAME / "
                                         r"AZURE_STORAGE_ACCOUNT is 'acct'"):
        storage.filesystem("abfss://cont@other.dfs.core.windows.net/k")
    assert storage.gdal_env() == {"AZURE_STORAGE_ACCOUNT": "acct"}  # GDAL's name for it; the key is not copied
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    assert storage.apply_gdal_env() == {"CPL_GS_ENDPOINT": "http://127.0.0.1:4443/", "GS_NO_SIGN_REQUEST": "YES"}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:5555")  # another emulator: followed
    assert storage.apply_gdal_env()["CPL_GS_ENDPOINT"] == "http://127.0.0.1:5555/"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")  # GCS itself: the settings this module made removed
    assert storage.apply_gdal_env() == {} and "CPL_GS_ENDPOINT" not in os.environ
    assert "GS_NO_SIGN_REQUEST" not in os.environ


def test_filesystems_pickle_into_a_fresh_process(monkeypatch):
    """The gs / abfss filesystems storage hands out (its own subclasses) unpickle in a process that has not made
    one yet, as a Spark task's closure does on an executor."""
    import pickle
    import subprocess
    import sys

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=acct;AccountKey=c2VjcmV0a2V5;"
                                                          "BlobEndpoint=http://127.0.0.1:1/acct;")
    code = ("import pickle, sys; fs = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(fs).__module__, type(fs).__name__, fs.find.__code__.co_varnames[:5])")
    for url, name in (("gs://b/k", "_GCSFileSystem"), ("abfss://cont@acct.dfs.core.windows.net/k", "_AzureBlobFileSystem")):
        r = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(storage.filesystem(url)),
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert r.stdout.decode().split(None, 2)[:2] == ["ssm_spark.storage", name]
        assert "'maxdepth', 'withdirs', 'detail'" in r.stdout.decode()  # fsspec's order


# --------------------------------------------------------------------------------- the emulators

@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    if not gcsserver.available():
        pytest.skip(f"{gcsserver.BINARY}: fake-gcs-server not built (bash scripts/setup.sh --test builds it)")
    with gcsserver.serving(tmp_path_factory.mktemp("fake-gcs"), BUCKET) as srv:
        yield srv


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    if not azurite.available():
        pytest.skip(f"{azurite.BINARY}: Azurite not installed (bash scripts/setup.sh --test installs it)")
    with azurite.serving(tmp_path_factory.mktemp("azurite"), CONTAINER) as srv:
        yield srv


@pytest.fixture(params=["gs", "abfss"])
def store(request) -> str:
    """The root URL of a bucket / container on a running emulator."""
    if request.param == "gs":
        request.getfixturevalue("gcs")
        return f"gs://{BUCKET}"
    srv = request.getfixturevalue("azure")
    return f"abfss://{CONTAINER}@{srv.account}.dfs.core.windows.net"


def _objects(url: str) -> dict[str, bytes]:
    fs = storage.filesystem(url)
    root = storage.fs_path(url)
    return {k[len(root) + 1:]: fs.cat_file(k) for k in sorted(fs.find(root))}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_primitives_publish_and_copy(store, tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    base = f"{store}/prim"
    vsi = "/vsigs/" if store.startswith("gs") else "/vsiaz/"
    assert storage.gdal_path(f"{base}/x.bin").startswith(vsi)
    t0 = time.time()
    storage.write_bytes(f"{base}/x.bin", b"abc")
    storage.write_bytes(f"{base}/sub/y.bin", b"defg")
    assert storage.read_bytes(f"{base}/x.bin") == b"abc" and storage.read_bytes(f"{base}/none.bin") is None
    assert storage.exists(f"{base}/x.bin") and not storage.exists(f"{base}/none.bin")
    size, ns = storage.stat(storage.gdal_path(f"{base}/x.bin"))  # by its GDAL path, as the stack reader asks
    assert size == 3 and abs(ns / 1e9 - t0) < 30  # the object's own time, not 0
    got = storage.listdir(base)
    assert [(p.name, d) for p, d in got] == [("sub", True), ("x.bin", False)]
    assert str(got[1][0]) == storage.gdal_path(f"{base}/x.bin") and storage.listdir(f"{base}/nothing") == []
    fs = storage.filesystem(base)
    found = fs.find(storage.fs_path(base), None, False, True)  # fsspec's positional order: maxdepth, withdirs, detail
    assert {k: v["size"] for k, v in found.items()} == {storage.fs_path(f"{base}/x.bin"): 3,
                                                        storage.fs_path(f"{base}/sub/y.bin"): 4}
    # a server-side copy (GCS's rewrite, Azure's Copy Blob, its status waited for), as the product's commit may use
    fs.copy(storage.fs_path(f"{base}/sub/y.bin"), storage.fs_path(f"{base}/copied/y.bin"))  # fsspec's own
    assert storage.read_bytes(f"{base}/copied/y.bin") == b"defg"
    storage.copy(storage.gdal_path(f"{base}/sub/y.bin"), f"{base}/copied/z.bin")
    assert storage.read_bytes(f"{base}/copied/z.bin") == b"defg"
    if store.startswith("abfss"):  # the status storage.copy read back: Azure's own record of the copy
        from fsspec.asyn import sync

        container, _, blob = storage.fs_path(f"{base}/copied/z.bin").partition("/")

        async def props():
            async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
                return await bc.get_blob_properties()

        assert sync(fs.loop, props).copy.status == "success"
    with pytest.raises(InputIOError, match=rf"{base}/none.bin: no such object to copy to {base}/copied/n.bin"):
        storage.copy(f"{base}/none.bin", f"{base}/copied/n.bin")
    with pytest.raises(InputError, match="a server-side copy stays within one store"):
        storage.copy(f"{base}/sub/y.bin", "s3://elsewhere/y.bin")
    storage.delete(f"{base}/x.bin")
    storage.delete(f"{base}/x.bin")  # not there: no error
    assert storage.read_bytes(f"{base}/x.bin") is None
    # a published folder: marker last, read back whole and cached, leftovers removed, a foreign object refused
    src = tmp_path / "v1"
    (src / "models").mkdir(parents=True)
    (src / "manifest.json").write_text('{"id": 1}')
    (src / "models" / "a.json").write_text("a1")
    (src / "models" / "old.json").write_text("old")
    url = f"{base}/registry"
    with pytest.raises(InputError, match=f"{url}: no published model registry there"):
        storage.local_copy(url, "model registry")
    m1 = storage.publish(src, url, "model registry")
    assert sorted(_objects(url)) == ["_PUBLISHED.json", "manifest.json", "models/a.json", "models/old.json"]
    c1 = storage.local_copy(url)
    assert (c1 / "models" / "a.json").read_text() == "a1" and storage.local_copy(url) == c1
    before = _objects(url)
    assert storage.publish(src, url, "model registry") == m1 and _objects(url) == before  # unchanged: not rewritten
    (src / "models" / "old.json").unlink()
    (src / "models" / "a.json").write_text("a2")
    storage.publish(src, url, "model registry")
    assert sorted(_objects(url)) == ["_PUBLISHED.json", "manifest.json", "models/a.json"]
    c2 = storage.local_copy(url)
    assert c2 != c1 and (c2 / "models" / "a.json").read_text() == "a2"
    storage.write_bytes(f"{url}/models/a.json", b"a3, mid-publication")
    with pytest.raises(InputIOError, match=rf"{url}/models/a.json: not the file {url}/_PUBLISHED.json lists"):
        storage.download(url, tmp_path / "dl")


def test_errors_name_the_url_and_the_cause(store, monkeypatch):
    """A missing bucket / container (and, on Azure, a wrong key) is an error naming the URL and what to check;
    the key is not in it."""
    if store.startswith("gs"):
        with pytest.raises(InputIOError, match=r"gs://no-such-bucket/x: cannot write it .*credentials "
                                               r"\(GOOGLE_APPLICATION_CREDENTIALS.*endpoint \(http://127"):
            storage.write_bytes("gs://no-such-bucket/x", b"1")
        return
    bad = f"{store.replace(CONTAINER, 'no-such-container')}/x"
    with pytest.raises(InputIOError, match=r"no-such-container.*/x: cannot write it .*AZURE_STORAGE_CONNECTION"):
        storage.write_bytes(bad, b"1")
    good = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    key = good.split("AccountKey=", 1)[1].split(";", 1)[0]
    wrong = "A" * 8 + key[8:]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", good.replace(key, wrong))
    with pytest.raises(InputIOError, match=rf"{store}/y: cannot write it .*credentials") as exc:
        storage.write_bytes(f"{store}/y", b"1")
    assert key not in str(exc.value) and wrong not in str(exc.value)


_race = emulator.race_lock


def test_lock(store, monkeypatch, caplog):
    """The store honours a create-only write (probed), so one run among racing ones holds the lock; a second run is
    refused naming it; a stale lock is taken over, a broken one too, and the old holder finds out."""
    import socket

    monkeypatch.setattr(storage.lock, "VERIFY_WAIT_S", 30.0)  # write-then-verify's wait: a conditional acquire has none
    url = f"{store}/locked"
    lock_url = f"{url}/_LOCK.json"
    a = storage.RemoteLock(url, "produce A")
    assert a.probe() is True  # the store refuses a create-only write over an object
    assert _objects(url) == {}  # the probe object removed
    t0 = time.monotonic()
    with a:
        assert time.monotonic() - t0 < 15  # taken by the create-only write, not by write-then-verify
        held = json.loads(storage.read_bytes(lock_url))
        assert held["token"] == a.token and held["host"] == socket.gethostname() and a.conditional
        with pytest.raises(InputError, match=rf"{url} is in use by another produce A: pid {os.getpid()} on "
                                             rf"{socket.gethostname()}.*lock {lock_url}, refreshed \d+ s ago"):
            storage.RemoteLock(url, "produce B").acquire()
        a.refresh()
        a.check()
    assert storage.read_bytes(lock_url) is None  # released
    got = _race(url, 4, conditional=True)
    assert len(got) == 1 and json.loads(storage.read_bytes(lock_url))["token"] == got[0].token
    b = storage.RemoteLock(url, "produce B", break_lock=True).acquire()
    with pytest.raises(InputError, match=rf"{lock_url}: this run no longer holds the product's lock \(taken over "
                                         r"by produce B"):
        got[0].check()
    got[0].release()  # does not remove b's lock
    assert json.loads(storage.read_bytes(lock_url))["token"] == b.token
    b._stop.set()
    b._thread.join()  # b is "killed": its lock stays, not refreshed
    storage.write_bytes(lock_url, json.dumps({"pid": 1, "host": "elsewhere", "job": "far run", "token": "y"}).encode())
    with pytest.raises(InputError, match="in use by another far run: pid 1 on elsewhere"):
        storage.RemoteLock(url).acquire()
    time.sleep(1.3)
    caplog.set_level(logging.WARNING)
    with storage.RemoteLock(url, stale_after=1.0) as c:
        assert json.loads(storage.read_bytes(lock_url))["token"] == c.token
    assert "not refreshed for" in caplog.text and storage.read_bytes(lock_url) is None
    monkeypatch.setattr(storage.lock, "VERIFY_WAIT_S", 0.5)
    v = storage.RemoteLock(url, "verify A", conditional=False).acquire()  # write-then-verify
    with pytest.raises(InputError, match="in use by another verify A"):
        storage.RemoteLock(url, "verify B", conditional=False).acquire()
    v.release()
    assert storage.read_bytes(lock_url) is None


# --------------------------------------------------------------------------------- produce and point

def _synthetic_matchups(n_stations: int = 10, n_dates: int = 8, seed: int = 1) -> pd.DataFrame:
    """A matchup table of made-up stations (random backscatter and soil moisture): a registry to produce with,
    trained in a few seconds without Spark (what is tested is the store, not the model)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = n_stations * n_dates
    return pd.DataFrame({
        "station_id": np.repeat([f"SYN.S{i:02d}" for i in range(n_stations)], n_dates), "network": "SYN",
        "date": np.tile(pd.date_range("2024-04-01", periods=n_dates, freq="6D").date, n_stations),
        "vv_db": rng.normal(-11, 2, n), "vh_db": rng.normal(-18, 2, n), "incidence_deg": rng.uniform(30, 46, n),
        "ndvi": rng.uniform(0.05, 0.5, n), "lst_k": rng.uniform(280, 305, n), "precip_mm": rng.gamma(0.8, 10.0, n),
        "clay_pct": 20.0, "sand_pct": 40.0, "bulk_density": 1.35, "elevation_m": 100.0, "slope_deg": 1.0, "qc": 0,
        "ssm": rng.uniform(0.05, 0.45, n), "env": "global"})


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory):
    """A small simulated region (2 x 2 tiles of 32 cells, 3 dates), a registry, and the region's local product."""
    from ssm_spark.config import load_config
    from ssm_spark.models import registry, selection
    from ssm_spark.product.produce import produce
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("gcs-azure")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    registry.save_registry(root / "models", selection.train_models(_synthetic_matchups(), cfg), cfg)
    assert produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, root / "local")["produced"] == 2
    return cfg, root


@pytest.mark.spark
def test_produce_to_the_store_same_bytes_and_a_rerun_skips(spark, store, small):
    from ssm_spark.product.produce import produce

    cfg, root = small
    url = f"{store}/product"
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, url)
    first = produce(*args)
    assert first["produced"] == 2 and first["output"] == url and not first["failed_files"]
    ref = _files(root / "local")
    got = _objects(url)
    assert "_LOCK.json" not in got and f"parquet/date={D2}/_SUCCESS.json" in got
    assert sorted(got) == sorted(ref)
    assert got == ref  # every object the local product's bytes (data, markers, STAC, product.json)
    before = _objects(url)
    again = produce(*args)  # a fresh working folder: resume keyed on the store's markers
    assert again["skipped"] == 2 and again["produced"] == 0 and _objects(url) == before


def test_point_reads_stacks_by_url_through_gdal(store, small):
    """A point on stacks uploaded to the store (GDAL's /vsigs/ or /vsiaz/) equals the same point on the local
    stacks, value for value, and a series too."""
    import numpy as np

    from ssm_spark.point import StackSource

    cfg, root = small
    base = f"{store}/sim"
    fs = storage.filesystem(base)
    if not storage.exists(f"{base}/stacks"):
        for sub in ("stacks", "static"):
            fs.put(str(root / "sim" / sub), f"{storage.fs_path(base)}/{sub}", recursive=True)
    grid = cfg.grid.build()
    local = StackSource(root / "sim" / "stacks", grid)
    url = StackSource(f"{base}/stacks", grid, listing_ttl=600)
    assert url.static == storage.gdal_path(f"{base}/static")  # static/ beside the stacks, found on the store
    assert url.static.startswith("/vsigs/" if store.startswith("gs") else "/vsiaz/")
    assert url.dates() == local.dates() and len(url.dates()) >= 3
    rng = np.random.default_rng(4)
    local.check_all()
    cells = [(f.row_off + int(rng.integers(0, f.height)), f.col_off + int(rng.integers(0, f.width)))
             for f in local._inv[D2]]
    for r, c in cells:
        a, wa = local.pixel(r, c, D2)
        b, wb = url.pixel(r, c, D2)
        pd.testing.assert_frame_equal(a, b, rtol=0, atol=1e-7)
        assert wb == storage.url_of(storage.gdal_path(f"{base}/stacks/{D2}/{Path(wa).name}")), wb
    r, c = cells[0]
    pa, ia = local.pixels(r, c, local.dates())
    pb, ib = url.pixels(r, c, url.dates())
    pd.testing.assert_frame_equal(pa, pb, rtol=0, atol=1e-7)
    assert [(d, why) for d, _, why in ia] == [(d, why) for d, _, why in ib]


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.long  # 50 s for both stores (a fresh JVM each) at load 3-4: not in `make test`, run by `make test-long`
def test_produce_job_reads_stacks_from_the_store(store, small):
    """``jobs/produce.py --stacks <url> --output <url>`` in a process of its own (its Spark executors read the
    stacks through GDAL's /vsigs/ or /vsiaz/ with the store's settings from the environment): the local
    product's rows and pixels."""
    import io
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from rasterio.io import MemoryFile

    cfg, root = small
    base = f"{store}/job"
    fs = storage.filesystem(base)
    for sub in ("stacks", "static"):
        fs.put(str(root / "sim" / sub), f"{storage.fs_path(base)}/{sub}", recursive=True)
    out = f"{base}/product"
    cmd = [sys.executable, str(ROOT / "jobs" / "produce.py"), *sum((["--set", o] for o in SMALL), []),
           "--models", str(root / "models"), "--stacks", f"{base}/stacks", "--start", D1, "--end", D1,
           "--output", out]
    r = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["produced"] == 1 and summary["failed_files"] == []
    got, ref = _objects(out), _files(root / "local")
    names = sorted(k for k in ref if k.startswith((f"parquet/date={D1}/", f"cog/{D1}/")) and not k.endswith(".json"))
    assert names and sorted(k for k in got if k.startswith((f"parquet/date={D1}/", f"cog/{D1}/"))
                            and not k.endswith(".json")) == names
    for k in names:  # rows and pixels (the files' tags differ: the inputs' times are the objects')
        if k.endswith(".parquet"):
            a, b = (pq.read_table(io.BytesIO(x)).replace_schema_metadata(None).to_pandas() for x in (got[k], ref[k]))
            pd.testing.assert_frame_equal(a, b)
        else:
            with MemoryFile(got[k]) as m1, m1.open() as s1, MemoryFile(ref[k]) as m2, m2.open() as s2:
                assert s1.read().tobytes() == s2.read().tobytes() and s1.transform == s2.transform, k
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    secret = conn.split("AccountKey=", 1)[1].split(";", 1)[0] if "AccountKey=" in conn else None
    assert secret is None or secret not in r.stdout + r.stderr
