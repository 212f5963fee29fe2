"""``matchups --source ee`` against recorded Earth Engine responses (tests/ee_recorded.py) holding the
simulated stacks' own values: the same matchup table as the stack path, requests within the limits;
quota errors retried, a run that cannot finish writes nothing and names the request; the CLI path."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ssm_spark.config import load_config

ee = pytest.importorskip("ee")

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "physics.change_detection.min_dates=4",
         "earthengine.sample.max_points_per_request=40", "earthengine.sample.max_dates_per_request=3"]


@pytest.fixture(scope="module")
def sim(spark, tmp_path_factory):
    from ssm_spark.pipeline import matchups_run
    from ssm_spark.sources.earthengine.client import offline
    from ssm_spark.sources.simulate import simulate

    offline("ssm-spark-test")
    root = tmp_path_factory.mktemp("ee_matchups")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    summary = matchups_run(spark, cfg, root / "sim" / "stacks", root / "sim" / "insitu", root / "stack.parquet")
    assert summary["rows"] > 20
    return cfg, root


def _recorded(cfg, root, failures=None):
    """Earth Engine answering with the stack files' values (what an export of those cells holds)."""
    from ee_recorded import RecordedEE

    from ssm_spark.point import StackSource
    from ssm_spark.point.errors import PointError

    grid = cfg.grid.build()
    src = StackSource(root / "sim" / "stacks", grid, open_files=64)

    def values(row, col, date):
        try:
            v, _ = src.values(row, col, date)
        except PointError:
            return {}  # no file of that date over the cell: a feature without band values
        return {b: (None if math.isnan(x) else x) for b, x in v.items()}

    def scenes(row, col, start, end):
        return [d for d in src.dates() if start <= d <= end]

    return RecordedEE(cfg.earthengine, grid, values, scenes, failures)


@pytest.mark.spark
@pytest.mark.slow
def test_ee_matchups_equal_the_stack_matchups(spark, sim):
    from ee_recorded import HttpError

    from ssm_spark.sources.earthengine.matchups import ee_matchups_run

    cfg, root = sim
    client = _recorded(cfg, root, failures=[HttpError(429, "Too many requests")])
    s = ee_matchups_run(spark, cfg, root / "sim" / "insitu", root / "ee.parquet", client=client)
    assert len(client.sleeps) == 1  # the 429 was retried by the client
    kinds = [k for k, *_ in client.log]
    assert kinds[0] == "dates" and set(kinds[1:]) == {"sample"}
    assert all(n <= 40 and nd <= 3 for k, n, nd in client.log if k == "sample")
    assert s["earthengine"]["stations"] == 12 and s["earthengine"]["pixel_rows"] > 0
    key = ["station_id", "date"]
    a = pd.read_parquet(root / "stack.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(root / "ee.parquet").sort_values(key).reset_index(drop=True)
    assert s["rows"] == len(b) == len(a) and list(b.columns) == list(a.columns)
    pd.testing.assert_frame_equal(b, a, check_exact=False, rtol=1e-9, atol=1e-9)
    assert "change_detection" in s and b["clim_n"].notna().all()


@pytest.mark.spark
@pytest.mark.slow
def test_ee_matchups_that_cannot_finish_write_nothing(spark, sim, capsys):
    from ee_recorded import HttpError

    from ssm_spark.cli import main
    from ssm_spark.sources.earthengine.client import EarthEngineError
    from ssm_spark.sources.earthengine.matchups import ee_matchups_run

    cfg, root = sim
    c = cfg.model_copy(deep=True)
    c.earthengine.export.max_attempts = 2
    client = _recorded(c, root, failures=[HttpError(429, "Quota exceeded")] * 2)
    with pytest.raises(EarthEngineError, match=r"Sentinel-1 dates over 12 station cell\(s\).*transient, gave up"):
        ee_matchups_run(spark, c, root / "sim" / "insitu", root / "never.parquet", client=client)
    assert not (root / "never.parquet").exists()
    rc = main(["matchups", *sum((["--set", o] for o in SMALL), []), "--source", "ee", "--insitu",
               str(root / "sim" / "insitu"), "--output", str(root / "cli.parquet")])
    assert rc == 2 and "earthengine.project is not set" in capsys.readouterr().err
    assert not (root / "cli.parquet").exists()
