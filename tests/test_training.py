"""The one training runner: the same result whatever the unit map (in process, processes, Spark).

A small synthetic table (three environments, a handful of stations each, with date and place) and
tiny XGBoost settings keep every test to seconds of training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssm_spark.config import TrainConfig, XGBConfig
from ssm_spark.errors import InputError
from ssm_spark.models import runner, selection
from ssm_spark.models.runner import OOF_PLACE_COLUMNS, local_map, run_training


def matchups(seed: int = 5) -> pd.DataFrame:
    """Three environments; soil moisture follows precipitation and clay, backscatter is loosely tied to it."""
    rng = np.random.default_rng(seed)
    parts = []
    for env, n_st in (("cropland_C", 7), ("cropland_D", 6), ("bare_B", 7)):
        n_dates = 10
        n = n_st * n_dates
        sid = np.repeat([f"{env}.S{i}" for i in range(n_st)], n_dates)
        clay = np.repeat(rng.uniform(5, 40, n_st), n_dates)
        precip = rng.gamma(0.8, 10.0, n)
        ssm = 0.06 + 0.25 * (1 - np.exp(-precip / 15.0)) + 0.003 * clay + rng.normal(0, 0.01, n)
        vv = -15 + 20 * ssm + rng.normal(0, 0.5, n)
        parts.append(pd.DataFrame({
            "station_id": sid, "network": "SYN",
            "date": np.tile(pd.date_range("2024-04-01", periods=n_dates, freq="6D").date, n_st),
            "lon": np.repeat(rng.uniform(10, 20, n_st), n_dates), "lat": np.repeat(rng.uniform(45, 50, n_st), n_dates),
            "vv_db": vv, "vh_db": vv - 7 + rng.normal(0, 0.5, n), "incidence_deg": rng.uniform(30, 46, n),
            "ndvi": rng.uniform(0.05, 0.5, n), "lst_k": rng.uniform(280, 305, n), "precip_mm": precip,
            "clay_pct": clay, "sand_pct": 40.0, "bulk_density": 1.35, "elevation_m": 100.0, "slope_deg": 1.0,
            "qc": 0, "ssm": ssm, "env": env,
        }))
    return pd.concat(parts, ignore_index=True)


def cfg(**kw) -> TrainConfig:
    base = dict(k_folds=4, seed=7, min_stations=6, min_samples=60, calib_min_samples=30, calib_min_stations=3,
                candidates=["physics", "xgb_raw", "global"],
                xgb=XGBConfig(n_estimators=10, max_depth=3, learning_rate=0.3, nthread=1))
    base.update(kw)
    return TrainConfig(**base)


def assert_same_training(a, b) -> None:
    """Every unit (in the same order), every model byte, the out-of-fold table and cv_metrics equal."""
    assert list(a.units) == list(b.units)
    for k in a.units:
        ua, ub = a.units[k], b.units[k]
        assert (ua.selected, ua.runner_up, ua.blend_weight) == (ub.selected, ub.runner_up, ub.blend_weight), k
        assert ua.point_model == ub.point_model and ua.quantile_model == ub.quantile_model, k
        assert ua.interval_shift == ub.interval_shift, k
    pd.testing.assert_frame_equal(a.oof, b.oof, check_exact=True)
    assert _nan_equal(a.cv_metrics, b.cv_metrics)


def _nan_equal(x, y) -> bool:
    """Deep equality (key order included) where NaN equals NaN."""
    if isinstance(x, dict):
        return isinstance(y, dict) and list(x) == list(y) and all(_nan_equal(x[k], y[k]) for k in x)
    if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
        return True
    return x == y


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return matchups()


@pytest.fixture(scope="module")
def in_process(table):
    return run_training(table, cfg(), local_map())


def test_the_runner_carries_date_and_place_into_the_out_of_fold_table(table, in_process):
    oof = in_process.oof
    assert [c for c in OOF_PLACE_COLUMNS if c in table] == ["date", "lon", "lat", "network"]
    assert {"date", "lon", "lat", "network"} <= set(oof.columns)
    clean, _ = selection.clean_matchups(table)
    want = clean.set_index("_row").loc[oof["_row"], ["station_id", "date", "lon", "lat"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(oof[["station_id", "date", "lon", "lat"]], want)
    assert oof["lon"].notna().all() and len(oof) == len(clean)
    assert in_process.seconds["units_on"] == "process"
    # train_models is the same runner with the same map
    assert_same_training(selection.train_models(table, cfg()), in_process)


def test_the_result_does_not_depend_on_the_order_the_map_returns_units(table, in_process):
    seen = []

    class Reversed:
        def __call__(self, jobs):
            seen.extend(len(frame) for _, frame, _ in jobs)
            return [runner._unit_job(job) for job in reversed(list(jobs))]

        def describe(self):
            return {"units_on": "reversed"}

    out = run_training(table, cfg(), Reversed())
    assert seen == sorted(seen, reverse=True)   # handed out biggest first
    assert out.seconds["units_on"] == "reversed"
    assert_same_training(out, in_process)


def test_a_map_that_loses_or_repeats_a_unit_is_refused(table):
    class Drops:
        def __call__(self, jobs):
            return [runner._unit_job(job) for job in list(jobs)[1:]]

        def describe(self):
            return {"units_on": "drops"}

    class Twice(Drops):
        def __call__(self, jobs):
            first = runner._unit_job(list(jobs)[-1])
            return [first, first]

    with pytest.raises(InputError, match="no result for"):
        run_training(table, cfg(), Drops())
    with pytest.raises(InputError, match="twice"):
        run_training(table, cfg(), Twice())


@pytest.mark.slow
def test_units_in_worker_processes_give_the_in_process_result(table, in_process):
    out = run_training(table, cfg(), local_map(max_workers=2))
    assert out.seconds["units_on"] == "processes"
    assert_same_training(out, in_process)


@pytest.mark.spark
def test_units_as_spark_tasks_give_the_in_process_result(spark, table, in_process):
    from ssm_spark.models.spark_train import spark_map, train_on_spark

    out = run_training(table, cfg(), spark_map(spark))
    assert out.seconds["units_on"] == "spark" and out.seconds["task_cpus"] == 1
    assert_same_training(out, in_process)
    assert_same_training(train_on_spark(spark, table, cfg(), driver_threads=1), in_process)
