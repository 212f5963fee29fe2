"""Earth Engine point sampling, offline, against recorded responses of Earth Engine's getInfo shapes
(tests/ee_recorded.py): (row, col, date) pairs packed within the request limits, a cell's series on
its scene dates only, quota (HTTP 429) and transient errors retried by the client, permanent errors
and answers of another shape refused by name, and a cell's change-detection climatology built from
its series by produce's own climatology code."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ssm_spark.config import load_config

ee = pytest.importorskip("ee")

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32"]


@pytest.fixture(scope="module", autouse=True)
def offline_ee():
    from ssm_spark.sources.earthengine.client import offline

    offline("ssm-spark-test")
    yield


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=SMALL)


def _truth(row: int, col: int, date: str) -> dict:
    """Deterministic band values of a cell and date (dB, deg, ...), as Earth Engine would return them."""
    k = dt.date.fromisoformat(date).toordinal() % 17
    return {"vv_db": -12.0 + 0.3 * k - 0.01 * (row % 7), "vh_db": -18.0 + 0.25 * k, "incidence_deg": 33.0 + (k % 5),
            "ndvi": 0.4, "lst_k": 290.0, "precip_mm": 1.0, "clay_pct": 20.0, "sand_pct": 40.0, "bulk_density": 1.3,
            "elevation_m": 200.0 + col % 11, "slope_deg": 2.0, "landcover": 40, "climate": 14}


def _every_sixth(row: int, col: int, start: str, end: str) -> list[str]:
    d0 = dt.date(2024, 1, 3)
    out = [(d0 + dt.timedelta(days=6 * i)).isoformat() for i in range(80)]
    return [d for d in out if start <= d <= end]


def test_pairs_are_packed_within_the_limits_and_keep_our_band_names(cfg):
    from ee_recorded import RecordedEE

    from ssm_spark.sources.earthengine import sample as S

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.sample.max_points_per_request, ec.sample.max_dates_per_request = 10, 3
    dates = ["2024-05-01", "2024-05-07", "2024-05-13", "2024-05-19", "2024-05-25"]
    pairs = [(2100 + i, 17500 + i % 4, dates[i % 5]) for i in range(23)]
    client = RecordedEE(ec, grid, _truth, _every_sixth)
    got = S.sample_pairs(client, ec, grid, pairs)
    assert all(kind == "sample" and n <= 10 and nd <= 3 for kind, n, nd in client.log), client.log
    assert sum(n for _, n, _ in client.log) == len(pairs) and len(client.log) == 3
    for (r, c, d), v in zip(pairs, got):
        assert set(v) == set(S.BANDS) and v["vv_db"] == pytest.approx(_truth(r, c, d)["vv_db"])
    s1 = S.sample_pairs(client, ec, grid, pairs[:4], stack="s1")
    assert all(set(v) == set(S.S1_BANDS) for v in s1)
    # the s1 request samples the Sentinel-1 image alone (no NDVI, LST, precipitation, static layers)
    from ee_recorded import calls, inline
    import json

    node = inline(json.loads(ee.serializer.toJSON(S.cells_request(ec, grid, [(2100, 17500)], dates[0], stack="s1"))))
    loaded = {a["id"]["constantValue"] for n, a in calls(node) if n in ("ImageCollection.load", "Image.load")}
    assert loaded == {"COPERNICUS/S1_GRD"}


def test_a_series_samples_only_the_scene_dates_and_retries_quota_errors(cfg):
    from ee_recorded import HttpError, RecordedEE

    from ssm_spark.sources.earthengine import sample as S

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.sample.max_dates_per_request = 4
    days = [(dt.date(2024, 4, 1) + dt.timedelta(days=i)).isoformat() for i in range(60)]
    client = RecordedEE(ec, grid, _truth, _every_sixth,
                        failures=[HttpError(429, "Too many concurrent aggregations."), HttpError(503, "unavailable")])
    out = S.sample_series(client, ec, grid, 2100, 17500, days)
    want = _every_sixth(2100, 17500, days[0], days[-1])
    assert sorted(out) == want and len(want) == 10
    assert client.log[0] == ("dates", 1, 0) and [k for k, *_ in client.log[1:]] == ["sample"] * 3
    assert len(client.sleeps) == 2 and client.calls == 2 + 1 + 3  # two failed tries, then 4 requests
    assert out[want[3]]["vh_db"] == pytest.approx(_truth(2100, 17500, want[3])["vh_db"])


def test_permanent_failures_and_foreign_answers_name_the_request(cfg):
    from ee_recorded import HttpError, RecordedEE

    from ssm_spark.sources.earthengine import sample as S
    from ssm_spark.sources.earthengine.client import EarthEngineError

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.export.max_attempts = 3
    bad = RecordedEE(ec, grid, _truth, _every_sixth, failures=[HttpError(400, "Image.reduceRegions: Bad band")])
    with pytest.raises(EarthEngineError, match=r"sample 1 point\(s\) on 1 date\(s\).*Bad band.*permanent"):
        S.sample_pairs(bad, ec, grid, [(2100, 17500, "2024-05-01")])
    quota = RecordedEE(ec, grid, _truth, _every_sixth, failures=[HttpError(429, "Quota exceeded")] * 3)
    with pytest.raises(EarthEngineError, match="Sentinel-1 dates over cell.*transient, gave up after 3"):
        S.sample_series(quota, ec, grid, 2100, 17500, ["2024-05-01", "2024-05-30"])
    assert len(quota.sleeps) == 2

    class Foreign:
        def __init__(self, answer):
            self.answer = answer

        def get_info(self, obj, what=""):
            return self.answer

    with pytest.raises(EarthEngineError, match="not a FeatureCollection"):
        S.sample_cells(Foreign({"error": {"code": 429}}), ec, grid, [(2100, 17500)], "2024-05-01")
    with pytest.raises(EarthEngineError, match="not a list of dates"):
        S.scene_dates(Foreign({"type": "FeatureCollection"}), ec, grid, 2100, 17500, "2024-05-01", "2024-05-30")


def test_a_cells_climatology_from_its_earth_engine_series(cfg):
    """EarthEngineClimatology = produce's tile_climatology (physics.change_detection.climatology) of the
    cell's series over the reference window, cleaned by the stack reader's rules, as float32."""
    from ee_recorded import RecordedEE

    from ssm_spark.errors import ConfigError
    from ssm_spark.physics.change_detection import CLIM_COLUMNS, climatology
    from ssm_spark.point.climatology import EarthEngineClimatology
    from ssm_spark.transforms import cd_kwargs

    grid = cfg.grid.build()
    with pytest.raises(ConfigError, match="window_start and window_end"):
        EarthEngineClimatology(cfg, grid, client=None)  # no window configured, none from the registry
    assert EarthEngineClimatology(cfg, grid, None, trained=["2024-01-01", "2024-06-30"]).window == (
        dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    c = cfg.model_copy(deep=True)
    c.physics.change_detection.window_start = dt.date(2024, 1, 1)
    c.physics.change_detection.window_end = dt.date(2024, 12, 31)

    def values(row, col, date):
        v = _truth(row, col, date)
        if date == "2024-03-03":
            v["vv_db"] = 9.0  # outside the valid range: missing, as the stack reader has it
        if date == "2024-03-09":
            v["vv_db"] = v["vh_db"] = None  # no backscatter that date: no date of the series
        return v

    client = RecordedEE(c.earthengine, grid, values, _every_sixth)
    clim = EarthEngineClimatology(c, grid, client)
    got = clim.cell(2100, 17500)
    scenes = _every_sixth(2100, 17500, "2024-01-01", "2024-12-31")
    keep = [d for d in scenes if d != "2024-03-09"]
    vv = np.array([[np.nan if d == "2024-03-03" else values(2100, 17500, d)["vv_db"] for d in keep]], "f4")
    vh = np.array([[values(2100, 17500, d)["vh_db"] for d in keep]], "f4")
    theta = np.array([[values(2100, 17500, d)["incidence_deg"] for d in keep]], "f4")
    want = climatology(theta.astype("f8"), {"vv": vv.astype("f8"), "vh": vh.astype("f8")},
                       **cd_kwargs(c.physics.change_detection))
    assert got["clim_n"] == len(keep) - 1 == 59  # vv's missing date does not count (vv is the base)
    for k in CLIM_COLUMNS:
        if k in want:
            np.testing.assert_allclose(got[k], np.float32(want[k][0]), rtol=0, atol=0, err_msg=k)
    n = client.calls
    assert clim.cell(2100, 17500) == got and client.calls == n  # kept: no second request
    import pandas as pd

    px = pd.DataFrame({"row": [2100, 2100, 2101], "col": [17500, 17500, 17500]})
    out = clim.attach(px)
    assert out["clim_n"].tolist() == [59.0, 59.0, clim.cell(2101, 17500)["clim_n"]] and clim.computed == 2
