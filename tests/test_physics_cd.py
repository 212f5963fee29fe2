"""Angle normalisation, change detection and the bounded physics chain: known answers, round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssm_spark.physics import angle
from ssm_spark.physics.chain import calibrate_physics
from ssm_spark.physics.change_detection import (CLIM_COLUMNS, calibrate_cd, cd_features, climatology,
                                                climatology_frame)
from ssm_spark.physics.features import radar_vegetation_index, retrieval_features
from ssm_spark.physics.qc import QC


def test_normalise_known_answer():
    out = angle.normalise([-10.0, -12.0, -11.0], [30.0, 46.0, 40.0], [-0.2, -0.1, np.nan], 40.0)
    np.testing.assert_allclose(out, [-12.0, -11.4, -11.0])


def _stations(rng, n_st=30, n_dates=30, beta=-0.18, gamma=25.0):
    rows = []
    for s in range(n_st):
        c = rng.uniform(-16, -8)
        u = rng.uniform(0, 1)
        for k in range(n_dates):
            theta = 30 + 16 * u if k % 2 else 46 - 16 * u
            ssm = rng.uniform(0.05, 0.4)
            rows.append({"station_id": f"S{s}", "env": "cropland_C" if s % 2 else "forest_C", "date": k,
                         "incidence_deg": theta, "ssm": ssm,
                         "vv_db": c + beta * (theta - 40) + gamma * ssm + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def test_fit_slope_recovers_the_angle_slope_despite_moisture():
    rng = np.random.default_rng(1)
    df = _stations(rng)
    f = angle.fit_slope(df.vv_db.to_numpy(), df.incidence_deg.to_numpy(), df.station_id.to_numpy(), df.ssm.to_numpy())
    assert f["slope"] == pytest.approx(-0.18, abs=0.01)
    assert f["moisture_db_per_unit"] == pytest.approx(25.0, abs=1.0)
    # no angle spread: no slope (never invented)
    flat = angle.fit_slope(df.vv_db.to_numpy(), np.full(len(df), 38.0), df.station_id.to_numpy())
    assert np.isnan(flat["slope"])


def test_fit_slopes_fallback_and_defaults():
    rng = np.random.default_rng(2)
    df = _stations(rng)
    s = angle.fit_slopes(df, pols=("vv",), min_samples=30, min_stations=3)["slopes"]
    assert s["global"]["vv"]["source"] == "global"
    assert s["cropland_C"]["vv"]["slope"] == pytest.approx(-0.18, abs=0.02)
    few = angle.fit_slopes(df, pols=("vv",), min_samples=10_000)["slopes"]
    assert few["cropland_C"]["vv"] == {"slope": angle.DEFAULT_SLOPES["vv"], "source": "default"}
    no_angle = angle.fit_slopes(df.drop(columns="incidence_deg"), pols=("vv",))["slopes"]
    assert no_angle["global"]["vv"]["source"] == "default"
    arr = angle.slope_arrays({"slopes": s}, np.array(["cropland_C", "unknown_X", None], dtype=object), "vv", 3)
    assert arr[0] == s["cropland_C"]["vv"]["slope"] and arr[1] == arr[2] == s["global"]["vv"]["slope"]


def test_climatology_known_references_and_cell_slope():
    rng = np.random.default_rng(3)
    n_dates = 40
    theta = np.where(np.arange(n_dates) % 2 == 0, 32.0, 44.0)[None, :].repeat(3, 0)
    half = rng.uniform(0, 1, (3, n_dates // 2))
    wet = np.repeat(half, 2, axis=1)          # the same moistures seen from both angles: slope exact
    vv = -15.0 + 6.0 * wet - 0.2 * (theta - theta.mean(1, keepdims=True))
    vv[2, 5:] = np.nan                      # a cell with too few dates
    clim = climatology(theta, {"vv": vv}, dry_percentile=0, wet_percentile=100, min_dates=10, min_spread_deg=3)
    assert set(clim) == {"clim_n", "clim_theta_mean", "clim_slope_vv", "clim_dry_vv", "clim_wet_vv", "clim_mean_vv"}
    np.testing.assert_allclose(clim["clim_slope_vv"][:2], -0.2, atol=1e-6)
    np.testing.assert_allclose(clim["clim_dry_vv"][:2], -15.0 + 6.0 * wet[:2].min(1), atol=1e-6)
    np.testing.assert_allclose(clim["clim_wet_vv"][:2], -15.0 + 6.0 * wet[:2].max(1), atol=1e-6)
    assert clim["clim_n"][2] == 5 and np.isnan(clim["clim_dry_vv"][2])
    # one orbit (no spread): no slope fitted, the default normalises
    one = climatology(np.full((1, n_dates), 38.0), {"vv": vv[:1]}, min_dates=10)
    assert np.isnan(one["clim_slope_vv"][0])


def test_relative_wetness_round_trip_and_missing_flag():
    rng = np.random.default_rng(4)
    n = 30
    m_s = rng.uniform(0, 1, n)
    df = pd.DataFrame({"station_id": "A", "date": pd.date_range("2024-01-01", periods=n), "incidence_deg": 38.0,
                       "vv_db": -16.0 + 5.0 * m_s})
    clim = climatology_frame(df, ["station_id"], dry_percentile=0, wet_percentile=100, min_dates=10)
    rows = df.merge(clim, on="station_id")
    feats, missing = cd_features(rows, rows.incidence_deg.to_numpy(), ["vv"])
    np.testing.assert_allclose(feats["rw_vv"], (m_s - m_s.min()) / (m_s.max() - m_s.min()), atol=1e-9)
    np.testing.assert_allclose(feats["anom_vv_db"], 5.0 * (m_s - m_s.mean()), atol=1e-9)
    assert not missing.any()
    short = climatology_frame(df.head(5), ["station_id"], min_dates=10)
    _, miss = cd_features(df.head(5).merge(short, on="station_id"), np.full(5, 38.0), ["vv"])
    assert miss.all()


def test_calibrate_cd_recovers_a_line_per_environment():
    rng = np.random.default_rng(5)
    rw = rng.uniform(0, 1, 400)
    env = np.where(np.arange(400) % 2, "cropland_C", "forest_C")
    ssm = np.where(env == "cropland_C", 0.08 + 0.30 * rw, 0.15 + 0.20 * rw) + rng.normal(0, 0.01, 400)
    df = pd.DataFrame({"rw": rw, "ssm": ssm, "env": env, "station_id": np.arange(400) % 20})
    e = calibrate_cd(df, min_samples=30, min_stations=3)["entries"]
    assert e["cropland_C"]["a"] == pytest.approx(0.08, abs=0.01) and e["cropland_C"]["b"] == pytest.approx(0.30, abs=0.015)
    assert e["forest_C"]["b"] == pytest.approx(0.20, abs=0.015)
    assert calibrate_cd(df.drop(columns="rw")) == {"entries": {}}


def test_radar_vegetation_index_range():
    assert radar_vegetation_index(-10.0, -10.0) == pytest.approx(2.0)
    assert radar_vegetation_index(-8.0, -22.0) == pytest.approx(4 * 10 ** -2.2 / (10 ** -0.8 + 10 ** -2.2))


def _wcm_table(rng, n_st=24, n_dates=30):
    from ssm_spark.physics import wcm

    rows = []
    for s in range(n_st):
        rough = rng.uniform(-3, 3)
        bd = rng.uniform(1.2, 1.6)
        u = rng.uniform(0, 1)
        for k in range(n_dates):
            theta = 30 + 16 * u if k % 2 else 46 - 16 * u
            ssm = rng.uniform(0.05, 0.40)
            ndvi = rng.uniform(0.1, 0.6)
            soil = -20.0 + rough + 30.0 * ssm - 0.15 * (theta - 40)
            vv = wcm.forward(soil, ndvi, theta, 0.1, 0.3) + rng.normal(0, 0.3)
            rows.append({"station_id": f"S{s}", "env": "cropland_C", "date": pd.Timestamp("2024-01-01") + pd.Timedelta(days=k),
                         "incidence_deg": theta, "ndvi": ndvi, "vv_db": vv, "vh_db": vv - 7.0, "ssm": ssm,
                         "bulk_density": bd})
    return pd.DataFrame(rows)


def test_chain_bounds_and_flags_and_change_detection_beats_wcm_across_roughness():
    rng = np.random.default_rng(6)
    df = _wcm_table(rng)
    df = df.merge(climatology_frame(df, ["station_id"]), on="station_id")
    params = calibrate_physics(df, min_samples=30, min_stations=3)
    assert params["angle"]["mode"] == "environment"
    assert params["angle"]["slopes"]["cropland_C"]["vv"]["slope"] < -0.05
    out = retrieval_features(df, params)
    por = 1 - df.bulk_density / 2.65
    phys = out["mv_physics"].to_numpy()
    ok = np.isfinite(phys)
    assert (phys[ok] >= 0).all() and (phys[ok] <= por[ok] + 1e-12).all()
    mv = out["mv_wcm"].to_numpy()
    flagged = (out["qc"].to_numpy() & int(QC.WCM_MV_OUT_OF_RANGE)) != 0
    np.testing.assert_array_equal(flagged[ok], (mv[ok] < 0) | (mv[ok] > por[ok]))
    # per-station roughness offsets defeat one C per environment, not a station's own references
    def ub(a):
        a, b = a[np.isfinite(a)], df.ssm.to_numpy()[np.isfinite(a)]
        return np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2))
    assert ub(out["mv_change_detection"].to_numpy()) < 0.7 * ub(phys)
    assert ((out["qc"].to_numpy() & int(QC.CHANGE_DETECTION_MISSING)) == 0).all()
    assert set(CLIM_COLUMNS[:6]) <= set(out.columns)


def test_chain_without_settings_is_the_old_physics():
    from ssm_spark.physics.features import coupled_features

    rng = np.random.default_rng(7)
    df = _wcm_table(rng, n_st=3, n_dates=5)
    old = coupled_features(df)
    new = retrieval_features(df, None)
    for c in ("mv_wcm", "sigma0_soil_vv_db", "qc"):
        np.testing.assert_array_equal(old[c].to_numpy(), new[c].to_numpy())
    assert "mv_physics" not in new.columns and "rw_vv" not in new.columns


def test_user_table_gets_each_stations_climatology_and_the_radar_vegetation_index(tmp_path):
    from ssm_spark.config import load_config
    from ssm_spark.pipeline import table_matchups_run

    rng = np.random.default_rng(8)
    rows = []
    for s, n_dates in (("A", 12), ("B", 12), ("C", 4)):
        for k in range(n_dates):
            rows.append({"sid": s, "day": f"2024-05-{k + 1:02d}", "lat": 50.0, "lon": 18.0 + (s == "B"),
                         "VV": -12 + rng.normal(), "VH": -19 + rng.normal(), "inc": 35 + 5 * (k % 2), "sm": 0.2})
    csv = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    cfg = load_config(overrides=["table.columns={station_id: sid, date: day, lat: lat, lon: lon, vv_db: VV, "
                                 "vh_db: VH, incidence_deg: inc, ssm: sm}", "table.default_env=cropland"])
    out = tmp_path / "m.parquet"
    summary = table_matchups_run(cfg, csv, out)
    m = pd.read_parquet(out)
    cd = summary["table"]["change_detection"]
    assert cd["groups"] == 3 and cd["groups_with_climatology"] == 2 and cd["groups_too_few_dates"] == ["C"]
    assert m.loc[m.station_id == "A", "clim_n"].eq(12).all() and m.loc[m.station_id == "C", "clim_dry_vv"].isna().all()
    a = m[m.station_id == "A"]
    expect = climatology_frame(pd.DataFrame(rows).rename(columns={"sid": "station_id", "day": "date", "VV": "vv_db",
                                                                   "VH": "vh_db", "inc": "incidence_deg"})
                               .query("station_id == 'A'"), ["station_id"])
    assert a["clim_wet_vv"].iloc[0] == pytest.approx(expect["clim_wet_vv"].iloc[0], abs=1e-9)
    assert "rvi" in summary["table"]["vegetation_descriptor"] and m["rvi"].between(0, 4).all()
