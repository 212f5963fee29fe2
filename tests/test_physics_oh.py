"""Known-answer, round-trip, monotonicity and flag tests of ssm_spark.physics.oh."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm_spark.physics import oh
from ssm_spark.physics.qc import QC

FAST = settings(max_examples=200, deadline=None)


def test_forward_known_answer_step_by_step():
    mv, ks, theta = 0.2, 1.0, math.radians(40.0)
    ang = 0.095 * (0.13 + math.sin(1.5 * theta)) ** 1.4  # 0.095 * (0.13 + 0.8660254)^1.4
    q = ang * (1 - math.exp(-1.3 * ks**0.9))  # 0.0944718 * (1 - e^-1.3) = 0.0944718 * 0.7274682
    vh = 0.11 * mv**0.7 * math.cos(theta) ** 2.2 * (1 - math.exp(-0.32 * ks**1.8))
    vv = vh / q
    # intermediate values, by hand
    assert math.sin(1.5 * theta) == pytest.approx(0.8660254, abs=1e-7)  # sin(60 deg)
    assert ang == pytest.approx(0.0944718, abs=1e-6)
    assert q == pytest.approx(0.0687252, abs=1e-6)
    assert mv**0.7 == pytest.approx(0.3241313, abs=1e-6)
    assert math.cos(theta) ** 2.2 == pytest.approx(0.5563636, abs=1e-6)  # 0.7660444^2.2
    assert 1 - math.exp(-0.32 * ks**1.8) == pytest.approx(0.2738510, abs=1e-6)
    assert vh == pytest.approx(0.0054323, abs=1e-6)  # 0.11 * 0.3241313 * 0.5563636 * 0.2738510
    vv_db, vh_db = oh.forward(mv, ks, 40.0)
    assert vh_db == pytest.approx(10 * math.log10(vh), abs=1e-10)
    assert vv_db == pytest.approx(10 * math.log10(vv), abs=1e-10)
    assert vv_db == pytest.approx(-11.0213, abs=1e-3)
    assert vh_db == pytest.approx(-22.6501, abs=1e-3)


def test_q_max_known_answer():
    # ks -> infinity: q = 0.095 (0.13 + sin(1.5 * 36 deg))^1.4 = 0.095 * (0.13 + 0.809017)^1.4
    expected = 0.095 * (0.13 + math.sin(math.radians(54.0))) ** 1.4
    assert oh.q_max(36.0) == pytest.approx(expected, rel=1e-12)
    assert 10 * math.log10(expected) == pytest.approx(-10.60, abs=0.01)


@FAST
@given(mv=st.floats(0.045, 0.285), ks=st.floats(0.15, 6.9), theta=st.floats(11.0, 69.0))
def test_inverse_of_forward_recovers_mv_and_ks(mv, ks, theta):
    vv_db, vh_db = oh.forward(mv, ks, theta)
    mv_back, ks_back, flags = oh.inverse(vv_db, vh_db, theta)
    assert flags == 0
    assert mv_back == pytest.approx(mv, rel=1e-6)
    assert ks_back == pytest.approx(ks, rel=1e-6)


@FAST
@given(
    m1=st.floats(0.02, 0.5), m2=st.floats(0.02, 0.5), ks=st.floats(0.1, 7.0), theta=st.floats(10, 70)
)
def test_sigma_vh_and_vv_increase_with_mv(m1, m2, ks, theta):
    lo, hi = min(m1, m2), max(m1, m2)
    if hi - lo < 1e-4:
        return
    vv_lo, vh_lo = oh.forward(lo, ks, theta)
    vv_hi, vh_hi = oh.forward(hi, ks, theta)
    assert vh_hi > vh_lo
    assert vv_hi > vv_lo


@FAST
@given(
    k1=st.floats(0.1, 7.0), k2=st.floats(0.1, 7.0), mv=st.floats(0.02, 0.5), theta=st.floats(10, 70)
)
def test_sigma_vh_and_q_increase_with_roughness(k1, k2, mv, theta):
    lo, hi = min(k1, k2), max(k1, k2)
    if hi - lo < 1e-3:
        return
    vv_lo, vh_lo = oh.forward(mv, lo, theta)
    vv_hi, vh_hi = oh.forward(mv, hi, theta)
    assert vh_hi > vh_lo
    assert (vh_hi - vv_hi) > (vh_lo - vv_lo)  # the cross-pol ratio q grows with ks


def test_in_validity_gives_no_flags():
    vv_db, vh_db = oh.forward(np.array([0.1, 0.25]), np.array([0.5, 3.0]), np.array([30.0, 45.0]))
    _, _, flags = oh.inverse(vv_db, vh_db, np.array([30.0, 45.0]))
    assert np.all(flags == 0)
    assert flags.dtype == np.uint16


def test_out_of_validity_is_kept_and_flagged():
    # mv 0.35 > 0.291, ks 8 > 6.98, ks 0.1 < 0.13: values come back, with OH_OUT_OF_RANGE
    mv = np.array([0.35, 0.2, 0.2, 0.03])
    ks = np.array([1.0, 8.0, 0.1, 1.0])
    vv_db, vh_db = oh.forward(mv, ks, 35.0)
    mv_b, ks_b, flags = oh.inverse(vv_db, vh_db, 35.0)
    np.testing.assert_allclose(mv_b, mv, rtol=1e-6)
    np.testing.assert_allclose(ks_b, ks, rtol=1e-5)
    assert np.all(flags == QC.OH_OUT_OF_RANGE)


def test_incidence_outside_10_70_is_flagged():
    vv_db, vh_db = oh.forward(0.2, 1.0, np.array([8.0, 40.0, 75.0]))
    mv_b, _, flags = oh.inverse(vv_db, vh_db, np.array([8.0, 40.0, 75.0]))
    assert [bool(f & QC.INCIDENCE_OUT_OF_RANGE) for f in flags] == [True, False, True]
    np.testing.assert_allclose(mv_b, 0.2, rtol=1e-6)  # still computed inside (0, 90)


def test_unachievable_cross_pol_ratio_is_nan_and_flagged():
    # q = -5 dB is far above q_max(38 deg) ~ -10.5 dB: no roughness reproduces it
    assert 10 * math.log10(oh.q_max(38.0)) < -10.0
    mv_b, ks_b, flags = oh.inverse(np.array([-10.0, -10.0]), np.array([-15.0, np.nan]), 38.0)
    assert np.isnan(mv_b).all() and np.isnan(ks_b).all()
    assert flags[0] == QC.OH_OUT_OF_RANGE | QC.OH_NO_SOLUTION
    assert flags[1] == QC.MISSING_INPUT


def test_q_just_below_q_max_is_very_rough():
    qm_db = 10 * math.log10(oh.q_max(40.0))
    _, ks_b, flags = oh.inverse(-12.0, -12.0 + qm_db - 1e-3, 40.0)
    assert ks_b > 6.98
    assert flags == QC.OH_OUT_OF_RANGE


def test_forward_undefined_inputs_are_nan():
    vv_db, vh_db = oh.forward(np.array([0.0, 0.2, 0.2]), np.array([1.0, -1.0, 1.0]), np.array([40, 40, 95]))
    assert np.isnan(vv_db).all() and np.isnan(vh_db).all()
