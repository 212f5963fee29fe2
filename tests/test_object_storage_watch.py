"""``watch`` on object storage, the STAC catalogue on the store and the read cache's pruning, against a real
S3 server (SeaweedFS, started here on loopback).

A date no longer committed on the store (its marker gone) loses its STAC item there, after the
collection that no longer links it is up, and only changed STAC objects are rewritten; cached
copies of a published output are pruned to the most recently used versions, never one a running
process holds; ``watch`` refuses what it does not support by name. Slow: ``watch --once`` into
``s3://`` gives a local watch's product, a watcher restarted without its state skips the dates
committed on the store, and ``watch --stacks s3://`` lists them through S3A.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssm_spark import cache, stac, storage
from ssm_spark.cli import main
from ssm_spark.product.remote import RemoteOutput

import s3server
from test_object_storage import _decoded, _objects
from test_stac import _commit_date

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "ssm-watch"
D1, D2, D3 = "2024-04-01", "2024-04-07", "2024-04-13"
AGG = "ease2_3km"  # the aggregated grid test_stac's dates carry


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback, its keys in the environment (restored after), a bucket."""
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET, kill=True) as srv:
        yield srv


class _Calls:
    """The store calls a RemoteOutput makes, in order: ("put" | "rm", key relative to the product)."""

    def __init__(self, remote: RemoteOutput) -> None:
        self.log: list[tuple[str, str]] = []
        fs, n = remote.fs, len(remote.root) + 1
        put, rm = fs.put_file, fs.rm_file
        fs.put_file = lambda src, key, *a, **k: (self.log.append(("put", key[n:])), put(src, key, *a, **k))[1]
        fs.rm_file = lambda key, *a, **k: (self.log.append(("rm", key[n:])), rm(key, *a, **k))[1]


def _stac_on_store(url: str) -> dict[str, bytes]:
    return {k: v for k, v in _objects(url).items() if k.startswith("stac/")}


def _linked(coll: bytes) -> list[str]:
    return [lk["href"] for lk in json.loads(coll)["links"] if lk["rel"] == "item"]


def _png(vrt, out, title=None, **kw) -> int:
    """A stand-in quicklook (matplotlib costs 1.3 s a date; an item only names the file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"\x89PNG\r\n\x1a\n" + str(title).encode())
    return out.stat().st_size


def test_stac_on_the_store_holds_exactly_the_committed_dates(s3, tmp_path, caplog, monkeypatch):
    """Published per date (only changed objects rewritten); a date whose marker is gone loses its item on the
    next pull, after the new collection is up; the store's catalogue equals a local product's of those dates."""
    import test_stac

    monkeypatch.setattr(test_stac, "render_quicklook", _png)
    url = f"s3://{BUCKET}/stac-product"
    work = tmp_path / "work"  # a run's local working folder, as produce keeps it
    remote = RemoteOutput(url, work)
    remote.list()
    for i, date in enumerate((D1, D2, D3)):
        _commit_date(work, date, i)
        stac.on_commit(work, date)
        calls = _Calls(remote)
        remote.publish(date, [AGG])
        if date == D3:  # killed after D3's marker, before its collection and product.json
            break
        remote.put_metadata()
        meta = [k for op, k in calls.log if op == "put" and k.endswith(".json")]
        # the date's item before its marker, the collection last; the other dates' items are not rewritten
        assert meta == [f"stac/items/{date}.json", f"parquet/date={date}/_SUCCESS.json", "product.json",
                        "stac/collection.json"], meta
    got = _stac_on_store(url)
    assert sorted(got) == ["stac/collection.json", *(f"stac/items/{d}.json" for d in (D1, D2, D3))]
    assert _linked(got["stac/collection.json"]) == [f"./items/{D1}.json", f"./items/{D2}.json"]

    # D2's marker is gone from the store (a re-run killed after deleting it, or removed by hand)
    storage.filesystem(url).rm_file(storage.fs_path(f"{url}/parquet/date={D2}/_SUCCESS.json"))
    again = RemoteOutput(url, work)  # the same working folder kept: the store decides what it holds
    calls = _Calls(again)
    caplog.set_level("WARNING")
    again.pull()
    assert f"the STAC items of 1 date(s) no longer committed (no marker) are removed: {D2}" in caplog.text
    assert f"product.json lists dates ['{D1}', '{D2}'], the store's markers ['{D1}', '{D3}']; corrected" in caplog.text
    # product.json and the collection (D3 linked, D2 not) first, then D2's item deleted
    assert calls.log == [("put", "product.json"), ("put", "stac/collection.json"), ("rm", f"stac/items/{D2}.json")]
    got = _stac_on_store(url)
    assert sorted(got) == ["stac/collection.json", f"stac/items/{D1}.json", f"stac/items/{D3}.json"]
    assert _linked(got["stac/collection.json"]) == [f"./items/{D1}.json", f"./items/{D3}.json"]
    assert not (work / "stac" / "items" / f"{D2}.json").exists()
    assert not (work / "parquet" / f"date={D2}" / stac.MARKER).exists()
    # the same catalogue and product.json a local product of D1 and D3 has
    ref = tmp_path / "ref"
    for i, date in ((0, D1), (2, D3)):
        _commit_date(ref, date, i)
    stac.update_catalog(ref)
    assert got == {k: (ref / k).read_bytes() for k in got}
    assert json.loads(storage.read_bytes(f"{url}/product.json")) == json.loads((ref / "product.json").read_text())
    # a fresh working folder sees the same, and rewrites nothing
    fresh = RemoteOutput(url, tmp_path / "fresh")
    calls = _Calls(fresh)
    fresh.pull()
    assert calls.log == [] and _stac_on_store(url) == got
    # no committed date left: the collection goes, then its items
    fs = storage.filesystem(url)
    for date in (D1, D3):
        fs.rm_file(storage.fs_path(f"{url}/parquet/date={date}/_SUCCESS.json"))
    last = RemoteOutput(url, tmp_path / "last")
    calls = _Calls(last)
    last.pull()
    assert calls.log == [("put", "product.json"), ("rm", "stac/collection.json"), ("rm", f"stac/items/{D1}.json"),
                         ("rm", f"stac/items/{D3}.json")]
    assert _stac_on_store(url) == {} and json.loads(storage.read_bytes(f"{url}/product.json"))["dates"] == []


def _publish(src: Path, url: str, version: str) -> None:
    (src / "manifest.json").write_text(json.dumps({"manifest_id": version}))
    (src / "models").mkdir(exist_ok=True)
    (src / "models" / "m.json").write_text(version * 1000)
    storage.publish(src, url, "model registry")


_HOLDER = """
import sys, time
from pathlib import Path
from ssm_spark import cache
cache.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def test_cache_keeps_the_recent_versions_and_every_one_in_use(s3, tmp_path, monkeypatch, capsys):
    """Real copies from real publications: per URL the SSM_CACHE_KEEP most recently used stay; one another
    process holds survives every prune until that process ends; a size bound takes the rest; list says so."""
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SSM_CACHE_KEEP", "1")
    url = f"s3://{BUCKET}/cached/registry"
    src = tmp_path / "registry"
    src.mkdir()
    copies = []
    for v in ("v1", "v2"):
        _publish(src, url, v)
        copies.append(storage.local_copy(url, "model registry"))
        assert json.loads((copies[-1] / "manifest.json").read_text())["manifest_id"] == v
    # this process holds both copies it was handed: fetching v2 pruned nothing
    assert all(c.is_dir() for c in copies)
    listed = {c.key: c for c in cache.entries()}
    assert [listed[c.parent.name].in_use for c in copies] == [True, True]
    assert {c.url for c in listed.values()} == {url}
    assert listed[copies[1].parent.name].last_used >= listed[copies[0].parent.name].last_used
    # let go of them, as the process's end would; another process takes v2 and keeps it
    for c in copies:
        os.close(cache._HELD.pop(str(c.parent)))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(copies[1].parent)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        _publish(src, url, "v3")
        v3 = storage.local_copy(url, "model registry")  # a new version: this URL's older ones are pruned
        assert not copies[0].parent.exists()  # v1: nobody holds it
        assert copies[1].is_dir() and v3.is_dir()  # v2: held by the other process; v3: by this one
        assert main(["cache", "prune", "--keep", "1"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["removed"] == [] and out["kept_in_use"] == [copies[1].parent.name] and copies[1].is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert main(["cache", "prune", "--keep", "1", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in out["removed"]] == [copies[1].parent.name] and copies[1].is_dir()  # a dry run
    assert main(["cache", "prune", "--keep", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in out["removed"]] == [copies[1].parent.name] and not copies[1].parent.exists()
    trash = tmp_path / "cache" / cache.TRASH
    assert out["freed_bytes"] > 2000 and (not trash.exists() or not any(trash.iterdir()))
    # a size bound removes even a URL's last version, unless it is in use (v3: this process)
    assert main(["cache", "prune", "--max-gb", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["removed"] == [] and out["kept_in_use"] == [v3.parent.name] and v3.is_dir()
    os.close(cache._HELD.pop(str(v3.parent)))
    assert main(["cache", "prune", "--max-gb", "0"]) == 0
    assert not v3.parent.exists()
    capsys.readouterr()
    assert main(["cache", "list"]) == 0 and json.loads(capsys.readouterr().out)["copies"] == []
    # asked for again after its copy was pruned: downloaded anew, whole, listed with its URL
    again = storage.local_copy(url, "model registry")
    assert json.loads((again / "manifest.json").read_text())["manifest_id"] == "v3"
    assert main(["cache", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["copies"]
    assert [(c["key"], c["url"], c["in_use"], c["complete"]) for c in listed] == [(again.parent.name, url, True, True)]
    monkeypatch.setenv("SSM_CACHE_KEEP", "none")
    assert main(["cache", "prune"]) == 2  # a bad setting: refused by name


def test_watch_refuses_what_it_does_not_support_by_name(s3, tmp_path, monkeypatch, capsys):
    """Before any Spark work: stacks on gs://, an output URL without a state folder, --state-dir with a local
    output, stacks on s3:// without the S3A jars (each exit 2, naming the option and the fix)."""
    from ssm_spark.watch import plan

    monkeypatch.delenv("SSM_STAGING_DIR", raising=False)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    sedona_only = tmp_path / "jars"  # a jars folder with Sedona's jars and not S3A's
    sedona_only.mkdir()
    for p in (ROOT / "jars").glob("*.jar"):
        if p.name.startswith(("sedona-", "geotools-")):
            (sedona_only / p.name).symlink_to(p)
    base = ["watch", "--models", str(tmp_path / "models"), "--once"]
    url = f"s3://{BUCKET}/watched"
    cases = [
        (["--stacks", "gs://bucket/stacks", "--output", str(tmp_path / "out")],
         "--stacks gs://bucket/stacks: the watcher lists its stacks with Spark's file source, which reads object "
         "storage here through Hadoop's S3A only"),
        (["--stacks", str(stacks), "--output", url],
         f"--output {url}: the watcher's state (its streaming checkpoint, state.json, log.jsonl) is kept in a local "
         "folder, not on the store"),
        (["--stacks", str(stacks), "--output", str(tmp_path / "out"), "--state-dir", str(tmp_path / "st")],
         f"--state-dir {tmp_path / 'st'}: only for an --output URL"),
        (["--stacks", f"s3://{BUCKET}/stacks", "--output", url, "--state-dir", str(tmp_path / "st"), "--set",
          f"spark.jars.dir={sedona_only}"],
         f"--stacks s3://{BUCKET}/stacks: Spark's file source lists it through Hadoop's S3A, whose jars are not in "
         f"{sedona_only}; fetch them with ssm-spark jars fetch --s3a"),
    ]
    for args, msg in cases:
        capsys.readouterr()
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        assert msg in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "st").exists()  # nothing written
    # the state folder: --state-dir, else one per URL under SSM_STAGING_DIR
    monkeypatch.setenv("SSM_STAGING_DIR", str(tmp_path / "staging"))
    p = plan(stacks, url)
    assert p.output == url and p.folder.parent == tmp_path / "staging" and p.folder.name.startswith("watch-")
    assert p.work == p.folder / "work" and p.local_stacks and plan(stacks, url + "/").folder == p.folder
    assert plan(stacks, url, tmp_path / "mine").folder == tmp_path / "mine"
    assert plan(f"s3://{BUCKET}/stacks/", url).stream == f"s3a://{BUCKET}/stacks"


# ------------------------------------------------------------------------------- watch with Spark


@pytest.fixture(scope="module")
def watched(spark, tmp_path_factory):
    """test_watch's small region, D1 landed in a local stacks folder, and a local watcher's product of it."""
    from ssm_spark.config import load_config
    from ssm_spark.watch import watch
    from regions import trained_region
    from test_watch import SMALL, _land, _landing

    root = tmp_path_factory.mktemp("objwatch")
    cfg = load_config(overrides=SMALL)
    trained_region(spark, cfg, root)
    stacks = _landing(root, "land")
    _land(root / "sim", stacks, D1)
    res = watch(spark, cfg, root / "models", stacks, None, root / "local", once=True)
    assert res["produced"] == [D1]
    return cfg, root, stacks, root / "local"


def _product(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith("_watch/")}


def _watch_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.spark
@pytest.mark.slow
def test_watch_into_s3_is_the_local_watchs_product_and_a_restart_skips(spark, s3, watched, tmp_path):
    from ssm_spark.errors import InputError
    from ssm_spark.watch import watch

    cfg, root, stacks, local = watched
    url = f"s3://{BUCKET}/watched"
    state = tmp_path / "state"
    t0 = time.time()
    res = watch(spark, cfg, root / "models", stacks, None, url, once=True, state_dir=state)
    t1 = time.time()
    assert res["produced"] == [D1] and res["failed"] == {} and res["output"] == url and res["state"] == str(state)
    got, ref = _objects(url), _product(local)
    assert "_LOCK.json" not in got and f"parquet/date={D1}/_SUCCESS.json" in got
    clim = [k for k in got if k.startswith("climatology/") and k.endswith("/_PUBLISHED.json")]
    assert len(clim) == 1  # the climatology's publication marker: the store's alone
    assert sorted(set(got) - set(clim)) == sorted(ref)
    data = [k for k in ref if k.endswith((".parquet", ".tif"))]
    assert len(data) == 8 and all(_decoded(got[k], k) == _decoded(ref[k], k) for k in data)
    assert {k: got[k] for k in ref} == ref  # and the same bytes: markers, product.json, STAC included
    assert sorted(k for k in got if k.startswith("stac/items/")) == [f"stac/items/{D1}.json"]
    # the latency: the newest input's landing to the marker's PUT, both on this machine's clock
    (entry,) = _watch_log(state)
    landed = max(p.stat().st_mtime for p in (stacks / D1).iterdir())
    assert entry["status"] == "produced" and entry["clock"] == "local"
    assert entry["last_input_landed"] == _utc(landed)
    committed = landed + entry["latency_s"]
    assert t0 <= committed <= t1 and entry["latency_s"] == res["latency_s"][D1]
    assert json.loads((state / "state.json").read_text()) == {"dates": {}, "output": url, "stacks": str(stacks)}

    marker = storage.stat(f"{url}/parquet/date={D1}/_SUCCESS.json")
    same = watch(spark, cfg, root / "models", stacks, None, url, once=True, state_dir=state)
    assert same["batches"] == 0 and same["produced"] == same["skipped"] == []  # its checkpoint: nothing new
    # restarted without its state (another machine): the stream lists everything again, produce skips D1
    elsewhere = tmp_path / "elsewhere"
    again = watch(spark, cfg, root / "models", stacks, None, url, once=True, state_dir=elsewhere)
    assert again["produced"] == [] and again["skipped"] == [D1] and again["batches"] == 1
    assert _objects(url) == got and storage.stat(f"{url}/parquet/date={D1}/_SUCCESS.json") == marker
    (entry,) = _watch_log(elsewhere)
    assert entry["status"] == "skipped" and entry["latency_s"] is None and entry["clock"] == "store"
    with pytest.raises(InputError, match=f"is the one of --output {url}, not {url}-2"):
        watch(spark, cfg, root / "models", stacks, None, f"{url}-2", once=True, state_dir=state)

    # killed right after D2's marker PUT (before its collection, product.json and the state's update): the
    # restart skips D2 (its marker), and its produce call's pull links D2 into the published catalogue
    from test_watch import _land

    _land(root / "sim", stacks, D2)

    def kill(stage, date):
        if (stage, date) == ("published", D2):
            raise _Killed(stage)

    with pytest.raises(_Killed):
        watch(spark, cfg, root / "models", stacks, None, url, once=True, state_dir=state, hook=kill)
    coll = storage.read_bytes(f"{url}/stac/collection.json")
    assert _linked(coll) == [f"./items/{D1}.json"] and storage.exists(f"{url}/stac/items/{D2}.json")
    assert D2 in json.loads((state / "state.json").read_text())["dates"]  # seen, not known to be committed
    marker = storage.stat(f"{url}/parquet/date={D2}/_SUCCESS.json")
    resumed = watch(spark, cfg, root / "models", stacks, None, url, once=True, state_dir=state)
    assert resumed["produced"] == [] and resumed["skipped"] == [D2] and resumed["batches"] == 0
    assert storage.stat(f"{url}/parquet/date={D2}/_SUCCESS.json") == marker  # not re-produced
    assert _linked(storage.read_bytes(f"{url}/stac/collection.json")) == [f"./items/{D1}.json", f"./items/{D2}.json"]
    assert json.loads(storage.read_bytes(f"{url}/product.json"))["dates"] == [D1, D2]
    assert json.loads((state / "state.json").read_text())["dates"] == {}


class _Killed(BaseException):  # what a kill looks like to the driver: nothing catches it
    pass


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.long  # the S3A listing in a child JVM, ~40 s on 2 cores: `make test-long`
def test_watch_job_lists_stacks_on_s3_through_s3a(s3, watched, tmp_path):
    """``ssm-spark watch --stacks s3://... --output s3://... --once``: the stream lists the bucket through S3A,
    produce reads it through /vsis3/; the local watcher's rows and pixels; latency on the store's clock."""
    from test_watch import SMALL

    cfg, root, stacks, local = watched
    fs = storage.filesystem(f"s3://{BUCKET}")
    for sub in (f"stacks/{D1}", "static"):
        fs.put(str(stacks.parent / sub), f"{BUCKET}/sim/{sub}", recursive=True)
    url, state = f"s3://{BUCKET}/from-s3", tmp_path / "state"
    cmd = [sys.executable, "-m", "ssm_spark", "watch", *sum((["--set", o] for o in SMALL), []),
           "--set", "spark.master=local[2]", "--models", str(root / "models"), "--stacks", f"s3://{BUCKET}/sim/stacks",
           "--output", url, "--state-dir", str(state), "--once"]
    r = subprocess.run(cmd, env={**os.environ, **s3.env()}, capture_output=True, text=True, timeout=500, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    assert s3.secret_key not in r.stdout + r.stderr
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["produced"] == [D1] and res["failed"] == {} and res["batches"] == 1
    got, ref = _objects(url), _product(local)
    # the same rows and pixels (the files' tags differ: the climatology digest covers the inputs'
    # modification times, the objects' own on the store)
    data = sorted(k for k in ref if k.endswith((".parquet", ".tif")) and not k.startswith("climatology/"))
    assert data and sorted(k for k in got if k.endswith((".parquet", ".tif")) and not k.startswith("climatology/")) \
        == data
    for k in data:
        assert _decoded(got[k], k) == _decoded(ref[k], k), k
    (entry,) = _watch_log(state)
    assert entry["status"] == "produced" and entry["clock"] == "store" and entry["latency_s"] >= 0
    newest = max(storage.stat(f"s3://{BUCKET}/sim/stacks/{D1}/{p.name}")[1] for p in (stacks / D1).iterdir()) / 1e9
    assert entry["last_input_landed"] == _utc(newest)
