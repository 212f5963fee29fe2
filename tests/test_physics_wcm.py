"""Known-answer, round-trip, monotonicity and flag tests of ssm_spark.physics.wcm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm_spark.errors import InputError
from ssm_spark.physics import oh, wcm
from ssm_spark.physics.qc import QC, describe

FAST = settings(max_examples=200, deadline=None)


def test_forward_known_answer():
    # soil -15 dB, V 0.5, theta 40 deg, A 0.1, B 0.4
    cos_t = math.cos(math.radians(40.0))  # 0.7660444
    t2 = math.exp(-2 * 0.4 * 0.5 / cos_t)  # exp(-0.5221629) = 0.5932360
    veg = 0.1 * 0.5 * cos_t * (1 - t2)  # 0.0383022 * 0.4067640 = 0.0155800
    soil = 10 ** (-15 / 10)  # 0.0316228
    total = veg + t2 * soil  # 0.0155800 + 0.0187598 = 0.0343397
    expected_db = 10 * math.log10(total)  # -14.6420
    assert t2 == pytest.approx(0.5932360, abs=1e-7)
    assert total == pytest.approx(0.0343397, abs=1e-7)
    assert expected_db == pytest.approx(-14.6420, abs=1e-4)
    assert wcm.forward(-15.0, 0.5, 40.0, 0.1, 0.4) == pytest.approx(expected_db, abs=1e-12)
    assert wcm.tau2(0.5, 40.0, 0.4) == pytest.approx(t2, rel=1e-12)


def test_bare_soil_passes_through():
    # V = 0: tau2 = 1 and no canopy term, whatever A and B
    assert wcm.forward(-12.3, 0.0, 35.0, 0.2, 0.8) == pytest.approx(-12.3)
    soil_db, t2, flags = wcm.inverse(-12.3, 0.0, 35.0, 0.2, 0.8)
    assert soil_db == pytest.approx(-12.3)
    assert t2 == 1.0
    assert flags == 0


@FAST
@given(
    soil_db=st.floats(-30.0, -2.0),
    v=st.floats(0.0, 1.0),
    theta=st.floats(20.0, 60.0),
    a=st.floats(0.0, 0.3),
    b=st.floats(0.0, 1.0),
)
def test_inverse_of_forward_returns_soil(soil_db, v, theta, a, b):
    total = wcm.forward(soil_db, v, theta, a, b)
    back, t2, flags = wcm.inverse(total, v, theta, a, b)
    assert flags == 0
    assert back == pytest.approx(soil_db, abs=1e-6)
    assert t2 == pytest.approx(wcm.tau2(v, theta, b))


@FAST
@given(v1=st.floats(0.0, 5.0), v2=st.floats(0.0, 5.0), theta=st.floats(10.0, 70.0), b=st.floats(0.05, 2.0))
def test_tau2_decreases_with_vegetation(v1, v2, theta, b):
    lo, hi = min(v1, v2), max(v1, v2)
    if hi - lo < 1e-3:
        return
    assert wcm.tau2(hi, theta, b) < wcm.tau2(lo, theta, b)
    assert 0.0 < wcm.tau2(hi, theta, b) <= 1.0


def test_tau2_decreases_with_incidence():
    # longer slant path through the canopy at larger angles
    t = wcm.tau2(0.6, np.array([20.0, 40.0, 60.0]), 0.4)
    assert np.all(np.diff(t) < 0)


def test_non_positive_soil_term_is_nan_and_flagged_not_clipped():
    a, b, v, theta = 0.2, 0.5, 0.9, 40.0
    cos_t = math.cos(math.radians(theta))
    t2 = math.exp(-2 * b * v / cos_t)
    veg = a * v * cos_t * (1 - t2)  # canopy alone: 0.0942...
    below = 10 * math.log10(0.8 * veg)  # observation darker than the canopy model alone
    exactly = 10 * math.log10(veg)  # soil term exactly 0
    soil_db, t2_out, flags = wcm.inverse(np.array([below, exactly, -5.0]), v, theta, a, b)
    assert np.isnan(soil_db[0]) and np.isnan(soil_db[1])
    assert np.isfinite(soil_db[2])
    assert flags[0] & QC.VEGETATION_DOMINATED
    assert flags[1] & QC.VEGETATION_DOMINATED
    assert flags[2] == 0
    np.testing.assert_allclose(t2_out, t2)  # tau2 is still reported
    assert describe(flags[0]) == ["VEGETATION_DOMINATED"]


def test_incidence_outside_10_70_is_flagged_but_computed_inside_0_90():
    soil_db, _, flags = wcm.inverse(-12.0, 0.3, np.array([5.0, 40.0, 75.0, 95.0]), 0.1, 0.3)
    assert [bool(f & QC.INCIDENCE_OUT_OF_RANGE) for f in flags] == [True, False, True, True]
    assert np.isfinite(soil_db[:3]).all()
    assert np.isnan(soil_db[3])  # cos(theta) < 0: undefined


def test_negative_vegetation_and_missing_inputs_are_flagged():
    soil_db, t2, flags = wcm.inverse(
        np.array([-12.0, np.nan, -12.0]), np.array([-0.1, 0.3, np.nan]), 38.0, 0.1, 0.3
    )
    assert np.isnan(soil_db).all()
    assert flags[0] == QC.VEGETATION_OUT_OF_RANGE
    assert np.isnan(t2[0])
    assert flags[1] == QC.MISSING_INPUT
    assert flags[2] & QC.MISSING_INPUT
    assert flags.dtype == np.uint16


def test_broadcasting():
    v = np.linspace(0.1, 0.8, 4)
    theta = np.array([[30.0], [40.0], [45.0]])
    total = wcm.forward(-14.0, v, theta, 0.12, 0.4)
    assert total.shape == (3, 4)
    soil_db, t2, flags = wcm.inverse(total, v, theta, 0.12, 0.4)
    assert soil_db.shape == t2.shape == flags.shape == (3, 4)
    np.testing.assert_allclose(soil_db, -14.0, atol=1e-9)


def test_negative_parameters_are_rejected():
    with pytest.raises(InputError, match="'A'"):
        wcm.forward(-12.0, 0.3, 40.0, -0.1, 0.3)
    with pytest.raises(InputError, match="'B'"):
        wcm.inverse(-12.0, 0.3, 40.0, 0.1, -0.3)


def test_soil_term_round_trip_known_answer():
    # C -15 dB, D 20 dB per m3/m3: soil -11 dB -> mv = (-11 + 15) / 20 = 0.2
    assert wcm.mv_from_soil_db(-11.0, -15.0, 20.0) == pytest.approx(0.2)
    assert wcm.soil_db_from_mv(0.2, -15.0, 20.0) == pytest.approx(-11.0)
    assert np.isnan(wcm.mv_from_soil_db(-11.0, -15.0, 0.0))
    assert np.isnan(wcm.mv_from_soil_db(np.nan, -15.0, 20.0))


def test_db_conversions():
    assert wcm.db_to_linear(-10.0) == pytest.approx(0.1)
    assert wcm.linear_to_db(0.01) == pytest.approx(-20.0)
    assert np.isnan(wcm.linear_to_db(0.0))
    assert np.isnan(wcm.linear_to_db(-1.0))


# ---------------------------------------------------------------------------------- VWC from NDVI


def test_vwc_from_ndvi_known_answer():
    # foliage at NDVI 0.6: 1.9134*0.36 - 0.3215*0.6 = 0.688824 - 0.1929 = 0.495924
    assert wcm.vwc_from_ndvi(0.6) == pytest.approx(0.495924, abs=1e-9)
    # stem: 3.0 * (0.85 - 0.15) / (1 - 0.15) = 2.1 / 0.85 = 2.4705882
    total = wcm.vwc_from_ndvi(0.6, stem_factor=3.0, ndvi_max=0.85, ndvi_min=0.15)
    assert total == pytest.approx(0.495924 + 2.4705882, abs=1e-6)


def test_vwc_from_ndvi_floors_the_foliage_dip_and_rejects_water():
    # 1.9134*0.1^2 - 0.3215*0.1 = -0.013016: the regression's dip is floored at 0
    assert wcm.vwc_from_ndvi(0.1) == 0.0
    assert np.isnan(wcm.vwc_from_ndvi(-0.2))
    v = wcm.vwc_from_ndvi(np.linspace(0.2, 0.95, 20))
    assert np.all(np.diff(v) > 0)


def test_vwc_stem_needs_the_ndvi_range():
    with pytest.raises(InputError, match="ndvi_max"):
        wcm.vwc_from_ndvi(0.5, stem_factor=2.0)


# ------------------------------------------------------------------------------ default parameters


def test_default_soil_term_is_the_oh_line_documented():
    # DEFAULT C, D are documented as the least-squares line through Oh (2002) at 38 deg, ks 1.2,
    # 0.05 <= mv <= 0.35; recompute it and check the rounding stated in the docstring.
    mv = np.linspace(0.05, 0.35, 31)
    vv_db, vh_db = oh.forward(mv, 1.2, 38.0)
    d_vv, c_vv = np.polyfit(mv, vv_db, 1)
    d_vh, c_vh = np.polyfit(mv, vh_db, 1)
    p = wcm.DEFAULT_WCM_PARAMS
    assert p["vv"]["C"] == pytest.approx(c_vv, abs=0.15)
    assert p["vh"]["C"] == pytest.approx(c_vh, abs=0.15)
    assert p["vv"]["D"] == pytest.approx(d_vv, abs=0.1)
    assert p["vh"]["D"] == pytest.approx(d_vh, abs=0.1)


def test_default_canopy_saturation_levels_documented():
    # closed canopy NDVI 0.9 at 38 deg: A V cos(theta) = about -11.5 dB (VV) and -17.5 dB (VH)
    cos_t = math.cos(math.radians(38.0))
    p = wcm.DEFAULT_WCM_PARAMS
    assert 10 * math.log10(p["vv"]["A"] * 0.9 * cos_t) == pytest.approx(-11.5, abs=0.1)
    assert 10 * math.log10(p["vh"]["A"] * 0.9 * cos_t) == pytest.approx(-17.5, abs=0.1)
    # two-way attenuation at NDVI 0.9, 38 deg: about 4 dB (VV) and 3 dB (VH)
    assert -10 * math.log10(wcm.tau2(0.9, 38.0, p["vv"]["B"])) == pytest.approx(4.0, abs=0.1)
    assert -10 * math.log10(wcm.tau2(0.9, 38.0, p["vh"]["B"])) == pytest.approx(3.0, abs=0.1)
