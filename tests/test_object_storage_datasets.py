"""Spark datasets written to a real S3 server (SeaweedFS on loopback) with no folder shared by driver and executors
(:mod:`ssm_spark.remote_dataset`): ``features --output s3://`` and ``matchups --output s3://`` publish the local
runs' tables (rows, columns, dtypes, row order), no dataset file ever under the driver's staging folder, a repeat
rewrites nothing, executors whose PUT the store refuses fail the run by the object's name and leave the
published version and no ``_staging/``.

The suite's Spark session predates this module's server: its local-mode workers get the server's settings
from :func:`ssm_spark.product.remote.share_environment`, as a run's do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ssm_spark import storage

import s3server

SMALL = ["region.size_km=[32, 32]", "grid.tile_size=16", "simulate.n_stations=6", "simulate.end=2024-04-14",
         "simulate.min_stations_per_env=1"]
BUCKET = "ssm-datasets"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET) as srv:
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


@pytest.mark.spark
def test_features_and_matchups_published_by_the_executors(spark, s3, sim, tmp_path, monkeypatch, capsys):
    from ssm_spark.cli import main
    from ssm_spark.errors import InputIOError
    from ssm_spark.product import remote

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
    # rows in the same order, the same columns and dtypes (the date partition a category in both)
    fcopy, mcopy = storage.local_copy(furl, "feature table"), storage.local_copy(murl, "matchup table")
    ref = pd.read_parquet(tmp_path / "features")
    assert len(ref) == loc["pixels"]
    pd.testing.assert_frame_equal(pd.read_parquet(fcopy), ref)
    pd.testing.assert_frame_equal(pd.read_parquet(mcopy), pd.read_parquet(tmp_path / "matchups.parquet"))
    pd.testing.assert_frame_equal(spark.read.parquet(str(mcopy)).toPandas(),
                                  spark.read.parquet(str(tmp_path / "matchups.parquet")).toPandas())

    # a repeat publishes the same files: not one object rewritten (same ETags and LastModified)
    before = _objects(furl)
    again = _run(main, capsys, ["features", *sets, *stacks, "--output", furl])
    assert again["pixels"] == got["pixels"] and _objects(furl) == before

    # executors whose secret the store refuses (a cluster without the store's settings): the run fails naming the
    # object, the published version stays as it was, no staging prefix left
    share = remote.share_environment

    def wrong_secret(spark_):
        share(spark_)
        spark_.sparkContext.environment["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"

    monkeypatch.setattr(remote, "share_environment", wrong_secret)
    try:
        with pytest.raises(InputIOError, match=rf"{murl}/_staging/[0-9a-f]{{8}}/part-\d{{5}}\.parquet: cannot write it "
                                               r"from an executor \(the store's settings and credentials must be in "
                                               r"the executors' environment\)") as exc:
            from ssm_spark.config import load_config
            from ssm_spark.pipeline import matchups_run

            matchups_run(spark, load_config(overrides=SMALL), sim / "stacks", sim / "insitu", murl)
        assert s3.secret_key not in str(exc.value)
    finally:
        monkeypatch.setattr(remote, "share_environment", share)
        remote.share_environment(spark)  # the workers' environment the driver's again
    after = _objects(murl)
    _check_published(murl)
    assert after and storage.local_copy(murl, "matchup table") == mcopy  # the same published version
    assert not _objects(f"s3://{BUCKET}/run/matchups.parquet/_staging")
