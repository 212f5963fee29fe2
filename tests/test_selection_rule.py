"""The selection rule: an environment's own model replaces the global one only on evidence."""

from __future__ import annotations

import numpy as np

from ssm_spark.config import TrainConfig
from ssm_spark.models.candidates import blend
from ssm_spark.models.selection import choose_model


def _data(seed=0, n_st=12, per=30):
    rng = np.random.default_rng(seed)
    st = np.repeat(np.arange(n_st), per)
    y = rng.uniform(0.05, 0.4, n_st * per)
    return rng, st, y


def test_noise_never_replaces_the_global_model():
    rng, st, y = _data()
    glob = y + rng.normal(0, 0.04, y.size)
    wins = 0
    for seed in range(20):   # an own candidate exactly as good as global, different noise
        own = y + np.random.default_rng(100 + seed).normal(0, 0.04, y.size)
        sel, w, ev = choose_model({"xgb_coupled": own, "global": glob}, y, TrainConfig(selection="blend"), stations=st)
        wins += sel != "global"
    # a blend of two equally good, independent models is better (variance halves): that must win
    assert wins >= 15
    worse = glob + rng.normal(0, 0.03, y.size)   # the global model's errors and more: no mix helps
    sel, w, ev = choose_model({"xgb_coupled": worse, "global": glob}, y, TrainConfig(selection="blend"), stations=st)
    assert sel == "global" and w == 1.0 and ev["own"] == "xgb_coupled"


def test_a_clearly_better_own_model_is_served_and_paired_gives_weight_one():
    rng, st, y = _data(1)
    glob = y + rng.normal(0, 0.06, y.size)
    own = y + rng.normal(0, 0.02, y.size)
    sel, w, ev = choose_model({"xgb_raw": own, "global": glob}, y, TrainConfig(selection="blend"), stations=st)
    assert sel == "xgb_raw" and 0.7 <= w <= 1.0 and ev["t_stat"] > 1.64
    sel, w, _ = choose_model({"xgb_raw": own, "global": glob}, y, TrainConfig(selection="paired"), stations=st)
    assert (sel, w) == ("xgb_raw", 1.0)


def test_one_lucky_station_is_not_evidence():
    rng, st, y = _data(2)
    glob = y + rng.normal(0, 0.04, y.size)
    own = glob.copy()
    lucky = st == 0
    own[lucky] = y[lucky]       # better at one station only: large mean gain, no consistency
    sel, w, ev = choose_model({"xgb_raw": own, "global": glob}, y, TrainConfig(selection="blend"), stations=st)
    assert sel == "global"
    assert np.isfinite(ev["t_stat"]) and ev["t_stat"] < 1.64


def test_best_rule_and_blend_helper():
    rng, st, y = _data(3)
    a = y + rng.normal(0, 0.02, y.size)
    b = y + rng.normal(0, 0.05, y.size)
    sel, w, _ = choose_model({"xgb_raw": a, "global": b}, y, TrainConfig(selection="best"), stations=st)
    assert (sel, w) == ("xgb_raw", 1.0)
    own = np.array([0.1, np.nan, 0.3])
    np.testing.assert_allclose(blend(own, np.array([0.3, 0.2, 0.1]), 0.5), [0.2, 0.2, 0.2])


def test_a_misspelt_excluded_feature_is_refused_by_name():
    import pandas as pd
    import pytest

    from ssm_spark.errors import InputError
    from ssm_spark.models.selection import prepare_training

    rng = np.random.default_rng(5)
    n = 60
    df = pd.DataFrame({"station_id": np.repeat([f"S{i}" for i in range(6)], 10), "env": "cropland_C",
                       "date": np.tile(pd.date_range("2024-04-01", periods=10).date, 6),
                       "vv_db": rng.normal(-11, 1, n), "incidence_deg": 38.0, "ndvi": 0.4,
                       "ssm": rng.uniform(0.1, 0.3, n)})
    with pytest.raises(InputError, match=r"unknown feature\(s\) \['elevation'\]"):
        prepare_training(df, TrainConfig(exclude_features=["elevation"], k_folds=3))


def test_the_pooled_mix_is_served_only_on_evidence_with_shrink_z():
    from ssm_spark.models.choice import _pooled_weight

    rng, st, y = _data(4)
    glob = y + rng.normal(0, 0.04, y.size)
    # one lucky station: the mix lowers the squared error (a weight is found) but the stations disagree
    own = glob.copy()
    lucky = st == 0
    own[lucky] = y[lucky]
    w, t = _pooled_weight(own, glob, y, st)
    assert w > 0 and np.isfinite(t) and t < 1.64          # without the test the mix is served
    assert _pooled_weight(own, glob, y, st, z=1.64) == (0.0, t)   # with it: the global model
    # an own model that is better at every station: the mix passes and keeps its weight
    good = y + rng.normal(0, 0.02, y.size)
    w, t = _pooled_weight(good, glob, y, st, z=1.64)
    assert w >= 0.5 and t > 1.64 and _pooled_weight(good, glob, y, st) == (w, t)
    # an own model that only adds noise: no weight, with or without the test
    assert _pooled_weight(glob + rng.normal(0, 0.03, y.size), glob, y, st, z=1.64)[0] == 0.0
