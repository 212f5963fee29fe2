"""Known-answer, round-trip and monotonicity tests of ssm_spark.physics.dielectric."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm_spark.errors import InputError, SSMError
from ssm_spark.physics import dielectric

FAST = settings(max_examples=150, deadline=None)


# ----------------------------------------------------------------------------------------- Topp


def test_topp_known_answer_at_mv_0_2():
    # 3.03 + 9.3*0.2 + 146*0.2^2 - 76.7*0.2^3 = 3.03 + 1.86 + 5.84 - 0.6136 = 10.1164
    assert dielectric.topp(0.2) == pytest.approx(10.1164, abs=1e-12)


def test_topp_inverse_known_answer_at_eps_10():
    # -0.053 + 0.0292*10 - 0.00055*100 + 4.3e-6*1000 = -0.053 + 0.292 - 0.055 + 0.0043 = 0.1883
    assert dielectric.topp_inverse(10.0) == pytest.approx(0.1883, abs=1e-12)


def test_topp_inverse_is_the_published_polynomial_not_the_algebraic_inverse():
    # topp(0) = 3.03; published inverse at 3.03:
    # -0.053 + 0.0292*3.03 - 0.00055*3.03^2 + 4.3e-6*3.03^3
    # = -0.053 + 0.088476 - 0.005049495 + 0.000119617... = 0.030546...
    expected = -0.053 + 0.0292 * 3.03 - 0.00055 * 3.03**2 + 4.3e-6 * 3.03**3
    assert dielectric.topp_inverse(dielectric.topp(0.0)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.0305, abs=1e-4)  # an exact inverse would give 0


@FAST
@given(mv=st.floats(0.05, 0.45))
def test_topp_round_trip_within_published_accuracy(mv):
    # Topp et al. (1980) quote a standard error of estimate of 0.013 m3/m3; the two published
    # polynomials agree to 0.0144 at worst over 0.05-0.45 (measured on a 0.001 grid): 0.015 bound.
    assert abs(dielectric.topp_inverse(dielectric.topp(mv)) - mv) <= 0.015


@FAST
@given(mv=st.floats(0.0, 0.5))
def test_topp_round_trip_over_full_range(mv):
    # the largest gap over 0-0.5 is at mv = 0 (+0.0305, see the test above)
    assert abs(dielectric.topp_inverse(dielectric.topp(mv)) - mv) <= 0.031


@FAST
@given(a=st.floats(0.0, 0.55), b=st.floats(0.0, 0.55))
def test_topp_increases_with_mv(a, b):
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 1e-6:
        return
    assert dielectric.topp(hi) > dielectric.topp(lo)


def test_topp_broadcasts_and_keeps_shape():
    mv = np.array([[0.1, 0.2], [0.3, np.nan]])
    eps = dielectric.topp(mv)
    assert eps.shape == (2, 2)
    assert np.isnan(eps[1, 1])
    assert eps[0, 1] == pytest.approx(10.1164)


# --------------------------------------------------------------------------------------- Dobson


def _dobson_by_hand(mv, sand, clay, rho_b, f_ghz):
    rho_s = 2.66
    alpha = 0.65
    eps_s = (1.01 + 0.44 * rho_s) ** 2 - 0.062  # = 4.692...
    beta = 1.2748 - 0.519 * sand - 0.152 * clay
    eps_fw = 4.9 + (80.1 - 4.9) / (1.0 + (0.58e-10 * f_ghz * 1e9) ** 2)
    inner = 1.0 + rho_b / rho_s * (eps_s**alpha - 1.0) + mv**beta * eps_fw**alpha - mv
    return inner ** (1.0 / alpha)


def test_dobson_known_answer_loam_cband():
    # mv 0.25, sand 0.40, clay 0.20, rho_b 1.4 g/cm3, 5.405 GHz:
    # eps_s = (1.01 + 0.44*2.66)^2 - 0.062 = 2.1804^2 - 0.062 = 4.69214...
    # beta' = 1.2748 - 0.519*0.4 - 0.152*0.2 = 1.0368
    # eps_fw' = 4.9 + 75.2 / (1 + (0.58e-10 * 5.405e9)^2) = 4.9 + 75.2/1.098278... = 73.371
    # eps = [1 + (1.4/2.66)(4.69214^0.65 - 1) + 0.25^1.0368 * 73.371^0.65 - 0.25]^(1/0.65)
    eps_s = (1.01 + 0.44 * 2.66) ** 2 - 0.062
    assert eps_s == pytest.approx(4.69214, abs=1e-5)
    beta = 1.2748 - 0.519 * 0.4 - 0.152 * 0.2
    assert beta == pytest.approx(1.0368)
    eps_fw = 4.9 + 75.2 / (1.0 + (0.58e-10 * 5.405e9) ** 2)
    assert eps_fw == pytest.approx(73.371, abs=1e-3)
    assert dielectric.free_water_permittivity(5.405) == pytest.approx(eps_fw)
    inner = 1.0 + (1.4 / 2.66) * (eps_s**0.65 - 1.0) + 0.25**beta * eps_fw**0.65 - 0.25
    expected = inner ** (1.0 / 0.65)
    assert expected == pytest.approx(13.916, abs=1e-3)
    assert dielectric.dobson(0.25, 0.4, 0.2, bulk_density=1.4) == pytest.approx(expected, rel=1e-12)


def test_dobson_low_frequency_uses_peplinski_adjustment():
    # below 1.4 GHz: 1.15 eps' - 0.68 (Peplinski et al. 1995)
    expected = 1.15 * _dobson_by_hand(0.25, 0.4, 0.2, 1.4, 1.2) - 0.68
    assert dielectric.dobson(0.25, 0.4, 0.2, 1.4, freq_ghz=1.2) == pytest.approx(expected)


def test_dobson_dry_soil_is_the_solid_matrix():
    # mv = 0: [1 + (rho_b/rho_s)(eps_s^0.65 - 1)]^(1/0.65), about 2.57 at 1.3 g/cm3
    eps_s = (1.01 + 0.44 * 2.66) ** 2 - 0.062
    expected = (1.0 + 1.3 / 2.66 * (eps_s**0.65 - 1.0)) ** (1.0 / 0.65)
    assert dielectric.dobson(0.0, 0.3, 0.3) == pytest.approx(expected)
    assert 2.3 < expected < 2.8


@FAST
@given(
    a=st.floats(0.01, 0.6),
    b=st.floats(0.01, 0.6),
    sand=st.floats(0.0, 0.95),
    clay_share=st.floats(0.0, 1.0),
    rho=st.floats(1.0, 1.8),
)
def test_dobson_increases_with_mv(a, b, sand, clay_share, rho):
    clay = (1.0 - sand) * clay_share
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 1e-4:
        return
    assert dielectric.dobson(hi, sand, clay, rho) > dielectric.dobson(lo, sand, clay, rho)


@pytest.mark.parametrize("mv", [0.2, 0.3, 0.4])
def test_dobson_loam_agrees_with_topp(mv):
    # two independent empirical models should roughly agree on a loam at C band
    # (measured: within 8 % for 0.2-0.4 m3/m3); 15 % is a loose cross-check
    assert dielectric.dobson(mv, 0.4, 0.2) == pytest.approx(dielectric.topp(mv), rel=0.15)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(sand=40.0, clay=0.2), "sand"),
        (dict(sand=0.4, clay=20.0), "clay"),
        (dict(sand=-0.1, clay=0.2), "sand"),
        (dict(sand=0.7, clay=0.5), re.escape("'sand' + 'clay'")),
        (dict(sand=0.4, clay=0.2, bulk_density=1300.0), "bulk_density"),
        (dict(sand=0.4, clay=0.2, freq_ghz=5.405e9), "freq_ghz"),
    ],
)
def test_dobson_rejects_bad_units_naming_the_argument(kwargs, name):
    with pytest.raises(InputError, match=name):
        dielectric.dobson(0.2, **kwargs)


def test_dobson_percent_error_is_a_value_error_and_an_ssm_error():
    with pytest.raises(ValueError, match="percent"):
        dielectric.dobson(0.2, 40.0, 20.0)
    with pytest.raises(SSMError):
        dielectric.dobson(0.2, 40.0, 20.0)


# -------------------------------------------------------------------------------------- Fresnel


def test_fresnel_nadir_eps_4_is_one_ninth():
    # sqrt(4) = 2: ((1 - 2) / (1 + 2))^2 = 1/9
    assert dielectric.fresnel_nadir(4.0) == pytest.approx(1.0 / 9.0, abs=1e-15)


def test_fresnel_at_60_degrees_by_hand():
    # eps 4, theta 60 deg: cos = 0.5, sin^2 = 0.75, root = sqrt(3.25) = 1.8027756
    root = math.sqrt(4.0 - 0.75)
    gh = ((0.5 - root) / (0.5 + root)) ** 2  # (-1.3027756/2.3027756)^2 = (-0.5657414)^2 = 0.3200634
    gv = ((4 * 0.5 - root) / (4 * 0.5 + root)) ** 2  # (0.1972244/3.8027756)^2 = 0.0518633^2 = 0.0026898
    assert gh == pytest.approx(0.3200634, abs=1e-7)
    assert gv == pytest.approx(0.0026898, abs=1e-7)
    assert dielectric.fresnel(4.0, 60.0, "h") == pytest.approx(gh, rel=1e-12)
    assert dielectric.fresnel(4.0, 60.0, "v") == pytest.approx(gv, rel=1e-12)


def test_fresnel_reduces_to_nadir_and_vanishes_at_brewster():
    eps = np.array([3.0, 10.0, 25.0])
    nadir = dielectric.fresnel_nadir(eps)
    np.testing.assert_allclose(dielectric.fresnel(eps, 0.0, "v"), nadir, rtol=1e-12)
    np.testing.assert_allclose(dielectric.fresnel(eps, 0.0, "h"), nadir, rtol=1e-12)
    brewster = np.degrees(np.arctan(np.sqrt(eps)))
    np.testing.assert_allclose(dielectric.fresnel(eps, brewster, "v"), 0.0, atol=1e-20)
    # at the Brewster angle Gamma_h = ((eps - 1) / (eps + 1))^2 (eps 3: (2/4)^2 = 0.25)
    np.testing.assert_allclose(
        dielectric.fresnel(eps, brewster, "h"), ((eps - 1) / (eps + 1)) ** 2, rtol=1e-10
    )


@FAST
@given(eps_re=st.floats(2.0, 80.0), eps_im=st.floats(0.0, 20.0), theta=st.floats(0.0, 89.0))
def test_fresnel_is_a_reflectivity(eps_re, eps_im, theta):
    eps = complex(eps_re, eps_im)
    gv = dielectric.fresnel(eps, theta, "v")
    gh = dielectric.fresnel(eps, theta, "h")
    assert 0.0 <= gv <= 1.0
    assert 0.0 <= gh <= 1.0
    assert gv <= gh + 1e-12  # V never reflects more than H from a dielectric half-space


@FAST
@given(a=st.floats(0.02, 0.5), b=st.floats(0.02, 0.5))
def test_wetter_soil_reflects_more(a, b):
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 1e-4:
        return
    assert dielectric.fresnel_nadir(dielectric.topp(hi)) > dielectric.fresnel_nadir(dielectric.topp(lo))


def test_fresnel_rejects_bad_pol_and_radians():
    with pytest.raises(InputError, match="pol"):
        dielectric.fresnel(4.0, 30.0, "x")
    with pytest.raises(InputError, match="theta_deg"):
        dielectric.fresnel(4.0, 120.0, "v")
    assert dielectric.fresnel(4.0, 30.0, "VV") == dielectric.fresnel(4.0, 30.0, "v")
