"""watch: Structured Streaming over a stacks folder on a small simulated region: a date is produced
once its manifest's files have landed (or its folder is quiet), byte for byte as ``produce`` makes it;
killed and restarted it neither re-produces a committed date nor skips a seen one; failures retried."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from ssm_spark.config import load_config
from ssm_spark.errors import ConfigError, InputError
from ssm_spark.product import produce as P
from ssm_spark.watch import CHECKPOINT, LOG, STATE, WATCH_DIR, _parse_manifest, _State, watch
from regions import trained_region

# the test_produce region; a closed change-detection window (its dates all present from the start)
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
         "physics.change_detection.window_end=2024-04-01"]
D1, D2, D3 = "2024-04-01", "2024-04-07", "2024-04-13"


class _Killed(BaseException):  # what a kill looks like to the driver: nothing catches it
    pass


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not str(p.relative_to(root)).startswith(WATCH_DIR)}


def _land(sim: Path, stacks: Path, date: str, names: list[str] | None = None, manifest: bool = True) -> None:
    """Copy a date's stacks (write then rename), then its manifest, as a data provider would."""
    src = sim / "stacks" / date
    all_names = sorted(p.name for p in src.glob("*.tif"))
    (stacks / date).mkdir(parents=True, exist_ok=True)
    for n in names if names is not None else all_names:
        tmp = stacks / date / f".{n}.tmp"
        shutil.copy2(src / n, tmp)
        tmp.rename(stacks / date / n)
    if manifest:
        (stacks / date / ".m.tmp").write_text(json.dumps({"date": date, "files": all_names}))
        (stacks / date / ".m.tmp").rename(stacks / date / "MANIFEST.json")


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / WATCH_DIR / LOG).read_text().splitlines()]


def _marker(out: Path, date: str) -> tuple[bytes, int]:
    p = out / "parquet" / f"date={date}" / "_SUCCESS.json"
    return p.read_bytes(), p.stat().st_mtime_ns


# ------------------------------------------------------------------------------------- no Spark


def test_manifest_and_settings_are_checked(tmp_path: Path):
    assert _parse_manifest('{"date": "2024-04-01", "files": ["b.tif", "a.tif"]}', D1) == (["a.tif", "b.tif"], None)
    for text, msg in [("{", "not JSON"), ('{"files": []}', "expected"), ('{"files": ["x/a.tif"]}', "expected"),
                      ('{"date": "2024-04-07", "files": ["a.tif"]}', "in folder 2024-04-01"),
                      (OSError("gone"), "unreadable")]:
        assert msg in _parse_manifest(text, D1)[1]
    with pytest.raises(ConfigError, match="Spark's file source skips"):
        load_config(overrides=["watch.manifest=_MANIFEST.json"])
    folder = tmp_path / WATCH_DIR
    folder.mkdir()
    st = _State(folder, "/data/stacks", "MANIFEST.json", None)
    st.record([("file:/data/stacks/2024-04-01/t.tif", 1.0, 10), ("file:/data/stacks/notes/readme.txt", 1.0, 1),
               ("file:/data/stacks/2024-04-01/MANIFEST.json", 2.0, 5)], {"file:/data/stacks/2024-04-01/MANIFEST.json":
                                                                          '{"files": ["t.tif", "u.tif"]}'}, 3.0)
    assert list(st.dates) == [D1] and st.dates[D1]["manifest"] == ["t.tif", "u.tif"]
    with pytest.raises(InputError, match="follows /data/stacks, not /other"):
        _State(folder, "/other", "MANIFEST.json", None)
    (folder / STATE).unlink()
    (folder / CHECKPOINT).mkdir()
    with pytest.raises(InputError, match="checkpoint without state.json"):
        _State(folder, "/data/stacks", "MANIFEST.json", None)


# ------------------------------------------------------------------------------------- Spark


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory):
    """A small simulated region (2 x 2 tiles of 32 cells, 6 dates) with a registry trained on it."""
    root = tmp_path_factory.mktemp("watch")
    cfg = load_config(overrides=SMALL)
    assert trained_region(spark, cfg, root)["manifest_id"]
    return cfg, root


def _landing(root: Path, name: str) -> Path:
    """An empty stacks folder with the static layers beside it (produce's default)."""
    shutil.copytree(root / "sim" / "static", root / name / "static")
    (root / name / "stacks").mkdir()
    return root / name / "stacks"


@pytest.mark.spark
@pytest.mark.slow
def test_dates_commit_when_complete_once_and_as_produce_makes_them(spark, small):
    cfg, root = small
    stacks, out = _landing(root, "land1"), root / "land1" / "product"
    names = sorted(p.name for p in (root / "sim" / "stacks" / D2).glob("*.tif"))
    _land(root / "sim", stacks, D1)
    _land(root / "sim", stacks, D2, names[:-1])  # its manifest lists a file that has not landed
    first = watch(spark, cfg, root / "models", stacks, None, out, once=True)
    assert first["produced"] == [D1] and first["failed"] == {} and first["batches"] == 1
    assert "manifest lists 1 file(s) not landed: " + names[-1] in first["waiting"][D2]
    assert not (out / "parquet" / f"date={D2}").exists()
    m1 = _marker(out, D1)

    _land(root / "sim", stacks, D2, names[-1:], manifest=False)  # the last file lands
    second = watch(spark, cfg, root / "models", stacks, None, out, once=True)
    assert second["produced"] == [D2] and second["skipped"] == [] and second["waiting"] == {}
    assert _marker(out, D1) == m1  # not re-produced: the same marker, not even rewritten
    third = watch(spark, cfg, root / "models", stacks, None, out, once=True)  # nothing new
    assert third["produced"] == third["skipped"] == [] and third["batches"] == 0 and _marker(out, D1) == m1
    log = _log(out)
    assert [(e["date"], e["status"]) for e in log] == [(D1, "produced"), (D2, "produced")]
    for e in log:  # latency: the marker's time minus the newest input's modification time
        assert e["latency_s"] is not None and e["latency_s"] > 0 and e["committed"] > e["last_input_landed"]
    assert json.loads((out / WATCH_DIR / STATE).read_text())["dates"] == {}

    # the same code and commit as produce: a plain run over the same folder gives the same bytes
    ref = root / "land1" / "reference"
    assert P.produce(spark, cfg, root / "models", stacks, None, D1, D2, ref)["produced"] == 2
    got, want = _files(out), _files(ref)
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []


@pytest.mark.spark
@pytest.mark.slow
def test_killed_or_failed_dates_are_produced_on_restart_never_twice(spark, small):
    cfg, root = small
    cfg = load_config(overrides=SMALL + ["watch.quiet_seconds=1"])
    stacks, out = _landing(root, "land2"), root / "land2" / "product"
    args = (spark, cfg, root / "models", stacks, None, out)
    _land(root / "sim", stacks, D1, manifest=False)  # no manifest: the quiet period decides
    time.sleep(1.1)

    def at(stage: str, date: str, exc: BaseException):
        def hook(s, d):
            if (s, d) == (stage, date):
                raise exc
        return hook

    with pytest.raises(_Killed):  # killed with the date staged, not committed
        watch(*args, once=True, hook=at("staged", D1, _Killed("kill")))
    assert not (out / "parquet" / f"date={D1}").exists()
    assert D1 in json.loads((out / WATCH_DIR / STATE).read_text())["dates"]  # seen: not lost
    failed = watch(*args, once=True, hook=at("staged", D1, RuntimeError("disk hiccup")))
    assert failed["batches"] == 0 and failed["failed"] == {D1: "RuntimeError: disk hiccup"}  # recorded
    assert json.loads((out / WATCH_DIR / STATE).read_text())["dates"][D1]["attempts"] == 1
    done = watch(*args, once=True)
    assert done["produced"] == [D1] and done["failed"] == {} and (out / "parquet" / f"date={D1}" / "_SUCCESS.json").is_file()
    assert [e["status"] for e in _log(out)] == ["failed", "produced"]

    # killed after the commit, before the state says so: the restart finds the marker and skips
    _land(root / "sim", stacks, D2)
    with pytest.raises(_Killed):
        watch(*args, once=True, hook=at("committed", D2, _Killed("kill")))
    m2 = _marker(out, D2)
    again = watch(*args, once=True)
    assert again["produced"] == [] and again["skipped"] == [D2] and _marker(out, D2) == m2
    assert json.loads((out / WATCH_DIR / STATE).read_text())["dates"] == {}


@pytest.mark.spark
@pytest.mark.slow
def test_the_running_stream_produces_a_date_as_it_lands(spark, small):
    cfg, root = small
    cfg = load_config(overrides=SMALL + ["watch.trigger_seconds=1"])
    stacks, out = _landing(root, "land3"), root / "land3" / "product"
    lander = threading.Timer(4.0, _land, (root / "sim", stacks, D3))
    lander.start()
    try:
        res = watch(spark, cfg, root / "models", stacks, None, out, max_seconds=40, start=dt.date.fromisoformat(D3))
    finally:
        lander.join()
    assert res["produced"] == [D3] and res["batches"] >= 1
    assert 0 < res["latency_s"][D3] < 60  # from the manifest landing to the commit
    assert _log(out)[0]["latency_s"] == res["latency_s"][D3]
