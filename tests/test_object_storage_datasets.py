"""Spark datasets written to a real S3 server (SeaweedFS on loopback) with no folder shared by driver and executors
(:mod:`ssm_spark.remote_dataset`): ``features --output s3://`` and ``matchups --output s3://`` publish the local
runs' tables (rows, columns, dtypes, row order), no dataset file ever under the driver's staging folder, a repeat
rewrites nothing, executors whose PUT the store refuses fail the run by the object's name and leave the
published version and no ``_staging/``.

The jobs' test (four runs, ~40 s) is marked long; ``make test`` runs the CLI paths against local runs in
tests/test_object_storage.py (``features --output s3://``, ``matchups --output s3://`` then ``train`` from it).
The suite's Spark session predates this module's server: its local-mode workers get the server's settings
from :func:`ssm_spark.spark.share_store_environment`, as a run's do.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ssm_spark import storage

import emulator
import s3server

SMALL = ["region.size_km=[32, 32]", "grid.tile_size=16", "simulate.n_stations=6", "simulate.end=2024-04-14",
         "simulate.min_stations_per_env=1"]
BUCKET = "ssm-datasets"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET, kill=True) as srv:  # its data not kept
        yield srv


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from ssm_spark.config import load_config
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("datasets")
    simulate(load_config(overrides=SMALL), root / "sim")
    return root / "sim"


def _objects(url: str) -> dict[str, tuple[int, str, float]]:
    """Every object under ``url``: relative key -> (size, ETag, LastModified). SeaweedFS's filer also lists an
    emptied folder as a 0-byte entry of storage class DIRECTORY (no object: no ETag, no time): left out."""
    fs, root = storage.filesystem(url), storage.fs_path(url)
    try:
        found = fs.find(root, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    return {k[len(root) + 1:]: (int(v["size"]), v.get("ETag"), v["LastModified"].timestamp()) for k, v in found.items()
            if v.get("StorageClass") != "DIRECTORY"}


def _run(main, capsys, argv: list[str]) -> dict:
    assert main(argv) == 0, argv
    return json.loads(capsys.readouterr().out)


def _check_published(url: str) -> None:
    """The marker lists exactly the objects under the URL, with their sizes; no staging, no lock left."""
    objs = _objects(url)
    marker = json.loads(storage.read_bytes(f"{url}/{storage.PUBLISHED}"))
    assert {k: v[0] for k, v in objs.items() if k != storage.PUBLISHED} == \
        {k: m["size"] for k, m in marker["files"].items()}
    assert all(str(v[1]).strip('"') == marker["files"][k]["md5"] for k, v in objs.items()
               if k != storage.PUBLISHED)  # a single PUT's ETag is its MD5: the copies are the tasks' bytes
    assert not any(k.startswith("_staging/") or k == "_LOCK.json" for k in objs)


@pytest.mark.long  # ~40 s (four runs); in CI the same CLI paths run in tests/test_object_storage.py
@pytest.mark.spark
def test_features_and_matchups_published_by_the_executors(spark, s3, sim, tmp_path, monkeypatch, capsys):
    from ssm_spark.cli import main

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("SSM_STAGING_DIR", str(staging))
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    sets = sum((["--set", o] for o in SMALL), [])
    stacks, insitu = ["--stacks", str(sim / "stacks")], ["--insitu", str(sim / "insitu")]
    furl, murl = f"s3://{BUCKET}/run/features", f"s3://{BUCKET}/run/matchups.parquet"

    loc = _run(main, capsys, ["features", *sets, *stacks, "--output", str(tmp_path / "features")])
    got = _run(main, capsys, ["features", *sets, *stacks, "--output", furl])
    # the summary as before: the same counts (the tasks' own, no second pass) and the URL as its output
    assert got["output"] == furl and loc["pixels"] > 0 and loc["masked"] > 0
    assert {k: got[k] for k in ("stacks", "pixels", "masked", "with_mv_wcm")} == \
        {k: loc[k] for k in ("stacks", "pixels", "masked", "with_mv_wcm")}
    mloc = _run(main, capsys, ["matchups", *sets, *stacks, *insitu, "--output", str(tmp_path / "matchups.parquet")])
    mgot = _run(main, capsys, ["matchups", *sets, *stacks, *insitu, "--output", murl])
    assert mgot["output"] == murl and mloc["rows"] > 0
    assert {k: mgot.get(k) for k in ("rows", "matchups", "change_detection")} == \
        {k: mloc.get(k) for k in ("rows", "matchups", "change_detection")}
    assert not [p for p in staging.rglob("*")]  # nothing of either dataset under the driver's staging folder
    for url in (furl, murl):
        _check_published(url)
    assert all(k.startswith("date=") and k.endswith(".parquet") for k in _objects(furl) if k != storage.PUBLISHED)

    # what readers get (storage.local_copy, as train --matchups s3:// and validate read them): the local tables,
    # the same columns and dtypes (the date partition a category in both); the features' rows in the same order
    fcopy, mcopy = storage.local_copy(furl, "feature table"), storage.local_copy(murl, "matchup table")
    ref = pd.read_parquet(tmp_path / "features")
    assert len(ref) == loc["pixels"]
    pd.testing.assert_frame_equal(pd.read_parquet(fcopy), ref)
    # the matchups come out of a shuffle, whose row order within a partition Spark does not promise (nor for its
    # own writer): compared in the key's order
    key = ["station_id", "date"]
    for read in (pd.read_parquet, lambda p: spark.read.parquet(str(p)).toPandas()):
        pd.testing.assert_frame_equal(read(mcopy).sort_values(key).reset_index(drop=True),
                                      read(tmp_path / "matchups.parquet").sort_values(key).reset_index(drop=True))



@pytest.mark.spark
def test_a_dataset_repeated_and_failed(spark, s3, tmp_path, monkeypatch):
    """:func:`write_dataset` on a small DataFrame of several partitions and dates: the table Spark's own writer
    gives (rows in order, dtypes), a repeat rewrites nothing, a refused check or executor PUT publishes nothing
    and leaves the published version, no staging."""
    import datetime as dt

    from ssm_spark.errors import InputIOError
    from ssm_spark.parquet import write_parquet_atomic
    from ssm_spark.remote_dataset import write_dataset

    rows = [(i, f"s{i % 3}", dt.date(2024, 4, 1 + i % 4), float(i) / 7 if i % 5 else None, i % 2 == 0)
            for i in range(40)]
    df = spark.createDataFrame(rows, "id int, station string, date date, v double, ok boolean").repartition(3, "id")
    url = f"s3://{BUCKET}/small"
    res = write_dataset(df, url, ["date"], what="small table",
                        stats=lambda t: {"rows": t.num_rows, "stations": t["station"].to_pylist()})
    assert res["rows"] == 40 and res["stats"] == {"rows": 40, "stations": ["s0", "s1", "s2"]}
    write_parquet_atomic(df, tmp_path / "local", ["date"])
    # Spark's own files: part-<index>-<job uuid>.c000.zstd.parquet, one per task and date: the same tasks and dates
    spark_files = sorted(f"{p.parent.name}/{p.name[:10]}.parquet" for p in (tmp_path / "local").glob("date=*/*.parquet"))
    assert sorted(res["files"]) == spark_files and len(spark_files) > 4
    copy = storage.local_copy(url, "small table")
    pd.testing.assert_frame_equal(pd.read_parquet(copy), pd.read_parquet(tmp_path / "local"))
    _check_published(url)
    before = _objects(url)
    storage.write_bytes(f"{url}/_staging/0badc0de/date=2024-04-01/part-00000.parquet", b"a killed run's")
    write_parquet_atomic(df, url, ["date"])  # a URL: write_dataset's
    assert _objects(url) == before  # the same files: not one object rewritten, the killed run's staging deleted
    # a check refusing the result: nothing published, the staged objects deleted
    with pytest.raises(ValueError, match="refused"):
        write_dataset(df.filter("id < 10"), url, ["date"], check=lambda r: (_ for _ in ()).throw(ValueError("refused")))
    assert _objects(url) == before
    # executors whose secret the store refuses (a cluster without the store's settings): the object named
    with emulator.executors_with_a_wrong_secret(spark, monkeypatch):
        with pytest.raises(InputIOError, match=rf"{url}/_staging/[0-9a-f]{{8}}/date=2024-04-0\d/part-\d{{5}}\.parquet: "
                                               r"cannot write it from an executor \(the store's settings and "
                                               r"credentials must be in the executors' environment\)") as exc:
            write_dataset(df, url, ["date"])
        assert s3.secret_key not in str(exc.value)
    assert _objects(url) == before and storage.local_copy(url, "small table") == copy
    assert not _objects(f"{url}/_staging")
