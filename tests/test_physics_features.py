"""coupled_features: the DataFrame transform the Spark layer wraps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssm_spark.errors import InputError
from ssm_spark.physics import features, oh, wcm
from ssm_spark.physics.features import DEFAULT_WCM_PARAMS, coupled_features
from ssm_spark.physics.qc import QC

P = DEFAULT_WCM_PARAMS


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "vv_db": [-11.0, -9.0, -16.5, np.nan, -12.0],
            "vh_db": [-18.0, -19.5, -17.0, -18.0, -17.0],
            "incidence_deg": [38.0, 33.0, 41.0, 38.0, 75.0],
            "ndvi": [0.4, 0.2, 0.9, 0.5, 0.3],
            "env": ["cropland_C", "cropland_C", "cropland_C", "grass_B", None],
        },
        index=pd.Index([10, 11, 12, 13, 14], name="pixel"),
    )


def test_columns_dtypes_and_index():
    df = frame()
    before = df.copy()
    out = coupled_features(df)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    assert list(out.columns) == list(df.columns) + list(features.FEATURE_COLUMNS)
    assert out.index.equals(df.index)
    assert out["qc"].dtype == np.uint16
    assert out["mv_wcm"].dtype == np.float64


def test_values_match_the_kernels():
    df = frame()
    out = coupled_features(df)
    soil_vv, t2_vv, _ = wcm.inverse(df.vv_db, df.ndvi, df.incidence_deg, P["vv"]["A"], P["vv"]["B"])
    soil_vh, t2_vh, _ = wcm.inverse(df.vh_db, df.ndvi, df.incidence_deg, P["vh"]["A"], P["vh"]["B"])
    np.testing.assert_allclose(out["sigma0_soil_vv_db"], soil_vv, equal_nan=True)
    np.testing.assert_allclose(out["tau2_vh"], t2_vh, equal_nan=True)
    # row 0: mv from VV: (soil_vv - C) / D
    assert out["mv_wcm"].iloc[0] == pytest.approx((soil_vv[0] - P["vv"]["C"]) / P["vv"]["D"])
    mv_oh, ks_oh, _ = oh.inverse(soil_vv, soil_vh, df.incidence_deg)
    np.testing.assert_allclose(out["mv_oh"], mv_oh, equal_nan=True)
    np.testing.assert_allclose(out["ks_oh"], ks_oh, equal_nan=True)
    np.testing.assert_allclose(out["cross_pol_ratio_db"], df.vh_db - df.vv_db, equal_nan=True)


def test_mv_wcm_falls_back_to_vh_and_qc_ors_everything():
    out = coupled_features(frame())
    # row 2: VV -16.5 dB under NDVI 0.9 is darker than the default canopy alone -> VV soil NaN,
    # mv from VH instead, flagged VEGETATION_DOMINATED
    soil_vh = out["sigma0_soil_vh_db"].iloc[2]
    assert np.isnan(out["sigma0_soil_vv_db"].iloc[2])
    assert out["mv_wcm"].iloc[2] == pytest.approx((soil_vh - P["vh"]["C"]) / P["vh"]["D"])
    assert out["qc"].iloc[2] & QC.VEGETATION_DOMINATED
    # row 3: VV missing -> MISSING_INPUT, mv from VH, no Oh
    assert out["qc"].iloc[3] & QC.MISSING_INPUT
    assert np.isfinite(out["mv_wcm"].iloc[3]) and np.isnan(out["mv_oh"].iloc[3])
    # row 4: 75 deg -> INCIDENCE_OUT_OF_RANGE
    assert out["qc"].iloc[4] & QC.INCIDENCE_OUT_OF_RANGE
    # the qc column is the OR of the kernels' flags: nothing flagged that no step flagged
    assert not out["qc"].iloc[0] & (QC.MISSING_INPUT | QC.VEGETATION_DOMINATED)


def test_mv_out_of_plausible_range_is_flagged_not_clipped():
    df = pd.DataFrame({"vv_db": [-3.0], "vh_db": [-12.0], "incidence_deg": [38.0], "ndvi": [0.1]})
    out = coupled_features(df)
    assert out["mv_wcm"].iloc[0] > 0.6
    assert out["qc"].iloc[0] & QC.WCM_MV_OUT_OF_RANGE


def test_environment_parameters_are_used():
    params = {
        "entries": [
            {"env": "global", "pol": "vv", "A": 0.1, "B": 0.4, "C": -14.0, "D": 18.0},
            {"env": "global", "pol": "vh", "A": 0.025, "B": 0.3, "C": -25.0, "D": 18.0},
            {"env": "cropland", "pol": "vv", "A": 0.05, "B": 0.2, "C": -10.0, "D": 30.0},
            {"env": "cropland", "pol": "vh", "A": 0.02, "B": 0.2, "C": -20.0, "D": 25.0},
        ]
    }
    df = pd.DataFrame(
        {
            "vv_db": [-11.0, -11.0],
            "vh_db": [-18.0, -18.0],
            "incidence_deg": [38.0, 38.0],
            "ndvi": [0.4, 0.4],
            "env": ["cropland_C", "forest_D"],
        }
    )
    out = coupled_features(df, params)
    s0, _, _ = wcm.inverse(-11.0, 0.4, 38.0, 0.05, 0.2)
    s1, _, _ = wcm.inverse(-11.0, 0.4, 38.0, 0.1, 0.4)
    assert out["mv_wcm"].iloc[0] == pytest.approx((s0 + 10.0) / 30.0)  # cropland group
    assert out["mv_wcm"].iloc[1] == pytest.approx((s1 + 14.0) / 18.0)  # global


def test_missing_vh_drops_the_features_that_need_it():
    df = frame().drop(columns=["vh_db"])
    out = coupled_features(df)
    added = set(out.columns) - set(df.columns)
    assert added == {"sigma0_soil_vv_db", "tau2_vv", "mv_wcm", "qc"}


def test_missing_vv_uses_vh():
    df = frame().drop(columns=["vv_db"])
    out = coupled_features(df)
    assert set(out.columns) - set(df.columns) == {"sigma0_soil_vh_db", "tau2_vh", "mv_wcm", "qc"}
    expected = (out["sigma0_soil_vh_db"] - P["vh"]["C"]) / P["vh"]["D"]
    np.testing.assert_allclose(out["mv_wcm"], expected, equal_nan=True)


def test_required_inputs_raise_named_errors():
    df = frame()
    with pytest.raises(InputError, match="'ndvi'"):
        coupled_features(df.drop(columns=["ndvi"]))
    with pytest.raises(InputError, match="neither 'vv_db' nor 'vh_db'"):
        coupled_features(df.drop(columns=["vv_db", "vh_db"]))
    with pytest.raises(InputError, match="nominal_incidence_deg"):
        coupled_features(df.drop(columns=["incidence_deg"]))
    out = coupled_features(df.drop(columns=["incidence_deg"]), nominal_incidence_deg=38.0)
    assert out["sigma0_soil_vv_db"].iloc[0] == pytest.approx(
        coupled_features(df)["sigma0_soil_vv_db"].iloc[0]
    )


def test_existing_qc_bits_are_kept_and_names_are_parameters():
    df = frame().rename(columns={"ndvi": "veg", "vv_db": "VV"})
    df["flags"] = np.array([QC.MASKED_WATER, 0, 0, 0, 0], dtype=np.uint16)
    out = coupled_features(df, veg_col="veg", vv_col="VV", qc_col="flags", mv_wcm_col="sm_phys")
    assert "sm_phys" in out.columns and "mv_wcm" not in out.columns
    assert out["flags"].iloc[0] & QC.MASKED_WATER
    assert out["flags"].dtype == np.uint16


def test_mapping_input_returns_arrays():
    df = frame()
    res = coupled_features({c: df[c].to_numpy() for c in df.columns})
    assert isinstance(res, dict)
    np.testing.assert_allclose(res["mv_wcm"], coupled_features(df)["mv_wcm"], equal_nan=True)
    assert res["qc"].dtype == np.uint16
    with pytest.raises(InputError, match="DataFrame or a mapping"):
        coupled_features([1, 2, 3])


def test_empty_frame_is_fine():
    out = coupled_features(frame().iloc[:0])
    assert len(out) == 0 and "qc" in out.columns


def test_physics_has_no_spark_import():
    import pathlib

    pkg = pathlib.Path(features.__file__).parent
    for path in pkg.glob("*.py"):
        text = path.read_text()
        assert "import pyspark" not in text and "from pyspark" not in text, path.name


def test_a_nominal_angle_gives_the_bits_of_a_constant_incidence_column():
    """Without an incidence column the kernels take the nominal angle as one value broadcast against
    the rows (its cosines and the Oh angular factor computed once): the same bits, QC included, as a
    column holding that angle at every row; and the same for the WCM and Oh kernels given a scalar
    angle, also at angles outside the valid range and at NaN."""
    rng = np.random.default_rng(5)
    n = 4000
    df = pd.DataFrame({"vv_db": rng.uniform(-25, -3, n), "vh_db": rng.uniform(-32, -10, n),
                       "ndvi": rng.uniform(-0.1, 0.95, n), "env": rng.choice(["cropland_C", "grass_B", None], n)})
    df.loc[::97, "vv_db"] = np.nan
    for theta in (38.0, 5.0, 80.0, 95.0):
        nominal = coupled_features(df, nominal_incidence_deg=theta)
        column = coupled_features(df.assign(incidence_deg=theta)).drop(columns="incidence_deg")
        pd.testing.assert_frame_equal(nominal, column, check_exact=True)
    s, v = df["vv_db"].to_numpy(), df["ndvi"].to_numpy()
    a, b = np.full(n, 0.1), np.full(n, 0.4)
    for theta in (38.0, 9.0, 75.0, 90.0, np.nan):
        for x, y in zip(wcm.inverse(s, v, theta, a, b), wcm.inverse(s, v, np.full(n, theta), a, b)):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(oh.inverse(s, df["vh_db"].to_numpy(), theta), oh.inverse(s, df["vh_db"].to_numpy(), np.full(n, theta))):
            np.testing.assert_array_equal(x, y)


def test_flag_where_is_the_flag_where_true():
    from ssm_spark.physics.qc import QC_DTYPE, flag_where

    cond = np.array([[True, False, True], [False, False, True]])
    for flag in (QC.VEGETATION_DOMINATED, QC.PREDICTION_OUT_OF_RANGE, QC.OH_OUT_OF_RANGE | QC.OH_NO_SOLUTION):
        got = flag_where(cond, flag)
        assert got.dtype == QC_DTYPE and got.shape == cond.shape
        np.testing.assert_array_equal(got, np.where(cond, int(flag), 0))
    zero_d = flag_where(True, QC.STEEP_SLOPE)
    assert isinstance(zero_d, np.ndarray) and zero_d.shape == () and int(zero_d) == int(QC.STEEP_SLOPE)
