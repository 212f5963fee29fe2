"""Inputs by URL against a real S3 server (SeaweedFS on loopback): ``features`` and ``matchups`` read their
stacks in place through GDAL's ``/vsis3/`` (the static layers found beside them on the store), and
``matchups`` / ``validate`` take the ISMN download by URL (a published folder or the ``.zip``, fetched once
into the read cache: the zip is tested here). Each gives the rows of the same job on the local folders; a URL with nothing
published there is refused by name (exit 2) before any output exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from ssm_spark import storage

import s3server

SMALL = ["region.size_km=[32, 32]", "grid.tile_size=16", "simulate.n_stations=6", "simulate.end=2024-04-14",
         "simulate.min_stations_per_env=1"]
BUCKET = "ssm-inputs"
KEY = ["date", "row", "col"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET) as srv:
        yield srv


@pytest.fixture(scope="module")
def sim(s3, tmp_path_factory):
    """A small simulated region, on disk and published to the store (stacks, static, the ISMN download as a zip)."""
    from ssm_spark.config import load_config
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("inputs")
    simulate(load_config(overrides=SMALL), root / "sim")
    url = f"s3://{BUCKET}/sim"
    for part in ("stacks", "static"):
        storage.publish(root / "sim" / part, f"{url}/{part}", part)
    with zipfile.ZipFile(root / "ismn.zip", "w") as z:
        for p in sorted((root / "sim" / "insitu").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root / "sim" / "insitu").as_posix())
    storage.publish(root / "ismn.zip", f"s3://{BUCKET}/ismn.zip")
    return root, url


def _rows(path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    return df.sort_values([k for k in KEY if k in df] + (["station_id"] if "station_id" in df else [])) \
        .reset_index(drop=True)


# The store-reading runs in one child process: their executors must get the server's endpoint and keys in their
# own environment, which the suite's shared Spark session (started before this module's server) cannot give.
_CHILD = """
import json, sys
from ssm_spark.cli import main
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    if rc:
        sys.exit(rc)
"""


def _child(runs: list[list[str]], s3) -> None:
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(runs)], env={**os.environ, **s3.env()}, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert s3.secret_key not in r.stdout + r.stderr


@pytest.mark.spark
@pytest.mark.long  # a child JVM, 60-100 s on 2 cores: `make test-long`
def test_features_and_matchups_read_stacks_and_insitu_by_url(spark, s3, sim, tmp_path, monkeypatch, capsys):
    from ssm_spark.cli import main

    root, url = sim
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    sets = sum((["--set", o] for o in SMALL), [])
    # by URL: features on stacks in place (static/ found beside them on the store); matchups on stacks and
    # the ISMN zip by URL
    _child([["features", *sets, "--stacks", f"{url}/stacks", "--output", str(tmp_path / "f-s3")],
            ["matchups", *sets, "--stacks", f"{url}/stacks", "--insitu", f"s3://{BUCKET}/ismn.zip",
             "--output", str(tmp_path / "m-zip.parquet")]], s3)
    # the same runs on the local folders
    runs = {"f-local": ["features", *sets, "--stacks", str(root / "sim" / "stacks"), "--output", str(tmp_path / "f-local")],
            "m-local": ["matchups", *sets, "--stacks", str(root / "sim" / "stacks"), "--insitu",
                        str(root / "sim" / "insitu"), "--output", str(tmp_path / "m-local.parquet")]}
    for name, argv in runs.items():
        assert main(argv) == 0, name
        assert json.loads(capsys.readouterr().out)["output"]
    pd.testing.assert_frame_equal(_rows(tmp_path / "f-s3"), _rows(tmp_path / "f-local"))
    ref = _rows(tmp_path / "m-local.parquet")
    assert len(ref) > 0
    pd.testing.assert_frame_equal(_rows(tmp_path / "m-zip.parquet"), ref)
    # the zip was fetched into the read cache, once (a published folder goes the same way: test_object_storage.py)
    assert [p.name for p in (tmp_path / "cache").glob("*/*") if not p.name.startswith(".")] == ["ismn.zip"]
    # nothing published at the URL: refused by name (exit 2), no output written
    assert main(["features", *sets, "--stacks", f"s3://{BUCKET}/nothing", "--output", str(tmp_path / "f-none")]) == 2
    assert main(["validate", *sets, "--product", str(tmp_path / "f-local"), "--insitu", f"s3://{BUCKET}/nothing",
                 "--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert f"/vsis3/{BUCKET}/nothing: no <YYYY-MM-DD>/ folders" in err and f"s3://{BUCKET}/nothing: no published" in err
    assert not (tmp_path / "f-none").exists() and not (tmp_path / "v").exists()


@pytest.mark.spark
def test_features_that_read_no_pixel_are_refused_by_name(spark, s3, sim, tmp_path):
    """Stacks on a store the executors cannot reach (this suite's shared session was started before this
    module's server, so its executors have neither its endpoint nor its keys: no credentials, or an earlier
    module's stopped server, depending on what ran before): every file fails to read, and the
    run is refused naming a file and the likely cause, no empty dataset left (before: Spark's schema error)."""
    from ssm_spark.config import load_config
    from ssm_spark.errors import InputIOError
    from ssm_spark.pipeline import features_run

    _, url = sim
    with pytest.raises(InputIOError, match=r"no pixel read from 12 stack file\(s\), 12 unreadable; first: "
                                           rf"/vsis3/{BUCKET}/sim/stacks/2024-04-\d\d/\S+\.tif: cannot read its data "
                                           r".*\(Files on an object store are read by the executors"):
        features_run(spark, load_config(overrides=SMALL), f"{url}/stacks", tmp_path / "f")
    assert not (tmp_path / "f").exists()
