"""Candidates and the model-selection module: leakage, selection, fallback levels, uncertainty.

Every test builds its own small synthetic matchup table and trains with tiny XGBoost settings
(a few shallow trees), so the file runs in well under a minute.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssm_spark.config import TrainConfig, XGBConfig
from ssm_spark.errors import InputError
from ssm_spark.models import candidates, selection
from ssm_spark.physics import calibrate as cal
from ssm_spark.physics import wcm
from ssm_spark.physics.features import coupled_features, retrieval_features

WCM_TRUTH = {"vv": {"A": 0.12, "B": 0.45, "C": -14.0, "D": 24.0}, "vh": {"A": 0.03, "B": 0.30, "C": -24.0, "D": 20.0}}


def make_env(env: str, n_stations: int, n_dates: int, kind: str, seed: int) -> pd.DataFrame:
    """Synthetic matchups of one environment.

    kind='wcm': backscatter follows the Water Cloud Model of :data:`WCM_TRUTH` exactly (0.1 dB noise),
    so the calibrated WCM inversion is nearly perfect; kind='precip': soil moisture is driven by
    precipitation and clay (a smooth function plus 0.01 noise) and backscatter is unrelated noise,
    so only the trees on the raw inputs can recover it.
    """
    rng = np.random.default_rng(seed)
    n = n_stations * n_dates
    sid = np.repeat([f"{env}.S{i:03d}" for i in range(n_stations)], n_dates)
    clay = np.repeat(rng.uniform(5, 40, n_stations), n_dates)
    sand = np.repeat(rng.uniform(10, 80, n_stations), n_dates)
    ndvi = rng.uniform(0.05, 0.5, n)
    theta = rng.uniform(30, 46, n)
    precip = rng.gamma(0.8, 10.0, n)
    if kind == "wcm":
        mv = rng.uniform(0.05, 0.45, n)
        vv = wcm.forward(WCM_TRUTH["vv"]["C"] + WCM_TRUTH["vv"]["D"] * mv, ndvi, theta, WCM_TRUTH["vv"]["A"],
                         WCM_TRUTH["vv"]["B"]) + rng.normal(0, 0.1, n)
        vh = wcm.forward(WCM_TRUTH["vh"]["C"] + WCM_TRUTH["vh"]["D"] * mv, ndvi, theta, WCM_TRUTH["vh"]["A"],
                         WCM_TRUTH["vh"]["B"]) + rng.normal(0, 0.1, n)
    else:
        mv = 0.06 + 0.25 * (1 - np.exp(-precip / 15.0)) + 0.003 * clay + rng.normal(0, 0.01, n)
        vv = rng.normal(-11, 2, n)
        vh = vv - 8 + rng.normal(0, 1, n)
    return pd.DataFrame({
        "station_id": sid, "network": "SYN",
        "date": np.tile(pd.date_range("2024-04-01", periods=n_dates, freq="6D").date, n_stations),
        "vv_db": vv, "vh_db": vh, "incidence_deg": theta, "ndvi": ndvi, "lst_k": rng.uniform(280, 305, n),
        "precip_mm": precip, "clay_pct": clay, "sand_pct": sand, "bulk_density": 1.35,
        "elevation_m": np.repeat(rng.uniform(0, 800, n_stations), n_dates), "slope_deg": 1.0,
        "qc": 0, "ssm": mv, "env": env,
    })


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(k_folds=4, seed=7, min_stations=6, min_samples=60, calib_min_samples=30, calib_min_stations=3,
                xgb=XGBConfig(n_estimators=12, max_depth=3, learning_rate=0.3, nthread=1))
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------- folds


def test_folds_are_station_disjoint_balanced_and_seeded():
    df = pd.concat([make_env("cropland_C", 11, 5, "precip", 1), make_env("bare_B", 7, 5, "wcm", 2),
                    make_env("forest_C", 3, 5, "precip", 3)], ignore_index=True)
    a = selection.fold_assignments(df, tiny_cfg())
    assert a["station_id"].is_unique and set(a["fold"]) == {0, 1, 2, 3}
    # within each environment the station counts per fold differ by at most one
    for env, g in a.groupby("env"):
        counts = g["fold"].value_counts().reindex(range(4), fill_value=0)
        assert counts.max() - counts.min() <= 1, (env, counts.to_dict())
    assert a.equals(selection.fold_assignments(df, tiny_cfg()))
    assert not a["fold"].equals(selection.fold_assignments(df, tiny_cfg(seed=8))["fold"])
    # the leakage report on the row table: no station on both sides of any fold
    rows = df.merge(a[["station_id", "fold"]], on="station_id")
    assert (selection.leakage_report(rows)["overlap"] == 0).all()


def test_fewer_stations_than_folds():
    df = make_env("cropland_C", 3, 5, "precip", 1)
    folds = selection.assign_folds(df, 5, 0)
    assert sorted(folds) == [0, 1, 2]
    with pytest.raises(InputError, match="at least 2 stations"):
        selection.assign_folds(df[df.station_id == df.station_id.iloc[0]], 5, 0)


# --------------------------------------------------------------------------------------- leakage

#: Settings where the WCM is calibrated on the global pool only (one fit per polarisation): for tests
#: about the trees, where a full per-environment calibration would only cost time.
GLOBAL_WCM_ONLY = dict(calib_min_samples=10**6)


@pytest.fixture(scope="module")
def trained():
    """One instrumented training on four environments: two with their own models (one where the WCM
    holds exactly, one where only the raw inputs explain soil moisture), one falling back to its
    land-cover group and one to the global model. Calls to the calibration, the tree fits and the
    predictions are recorded with the stations they saw."""
    df = pd.concat([
        make_env("cropland_C", 8, 12, "precip", 11),
        make_env("bare_B", 8, 12, "wcm", 12),
        make_env("cropland_D", 3, 12, "precip", 13),   # too few stations: its group (cropland)
        make_env("forest_C", 3, 12, "precip", 14),     # too few, and so is its group: global
    ], ignore_index=True)
    rec = {"calib": [], "fits": {}, "predicts": []}
    real_cal, real_fit, real_pred = cal.calibrate_wcm, candidates.fit_candidate, candidates.predict_candidate
    real_qfit, real_qpred = candidates.fit_quantiles, candidates.predict_quantiles

    def spy_cal(matchups, **kw):
        table = real_cal(matchups, **kw)
        rec["calib"].append({"stations": set(matchups["station_id"]), "folds": set(matchups["fold"])})
        return table

    def record_fit(real):
        def spy(name, train, *a, **kw):
            model = real(name, train, *a, **kw)
            rec["fits"][id(model)] = {"model": model, "stations": set(train["station_id"]),
                                      "folds": set(train["fold"]), "mv_wcm": train["mv_wcm"].to_numpy(),
                                      "train": train}
            return model
        return spy

    def record_pred(real):
        def spy(model, test):
            rec["predicts"].append((id(model), set(test["station_id"])))
            return real(model, test)
        return spy

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cal, "calibrate_wcm", spy_cal)
        mp.setattr(candidates, "fit_candidate", record_fit(real_fit))
        mp.setattr(candidates, "predict_candidate", record_pred(real_pred))
        mp.setattr(candidates, "fit_quantiles", record_fit(real_qfit))
        mp.setattr(candidates, "predict_quantiles", record_pred(real_qpred))
        # the plain rule (ranking = selection), so its cross-fitting can be checked exactly
        res = selection.train_models(df, tiny_cfg(candidates=["physics", "xgb_raw", "global"], selection="best"))
    return df, res, rec


def test_no_station_leaks_into_calibration_or_trees(trained):
    df, res, rec = trained
    folds = res.ctx.folds
    test_stations = {f: {s for s, g in folds.items() if g == f} for f in range(res.ctx.k)}

    # calibration: one call per fold on the other folds' stations only, plus one on everything
    assert len(rec["calib"]) == res.ctx.k + 1
    for call in rec["calib"][:-1]:
        (held_out,) = set(range(res.ctx.k)) - call["folds"]
        assert not call["stations"] & test_stations[held_out]
        assert call["stations"] == set(folds) - test_stations[held_out]
    assert rec["calib"][-1]["stations"] == set(folds)

    # trees: every model that predicted was trained without any of the stations it predicted for
    assert len(rec["predicts"]) > 20
    for model_id, stations in rec["predicts"]:
        assert not rec["fits"][model_id]["stations"] & stations
    # and the physics features it was trained on come from its own fold's calibration
    n_checked = 0
    for info in rec["fits"].values():
        missing = set(range(res.ctx.k)) - info["folds"]
        if not missing:
            continue  # final model, fitted on everything with the all-data calibration
        (held_out,) = missing
        expected = retrieval_features(info["train"].drop(columns=["mv_wcm"]), res.ctx.fold_params[held_out])["mv_wcm"]
        np.testing.assert_array_equal(info["mv_wcm"], expected.to_numpy())
        assert res.ctx.fold_params[held_out]["settings"]["calibration_fold"] == held_out
        n_checked += 1
    assert n_checked > 20
    for u in res.units.values():
        assert all(a["train_stations"] + a["test_stations"] <= len(folds) for a in u.audit)


# -------------------------------------------------------------------------------------- selection


def test_rank_candidates_rules():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.05, 0.4, 400)
    noise = rng.normal(0, 1, 400)
    preds = {
        "xgb_raw": y + 0.03 * noise,                       # ubRMSE 0.03
        "xgb_coupled": y + 0.03 * noise,                    # an exact tie: the candidate order decides
        "physics": np.where(np.arange(400) < 300, y, np.nan),  # perfect but covers 75 %
        "global": y + 0.06 * noise,
    }
    ranked = selection.rank_candidates(preds, y, tiny_cfg())
    names = [e["candidate"] for e in ranked]
    assert names[-1] == "physics" and not ranked[-1]["eligible"]
    assert names[:3] == ["xgb_raw", "xgb_coupled", "global"]
    # eligible candidates are scored on the rows where all of them predict
    assert ranked[0]["n"] == 400 and ranked[-1]["n"] == 300
    # within the tolerance R decides: a slightly worse ubRMSE with a better R wins
    preds2 = {"xgb_raw": y + 0.03 * noise, "xgb_coupled": 0.9 * (y + 0.0299 * noise)}
    r = selection.rank_candidates(preds2, y, tiny_cfg(tie_tolerance=0.01))
    raw_r = np.corrcoef(preds2["xgb_raw"], y)[0, 1]
    cpl_r = np.corrcoef(preds2["xgb_coupled"], y)[0, 1]
    assert r[0]["candidate"] == ("xgb_raw" if raw_r > cpl_r else "xgb_coupled")
    r0 = selection.rank_candidates(preds2, y, tiny_cfg(tie_tolerance=0.0))
    assert r0[0]["candidate"] == min(r0, key=lambda e: e["ubRMSE"])["candidate"]
    # physics becomes eligible when the coverage threshold allows it, and then wins
    r = selection.rank_candidates(preds, y, tiny_cfg(min_prediction_coverage=0.7))
    assert r[0]["candidate"] == "physics"


def test_selection_picks_physics_where_physics_holds_and_trees_elsewhere(trained):
    df, res, _ = trained
    envs = res.cv_metrics["environments"]
    bare, crop = envs["bare_B"], envs["cropland_C"]
    assert bare["selected"] == "physics" and bare["candidates"]["physics"]["ubRMSE"] < 0.02
    assert crop["selected"] in ("xgb_raw", "global") and crop["runner_up"] in ("xgb_raw", "global")
    assert crop["candidates"][crop["selected"]]["ubRMSE"] < 0.5 * crop["candidates"]["physics"]["ubRMSE"]
    for blk in (bare, crop):
        assert blk["level"] == "environment"
        ranking = res.units[blk["unit"]].ranking
        assert [e["candidate"] for e in ranking][:2] == [blk["selected"], blk["runner_up"]]
    # cross-fitted framework: where one candidate wins every fold, it is that candidate's figures
    assert set(bare["selected_by_fold"].values()) == {"physics"}
    assert bare["framework"]["ubRMSE"] == pytest.approx(bare["candidates"]["physics"]["ubRMSE"])
    # the overall candidate block pools each candidate's out-of-fold predictions over all environments
    assert res.cv_metrics["overall"]["candidates"]["global"]["n"] == len(df)
    assert res.cv_metrics["overall"]["framework"]["stations"] == 22


def test_fallback_levels_group_then_global(trained):
    df, res, _ = trained
    envs = res.cv_metrics["environments"]
    assert {e: b["level"] for e, b in envs.items()} == {
        "bare_B": "environment", "cropland_C": "environment", "cropland_D": "group", "forest_C": "global"}
    assert res.ctx.plan["cropland_D"]["unit"] == "cropland" and res.ctx.plan["forest_C"]["unit"] == "global"
    # group models for every qualifying group (bare, cropland), not for forest (3 stations)
    assert set(res.units) == {"bare_B", "cropland_C", "bare", "cropland", "global"}
    assert envs["forest_C"]["selected"] == "global" and envs["forest_C"]["runner_up"] is None
    assert list(envs["forest_C"]["candidates"]) == ["global"]
    assert envs["cropland_D"]["selected"] == res.units["cropland"].selected
    assert envs["cropland_D"]["n"] == 36 and envs["cropland_D"]["stations"] == 3
    assert res.ctx.plan["forest_C"]["fallback_chain"] == ["forest_C", "forest", "global"]
    # the figures of a fallback environment are its own rows of the pooled unit
    grp = res.units["cropland"].oof
    np.testing.assert_array_equal(
        np.sort(grp.loc[grp.env == "cropland_D", "_row"].to_numpy()),
        np.sort(res.oof.loc[res.oof.env == "cropland_D", "_row"].to_numpy()))
    # without group models, a fallback environment's group is still trained (it is needed)
    plan, units = selection.plan_levels(res.oof.assign(env=res.oof["env"]), tiny_cfg(group_models=False))
    assert units == {"bare_B": "environment", "cropland_C": "environment", "cropland": "group", "global": "global"}


def test_residual_candidate_falls_back_to_training_mean_without_physics():
    df = make_env("bare_B", 4, 10, "wcm", 41)
    feats = candidates.add_physics(df, None)
    feats.loc[feats.index[:5], "mv_wcm"] = np.nan
    m = candidates.fit_candidate("xgb_residual", feats, candidates.resolve_features(feats)["xgb_residual"], tiny_cfg())
    assert m.base_fallback == pytest.approx(df["ssm"].mean())
    off = candidates.offset("xgb_residual", feats, m.base_fallback)
    assert np.all(off[:5] == m.base_fallback) and np.all((off[5:] >= 0) & (off[5:] <= 0.6))
    assert np.isfinite(candidates.predict_candidate(m, feats)).all()
    # physics predicts mv_wcm as is: NaN stays missing, nothing is clipped
    p = candidates.predict_candidate(candidates.fit_candidate("physics", feats, [], tiny_cfg()), feats)
    np.testing.assert_array_equal(p, feats["mv_wcm"].to_numpy())


def test_add_physics_replaces_stale_features_and_keeps_only_mask_bits():
    df = make_env("bare_B", 2, 5, "wcm", 51)
    stale = coupled_features(df.assign(ndvi=0.9))  # wrong features, as in a table made with other params
    stale["qc"] = stale["qc"] | 64  # FROZEN: a mask bit that must survive
    fresh = candidates.add_physics(stale.assign(ndvi=df["ndvi"]), None)
    expected = coupled_features(df)
    np.testing.assert_array_equal(fresh["mv_wcm"].to_numpy(), expected["mv_wcm"].to_numpy())
    np.testing.assert_array_equal(fresh["qc"].to_numpy(), expected["qc"].to_numpy() | 64)
    assert fresh[["lc_bare", "climate_B"]].eq(1).all().all() and fresh["lc_cropland"].eq(0).all()


# ------------------------------------------------------------------------------------ uncertainty


def test_conformal_shift_known_answer():
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1, 20000)
    s_lo, s_hi = selection.conformal_shift(np.zeros_like(y), np.zeros_like(y), y, (0.05, 0.95))
    # the 95th percentile of a standard normal is 1.645; SE of the sample quantile at n=20000 is ~0.015
    assert s_lo == pytest.approx(1.645, abs=0.05) and s_hi == pytest.approx(1.645, abs=0.05)


def test_quantile_intervals_cover_nominally_on_held_out_stations():
    # heteroscedastic synthetic truth: the noise grows with precipitation, so a good interval widens with it
    rng = np.random.default_rng(61)
    df = make_env("cropland_C", 24, 40, "precip", 62)
    sd = 0.01 + 0.05 * (df["precip_mm"] / df["precip_mm"].max())
    df["ssm"] = 0.1 + 0.2 * (1 - np.exp(-df["precip_mm"] / 15.0)) + rng.normal(0, 1, len(df)) * sd
    cfg = tiny_cfg(candidates=["xgb_raw"], group_models=False, k_folds=5, **GLOBAL_WCM_ONLY,
                   xgb=XGBConfig(n_estimators=40, max_depth=3, learning_rate=0.2, nthread=1))
    res = selection.train_models(df, cfg)
    env = res.cv_metrics["environments"]["cropland_C"]
    # Tolerance: 960 held-out rows give a binomial SE of sqrt(0.9*0.1/960) = 0.01; station clustering
    # and the 1/n conservatism of the conformal step add a little, so +-0.04 (4 SE) around 0.90.
    assert env["coverage_p05_p95"] == pytest.approx(0.90, abs=0.04)
    # the raw XGBoost quantiles are in the right region too (no conformal help), looser
    assert 0.7 <= env["coverage_p05_p95_raw"] <= 0.98
    oof = res.units["cropland_C"].oof
    width = oof["hi"] - oof["lo"]
    assert width.mean() < 0.8 * (np.quantile(df["ssm"], 0.95) - np.quantile(df["ssm"], 0.05))
    assert np.corrcoef(width, sd.to_numpy()[oof["_row"]])[0, 1] > 0.3
    # 'none' leaves the raw quantiles as they are
    none = cfg.model_copy(update={"interval_calibration": "none"})
    lo, hi, shift = selection._served_intervals(oof, oof["lo_raw"].to_numpy(), oof["hi_raw"].to_numpy(),
                                                oof["ssm"].to_numpy(), none)
    assert shift == (0.0, 0.0) and np.array_equal(lo, oof["lo_raw"].to_numpy())


def _trees(booster) -> list[dict]:
    import json

    model = json.loads(bytes(booster.save_raw("json")))
    return model["learner"]["gradient_booster"]["model"]["trees"]


def _depth(tree: dict) -> int:
    left, right = tree["left_children"], tree["right_children"]

    def d(i: int) -> int:
        return 0 if left[i] == -1 else 1 + max(d(left[i]), d(right[i]))

    return d(0)


def test_quantile_models_have_their_own_rounds_depth_and_layout():
    df = make_env("cropland_C", 6, 20, "precip", 71)
    feats = candidates.add_physics(df, None)
    names = candidates.resolve_features(feats)["xgb_raw"]
    xgb_cfg = dict(n_estimators=20, max_depth=5, learning_rate=0.2, nthread=1, quantile_n_estimators=8)
    cfg = tiny_cfg(xgb=XGBConfig(**xgb_cfg, quantile_max_depth=2))
    p = candidates.xgb_params(cfg, 1, quantiles=(0.05, 0.95))
    assert p["max_depth"] == 2 and p["eta"] == pytest.approx(0.2 * 20 / 8) and "multi_strategy" not in p
    assert candidates.xgb_params(cfg, 1)["max_depth"] == 5   # the point models keep theirs
    assert candidates.xgb_params(tiny_cfg(xgb=XGBConfig(**xgb_cfg, quantile_max_depth=None)), 1,
                                 quantiles=(0.05, 0.95))["max_depth"] == 5   # null: the point models' depth
    q = candidates.fit_quantiles("xgb_raw", feats, names, cfg)
    trees = _trees(q.booster)
    assert len(trees) == 16 and max(_depth(t) for t in trees) == 2   # 8 rounds x 2 quantiles, depth 2
    # one vector-leaf tree per round: both quantiles from the same 8 trees, one predict call
    vcfg = tiny_cfg(xgb=XGBConfig(**xgb_cfg, quantile_max_depth=2, quantile_multi_strategy="multi_output_tree"))
    assert candidates.xgb_params(vcfg, 1, quantiles=(0.05, 0.95))["multi_strategy"] == "multi_output_tree"
    v = candidates.fit_quantiles("xgb_raw", feats, names, vcfg)
    assert len(_trees(v.booster)) == 8
    lo, hi = candidates.predict_quantiles(v, feats)
    assert np.all(lo <= hi) and np.isfinite(lo).all() and np.mean(hi - lo) > 0
    back = candidates.FittedModel(v.name, v.kind, v.features, candidates.booster_from_bytes(v.to_bytes()),
                                  v.base_fallback, v.quantiles)
    for a, b in zip(candidates.predict_quantiles(back, feats), (lo, hi)):
        np.testing.assert_array_equal(a, b)


def test_pooled_conformal_scope_gives_every_unit_one_cross_fitted_correction():
    df = pd.concat([make_env("cropland_C", 8, 15, "precip", 81), make_env("bare_B", 8, 15, "precip", 82)],
                   ignore_index=True)
    cfg = tiny_cfg(candidates=["xgb_raw", "global"], conformal_scope="pooled", **GLOBAL_WCM_ONLY)
    res = selection.train_models(df, cfg)
    o = res.cv_metrics["overall"]
    served = tuple(o["conformal_shift_pooled"])
    assert o["conformal_scope"] == "pooled" and {u.interval_shift for u in res.units.values()} == {served}
    oof = res.oof   # each matchup once, as served and scored
    lo_raw, hi_raw, y, fold = (oof[c].to_numpy() for c in ("lo_raw", "hi_raw", "ssm", "fold"))
    assert served == selection.conformal_shift(lo_raw, hi_raw, y, cfg.quantiles)
    for f in np.unique(fold):   # fold f's bounds: the correction of the other folds' rows
        s_lo, s_hi = selection.conformal_shift(lo_raw[fold != f], hi_raw[fold != f], y[fold != f], cfg.quantiles)
        t = fold == f
        np.testing.assert_allclose(oof["lo"].to_numpy()[t], np.minimum(lo_raw[t] - s_lo, hi_raw[t] + s_hi))
        np.testing.assert_allclose(oof["hi"].to_numpy()[t], np.maximum(lo_raw[t] - s_lo, hi_raw[t] + s_hi))
    unit = selection.train_models(df, cfg.model_copy(update={"conformal_scope": "unit"}))
    assert unit.cv_metrics["overall"]["conformal_scope"] == "unit"
    assert len({u.interval_shift for u in unit.units.values()}) > 1   # each unit its own


# ------------------------------------------------------------------------------------ cv_metrics


def test_cv_metrics_layout_is_the_contract(trained):
    _, res, _ = trained
    cv = res.cv_metrics
    assert list(cv) == ["overall", "environments"]
    assert list(cv["overall"])[:2] == ["framework", "candidates"]
    metric_keys = list(selection.CONTRACT_METRIC_KEYS)
    assert list(cv["overall"]["framework"])[:6] == metric_keys
    assert set(cv["overall"]["candidates"]) == {"physics", "xgb_raw", "global"}
    for m in cv["overall"]["candidates"].values():
        assert list(m)[:6] == metric_keys
    assert set(cv["environments"]) == {"cropland_C", "cropland_D", "bare_B", "forest_C"}
    for env, blk in cv["environments"].items():
        assert list(blk)[:8] == list(selection.CONTRACT_ENV_KEYS), env
        assert list(blk["framework"])[:6] == metric_keys
        for m in blk["candidates"].values():
            assert list(m)[:6] == metric_keys
        assert blk["level"] in ("environment", "group", "global")
        assert isinstance(blk["n"], int) and isinstance(blk["stations"], int)
        assert isinstance(blk["coverage_p05_p95"], float) and 0 <= blk["coverage_p05_p95"] <= 1
        assert blk["selected"] in blk["candidates"]
    # overall framework pools exactly the environments' out-of-fold rows
    assert cv["overall"]["framework"]["n"] == sum(b["framework"]["n"] for b in cv["environments"].values())
    assert cv["overall"]["framework_station_median"]["stations"] == 22


def test_training_is_deterministic():
    df = pd.concat([make_env("cropland_C", 6, 10, "precip", 81), make_env("bare_B", 6, 10, "wcm", 82)],
                   ignore_index=True)
    cfg = tiny_cfg(candidates=["xgb_coupled", "xgb_residual"], group_models=False, **GLOBAL_WCM_ONLY)
    a = selection.train_models(df, cfg)
    b = selection.train_models(df.sample(frac=1.0, random_state=1), cfg)  # row order must not matter
    assert set(a.units) == set(b.units)
    for key in a.units:
        assert a.units[key].point_model == b.units[key].point_model, key
        assert a.units[key].quantile_model == b.units[key].quantile_model, key
    assert a.cv_metrics == b.cv_metrics


def test_step_by_step_path_for_spark_equals_train_models():
    """prepare -> global -> per-unit (shuffled rows, results shipped as frames) -> finalize gives what
    train_models gives: the path whose per-unit step the Spark layer maps over an RDD."""
    df = pd.concat([make_env("cropland_C", 6, 10, "precip", 91), make_env("cropland_D", 6, 10, "precip", 92)],
                   ignore_index=True)
    cfg = tiny_cfg(candidates=["xgb_raw", "xgb_residual", "global"], **GLOBAL_WCM_ONLY)
    whole = selection.train_models(df, cfg)
    ctx, table = selection.prepare_training(df, cfg)
    glob = selection.train_global(table, ctx)
    table = selection.attach_global_oof(table, glob)
    shipped = [selection.train_unit(k, d.sample(frac=1.0, random_state=0), ctx)
               for k, d in selection.unit_frames(table, ctx).items()]
    units = {"global": glob, **{r.key: r for r in shipped}}
    step = selection.finalize_training(ctx, units)
    assert step.cv_metrics == whole.cv_metrics
    assert set(step.units) == {"cropland_C", "cropland_D", "cropland", "global"}
    for k in step.units:
        assert step.units[k].point_model == whole.units[k].point_model


@pytest.mark.spark
def test_training_units_on_spark_equal_the_single_process_training(spark):
    """The units trained as Spark tasks (train_on_spark) give the models and CV figures of train_models."""
    from ssm_spark.models.spark_train import train_on_spark

    df = pd.concat([make_env("cropland_C", 6, 10, "precip", 93), make_env("bare_B", 6, 10, "wcm", 94)],
                   ignore_index=True)
    cfg = tiny_cfg(candidates=["physics", "xgb_coupled", "global"], **GLOBAL_WCM_ONLY)
    whole = selection.train_models(df, cfg, nthread=1)
    on_spark = train_on_spark(spark, df, cfg, driver_threads=1)
    assert set(on_spark.units) == set(whole.units) and on_spark.seconds["units_on"] == "spark"
    for k in whole.units:
        assert on_spark.units[k].selected == whole.units[k].selected
        assert on_spark.units[k].point_model == whole.units[k].point_model, k
    fw_s, fw_w = on_spark.cv_metrics["overall"]["framework"], whole.cv_metrics["overall"]["framework"]
    assert fw_s == pytest.approx(fw_w, rel=1e-12)


def test_offset_of_a_mapping_is_the_offset_of_its_frame():
    """candidates.offset takes the columns as arrays (the product's column path) with the same result."""
    mv = np.array([0.1, np.nan, 0.9, -0.2, 0.3])
    frame = pd.DataFrame({"mv_wcm": mv, "mv_physics": np.clip(mv, 0, 0.5), "mv_change_detection": mv[::-1]})
    for cols in (list(frame.columns), ["mv_wcm"]):
        for name in candidates.CANDIDATES:
            want = candidates.offset(name, frame[cols], 0.25)
            got = candidates.offset(name, {c: frame[c].to_numpy() for c in cols}, 0.25)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {cols}")
    with pytest.raises(InputError, match="mv_wcm"):
        candidates.offset("physics", {"mv_cd": mv}, None)
