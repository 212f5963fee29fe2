"""Validation metrics: against pytesmo, known answers, NaN handling, grouped/summary forms, Spark twin."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ssm_spark.errors import InputError
from ssm_spark.validation import (
    METRICS,
    metrics,
    metrics_by,
    metrics_from_sums,
    sums_by,
    summary,
    summary_from_sums,
    to_jsonable,
)

pm = pytest.importorskip("pytesmo.metrics")


def _pair(seed: int, n: int, b: float = 0.0, s: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = np.clip(0.22 + 0.08 * np.sin(np.arange(n) / 9.0) + rng.normal(0, 0.03, n), 0.01, 0.55)
    return obs + b + rng.normal(0, s, n), obs


def _table(seed: int = 3, n_st: int = 14) -> pd.DataFrame:
    """Stations in two networks and three environments, uneven lengths, some NaNs, two short stations."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_st):
        n = 4 if i in (3, 9) else int(rng.integers(20, 80))
        est, obs = _pair(seed * 100 + i, n, b=0.01 * (i % 5 - 2), s=0.02 + 0.005 * (i % 4))
        est[rng.random(n) < 0.05] = np.nan
        obs[rng.random(n) < 0.05] = np.nan
        frames.append(pd.DataFrame({"station_id": f"S{i:02d}", "network": "NET_A" if i % 3 else "NET_B",
                                    "env": ["cropland_C", "forest_D", "shrubgrass_B"][i % 3],
                                    "ssm_est": est, "ssm": obs}))
    return pd.concat(frames, ignore_index=True)


# -- metrics() against pytesmo --------------------------------------------------------------------
@pytest.mark.parametrize("seed,n,b,s", [(0, 50, 0.0, 0.04), (1, 500, 0.05, 0.02), (2, 7, -0.03, 0.1),
                                        (3, 3000, 0.002, 0.001)])
def test_metrics_match_pytesmo(seed: int, n: int, b: float, s: float) -> None:
    est, obs = _pair(seed, n, b, s)
    m = metrics(est, obs)
    assert m["n"] == n
    np.testing.assert_allclose(m["R"], pm.pearson_r(est, obs), rtol=1e-12)
    np.testing.assert_allclose(m["bias"], pm.bias(est, obs), rtol=1e-10)   # pytesmo: mean(x) - mean(y)
    np.testing.assert_allclose(m["RMSE"], pm.rmsd(est, obs), rtol=1e-12)
    np.testing.assert_allclose(m["ubRMSE"], pm.ubrmsd(est, obs), rtol=1e-10)
    # Entekhabi et al. (2010): ubRMSE^2 = RMSE^2 - bias^2
    np.testing.assert_allclose(m["ubRMSE"] ** 2, m["RMSE"] ** 2 - m["bias"] ** 2, rtol=1e-9, atol=1e-15)


def test_metrics_types_and_import() -> None:
    import ssm_spark.validation as v

    assert callable(v.metrics) and v.metrics.__module__ == "ssm_spark.validation.scores"
    m = metrics([0.1, 0.2, 0.3, 0.4], [0.12, 0.18, 0.33, 0.41])
    assert set(m) == {"R", "ubRMSE", "bias", "RMSE", "n"}
    assert isinstance(m["n"], int) and all(isinstance(m[k], float) for k in METRICS)


# -- known answers --------------------------------------------------------------------------------
@pytest.mark.parametrize("b,s", [(0.03, 0.04), (-0.05, 0.02), (0.0, 0.06)])
def test_known_noise_is_recovered(b: float, s: float) -> None:
    """est = obs + b + N(0, s): bias -> b, ubRMSE -> s, RMSE -> sqrt(b^2 + s^2), R -> sd_o / sqrt(sd_o^2 + s^2)."""
    n = 200_000
    rng = np.random.default_rng(11)
    obs = rng.uniform(0.05, 0.45, n)
    est = obs + b + rng.normal(0.0, s, n)
    m = metrics(est, obs)
    se_mean, se_sd = s / math.sqrt(n), s / math.sqrt(2 * n)
    assert abs(m["bias"] - b) < 5 * se_mean
    assert abs(m["ubRMSE"] - s) < 5 * se_sd
    assert abs(m["RMSE"] - math.hypot(b, s)) < 5 * (se_sd + se_mean)
    sd_o = 0.4 / math.sqrt(12)
    assert m["R"] == pytest.approx(sd_o / math.hypot(sd_o, s), abs=2e-3)


def test_bias_sign_is_estimate_minus_observation() -> None:
    obs = np.array([0.1, 0.2, 0.3, 0.25])
    m = metrics(obs + 0.05, obs)
    assert m["bias"] == pytest.approx(0.05)
    assert m["RMSE"] == pytest.approx(0.05)
    assert m["ubRMSE"] == pytest.approx(0.0, abs=1e-12)
    assert m["R"] == pytest.approx(1.0)
    assert metrics(-obs, obs)["R"] == pytest.approx(-1.0)


# -- NaN and degenerate cases ---------------------------------------------------------------------
def test_nan_pairs_dropped() -> None:
    est, obs = _pair(5, 40, 0.01, 0.03)
    e, o = est.copy(), obs.copy()
    e[[1, 7, 20]] = np.nan
    o[[7, 8, 33]] = np.nan
    e[25] = np.inf
    keep = np.ones(40, bool)
    keep[[1, 7, 8, 20, 25, 33]] = False
    m = metrics(e, o)
    assert m["n"] == 34
    ref = metrics(est[keep], obs[keep])
    for k in METRICS:
        assert m[k] == pytest.approx(ref[k], rel=1e-12)
    np.testing.assert_allclose(m["R"], pm.pearson_r(est[keep], obs[keep]), rtol=1e-12)


def test_degenerate_inputs() -> None:
    empty = metrics([], [])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in METRICS)
    all_nan = metrics([np.nan, 0.2], [0.1, np.nan])
    assert all_nan["n"] == 0 and math.isnan(all_nan["bias"])
    one = metrics([0.3], [0.2])
    assert one["n"] == 1 and one["bias"] == pytest.approx(0.1) and one["RMSE"] == pytest.approx(0.1)
    assert math.isnan(one["R"]) and math.isnan(one["ubRMSE"])
    two = metrics([0.3, 0.1], [0.2, 0.25])
    assert math.isnan(two["R"]) and np.isfinite(two["ubRMSE"])       # R needs n >= 3
    flat = metrics(np.full(10, 0.3), np.linspace(0.1, 0.3, 10))        # constant estimate: no R
    assert math.isnan(flat["R"]) and flat["ubRMSE"] == pytest.approx(np.std(np.linspace(0.1, 0.3, 10)))
    assert math.isnan(metrics(np.linspace(0.1, 0.3, 10), np.full(10, 0.2))["R"])
    with pytest.raises(InputError, match="same shape"):
        metrics([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):   # InputError is a ValueError too
        metrics(np.zeros(3), np.zeros(4))


# -- grouped, sums, summary -----------------------------------------------------------------------
def test_metrics_by_equals_per_group_loop() -> None:
    df = _table()
    got = metrics_by(df, ["network", "station_id"], min_n=0)
    assert list(got.columns) == ["network", "station_id", "n", *METRICS]
    assert len(got) == df["station_id"].nunique()
    for _, row in got.iterrows():
        sub = df[df["station_id"] == row["station_id"]]
        ref = metrics(sub["ssm_est"], sub["ssm"])
        assert row["n"] == ref["n"]
        for k in METRICS:
            np.testing.assert_allclose(row[k], ref[k], rtol=1e-10, equal_nan=True)


def test_metrics_by_min_n_keeps_group_with_nan_metrics() -> None:
    df = _table()
    got = metrics_by(df, "station_id", min_n=10).set_index("station_id")
    short = got.loc[["S03", "S09"]]
    assert (short["n"] <= 4).all() and short[list(METRICS)].isna().all().all()
    assert got.drop(index=["S03", "S09"])["RMSE"].notna().all()
    whole = metrics_by(df, None)
    assert len(whole) == 1 and whole["n"].iloc[0] == metrics(df["ssm_est"], df["ssm"])["n"]
    with pytest.raises(InputError, match="nope"):
        metrics_by(df, "nope")


def test_metrics_from_sums_matches_numpy() -> None:
    df = _table()
    sums = sums_by(df, "station_id")
    direct = metrics_by(df, "station_id", min_n=0)
    for with_d in (True, False):
        s = sums if with_d else sums.drop(columns=["s_d", "s_dd"])
        m = metrics_from_sums(s)
        np.testing.assert_array_equal(m["n"], direct["n"])
        for k in METRICS:
            np.testing.assert_allclose(m[k], direct[k], rtol=1e-9, atol=1e-13, equal_nan=True)


def test_summary_pooled_and_station_medians() -> None:
    df = _table()
    s = summary(df, min_n=10)
    ref = metrics(df["ssm_est"], df["ssm"])
    for k in (*METRICS, "n"):
        assert s["overall"]["pooled"][k] == pytest.approx(ref[k], rel=1e-12)
    assert s["overall"]["pooled"]["stations"] == 14
    per = metrics_by(df, "station_id", min_n=10).dropna(subset=["RMSE"])
    med = s["overall"]["per_station_median"]
    assert med["stations"] == 12 and med["stations_total"] == 14
    for k in METRICS:
        assert med[k] == pytest.approx(float(np.median(per[k].dropna())), rel=1e-12)
    assert set(s["networks"]) == {"NET_A", "NET_B"}
    assert set(s["environments"]) == {"cropland_C", "forest_D", "shrubgrass_B"}
    crop = df[df["env"] == "cropland_C"]
    assert s["environments"]["cropland_C"]["pooled"]["R"] == pytest.approx(metrics(crop["ssm_est"], crop["ssm"])["R"])
    crop_st = metrics_by(crop, "station_id", min_n=10).dropna(subset=["ubRMSE"])
    assert s["environments"]["cropland_C"]["per_station_median"]["ubRMSE"] == pytest.approx(
        float(np.median(crop_st["ubRMSE"])))
    json.dumps(to_jsonable(s), allow_nan=False)


def test_summary_without_optional_columns() -> None:
    df = _table().drop(columns=["network"])
    s = summary(df)
    assert "networks" not in s and "environments" in s
    s2 = summary(df, env=None)
    assert "environments" not in s2
    with pytest.raises(InputError, match="station_id"):
        summary(df.drop(columns=["station_id"]))


def _assert_close_nested(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close_nested(a[k], b[k], f"{path}/{k}")
    else:
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13, equal_nan=True, err_msg=path)


def test_summary_from_sums_equals_summary() -> None:
    df = _table()
    _assert_close_nested(summary(df, min_n=10),
                         summary_from_sums(sums_by(df, ["station_id", "network", "env"]), min_n=10))


def test_to_jsonable() -> None:
    out = to_jsonable({"a": np.float64("nan"), "b": [np.int64(3), 1.5, float("inf")], "c": "x"})
    assert out == {"a": None, "b": [3, 1.5, None], "c": "x"}


# -- Spark twin -----------------------------------------------------------------------------------
@pytest.mark.spark
def test_spark_metrics_equal_numpy_per_group(spark) -> None:
    from ssm_spark.validation import spark_scores

    from pyspark.sql import functions as F

    df = _table()
    df.loc[7, "ssm"] = np.inf
    extra = pd.DataFrame({"station_id": ["FLAT"] * 12 + ["TWO"] * 2, "network": "NET_C", "env": "bare_B",
                          "ssm_est": [0.3] * 12 + [0.2, 0.25], "ssm": np.linspace(0.1, 0.3, 14)})
    df = pd.concat([df, extra], ignore_index=True)   # R undefined: constant estimate, n < 3
    sdf = spark.createDataFrame(df)       # pandas NaN arrives as null; make the missing in situ real NaN
    sdf = sdf.withColumn("ssm", F.when(F.col("ssm").isNull(), F.lit(float("nan"))).otherwise(F.col("ssm")))
    nans, nulls = sdf.agg(F.sum(F.isnan("ssm").cast("int")), F.sum(F.col("ssm_est").isNull().cast("int"))).first()
    assert nans > 0 and nulls > 0
    for by, min_n in ((["env", "station_id"], 0), (None, 10)):
        got = spark_scores.metrics_by(sdf, by, min_n=min_n).toPandas()
        ref = metrics_by(df, by, min_n=min_n)
        if by:
            flat = ref.set_index("station_id").loc[["FLAT", "TWO"]]
            assert flat["R"].isna().all() and flat["RMSE"].notna().all()
        if by:
            got = got.sort_values(by).reset_index(drop=True)
        assert list(got.columns) == list(ref.columns)
        np.testing.assert_array_equal(got["n"].to_numpy(), ref["n"].to_numpy())
        for k in METRICS:
            np.testing.assert_allclose(got[k].to_numpy(), ref[k].to_numpy(), rtol=1e-9, atol=1e-13,
                                       equal_nan=True, err_msg=f"{by} {k}")
    whole = spark_scores.metrics(sdf)
    ref = metrics(df["ssm_est"], df["ssm"])
    assert whole["n"] == ref["n"]
    for k in METRICS:
        assert whole[k] == pytest.approx(ref[k], rel=1e-9)
    _assert_close_nested(spark_scores.summary(sdf, min_n=10), summary(df, min_n=10))
    with pytest.raises(InputError, match="nope"):
        spark_scores.metrics_by(sdf, "nope")
