"""Soil dielectric mixing models and Fresnel reflectivity.

Two mixing models give the (real) relative permittivity of moist soil from volumetric soil moisture
``mv`` (m3/m3):

* :func:`topp` / :func:`topp_inverse`: Topp, Davis and Annan (1980), the texture-free TDR
  calibration (about 20 MHz - 1 GHz, but widely used as a texture-free default);
* :func:`dobson`: Dobson et al. (1985) semi-empirical mixing model with the coefficients of
  Peplinski, Ulaby and Dobson (1995), using sand and clay fractions and bulk density.

:func:`fresnel_nadir` and :func:`fresnel` give the power reflectivity of a flat surface, used as
features and by the simulator.

References
----------
Topp, G. C., Davis, J. L. and Annan, A. P. (1980). Electromagnetic determination of soil water
content: measurements in coaxial transmission lines. Water Resources Research 16(3), 574-582.

Dobson, M. C., Ulaby, F. T., Hallikainen, M. T. and El-Rayes, M. A. (1985). Microwave dielectric
behavior of wet soil - Part II: dielectric mixing models. IEEE Trans. Geosci. Remote Sens. GE-23(1),
35-46.

Peplinski, N. R., Ulaby, F. T. and Dobson, M. C. (1995). Dielectric properties of soils in the
0.3-1.3-GHz range. IEEE Trans. Geosci. Remote Sens. 33(3), 803-807 (and its 1995 correction).

Ulaby, F. T. and Long, D. G. (2014). Microwave Radar and Radiometric Remote Sensing. Univ. of
Michigan Press, ch. 2 (Fresnel equations) and ch. 4 (soil dielectric models).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from ssm_spark.errors import InputError

__all__ = [
    "topp",
    "topp_inverse",
    "dobson",
    "free_water_permittivity",
    "fresnel_nadir",
    "fresnel",
    "SOLID_DENSITY",
]

#: Specific density of soil solids (g/cm3) used by Dobson et al. (1985).
SOLID_DENSITY = 2.66
#: Shape factor alpha of the Dobson mixing model.
_ALPHA = 0.65
#: Static and high-frequency permittivity of free water and its relaxation time (as 2*pi*tau, s),
#: at 20 degC, from Peplinski et al. (1995) / Ulaby and Long (2014).
_EPS_W0 = 80.1
_EPS_W_INF = 4.9
_TWO_PI_TAU_W = 0.58e-10


def _f(x: npt.ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray) -> np.ndarray | np.floating:
    """A 0-d result as a numpy scalar, anything else unchanged."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def topp(mv: npt.ArrayLike) -> np.ndarray | np.floating:
    """Relative permittivity from volumetric soil moisture, Topp et al. (1980).

    ``eps = 3.03 + 9.3 mv + 146.0 mv^2 - 76.7 mv^3``

    Parameters
    ----------
    mv : array_like
        Volumetric soil moisture (m3/m3). The calibration covered about 0-0.55 m3/m3; values outside
        are extrapolated, not rejected.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Apparent (real) relative permittivity, same shape as ``mv``; NaN where ``mv`` is NaN.

    References
    ----------
    Topp, G. C., Davis, J. L. and Annan, A. P. (1980), Water Resources Research 16(3), 574-582,
    eq. (1) of the paper's empirical fit.
    """
    m = _f(mv)
    return _out(3.03 + 9.3 * m + 146.0 * m**2 - 76.7 * m**3)


def topp_inverse(eps: npt.ArrayLike) -> np.ndarray | np.floating:
    """Volumetric soil moisture from relative permittivity: Topp et al.'s published inverse.

    ``mv = -5.3e-2 + 2.92e-2 eps - 5.5e-4 eps^2 + 4.3e-6 eps^3``

    This is the separate regression that Topp et al. (1980) published for ``mv(eps)``, not the
    algebraic inverse of :func:`topp`. The two polynomials agree to within 0.015 m3/m3 for
    0.05 <= mv <= 0.45 (Topp's standard error of estimate is 0.013 m3/m3) and to within 0.031 m3/m3
    over 0-0.5 m3/m3 (the largest gap, +0.03, is at mv = 0).

    Parameters
    ----------
    eps : array_like
        Apparent (real) relative permittivity (about 3-40).

    Returns
    -------
    numpy.ndarray or numpy scalar
        Volumetric soil moisture (m3/m3), same shape as ``eps``; not clipped (very dry soils can come
        out slightly negative or positive of the truth, as in the published fit).

    References
    ----------
    Topp, G. C., Davis, J. L. and Annan, A. P. (1980), Water Resources Research 16(3), 574-582.
    """
    e = _f(eps)
    return _out(-5.3e-2 + 2.92e-2 * e - 5.5e-4 * e**2 + 4.3e-6 * e**3)


def free_water_permittivity(freq_ghz: npt.ArrayLike) -> np.ndarray | np.floating:
    """Real part of the relative permittivity of free water (Debye model, 20 degC).

    ``eps_fw' = eps_w_inf + (eps_w0 - eps_w_inf) / (1 + (2 pi f tau_w)^2)`` with
    ``eps_w0 = 80.1``, ``eps_w_inf = 4.9``, ``2 pi tau_w = 0.58e-10 s`` and ``f`` in Hz.

    Parameters
    ----------
    freq_ghz : array_like
        Frequency (GHz).

    Returns
    -------
    numpy.ndarray or numpy scalar
        ``eps_fw'`` (about 73.4 at 5.405 GHz).

    References
    ----------
    Peplinski et al. (1995), eq. (5); Ulaby and Long (2014), sec. 4-1.
    """
    f_hz = _f(freq_ghz) * 1e9
    return _out(_EPS_W_INF + (_EPS_W0 - _EPS_W_INF) / (1.0 + (_TWO_PI_TAU_W * f_hz) ** 2))


def _check_range(name: str, value: np.ndarray, lo: float, hi: float, hint: str) -> None:
    finite = value[np.isfinite(value)]
    if finite.size and (finite.min() < lo or finite.max() > hi):
        raise InputError(
            f"dobson: '{name}' must lie in [{lo}, {hi}] but ranges over "
            f"[{finite.min():g}, {finite.max():g}]; {hint}"
        )


def dobson(
    mv: npt.ArrayLike,
    sand: npt.ArrayLike,
    clay: npt.ArrayLike,
    bulk_density: npt.ArrayLike = 1.3,
    freq_ghz: float = 5.405,
) -> np.ndarray | np.floating:
    """Real relative permittivity of moist soil, Dobson et al. (1985) / Peplinski et al. (1995).

    For 1.4-18 GHz (Dobson et al. 1985, eq. 28, real part):

    ``eps' = [1 + (rho_b / rho_s) (eps_s^alpha - 1) + mv^beta' eps_fw'^alpha - mv]^(1/alpha)``

    with ``alpha = 0.65``, ``rho_s = 2.66 g/cm3``,
    ``eps_s = (1.01 + 0.44 rho_s)^2 - 0.062`` (about 4.70),
    ``beta' = 1.2748 - 0.519 S - 0.152 C`` (S, C sand and clay mass fractions) and ``eps_fw'``
    from :func:`free_water_permittivity`. Below 1.4 GHz the Peplinski et al. (1995) linear
    adjustment ``1.15 eps' - 0.68`` is applied (their 0.3-1.3 GHz fit).

    Parameters
    ----------
    mv : array_like
        Volumetric soil moisture (m3/m3), >= 0.
    sand, clay : array_like
        Sand and clay mass *fractions* in [0, 1] (not percent), with ``sand + clay <= 1``.
    bulk_density : array_like, default 1.3
        Dry bulk density ``rho_b`` (g/cm3), in (0, 2.66].
    freq_ghz : float, default 5.405
        Radar frequency (GHz), 0.3-18; 5.405 GHz is Sentinel-1.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Real part of the relative permittivity, broadcast shape of the inputs.

    Raises
    ------
    InputError
        If ``sand`` or ``clay`` exceed 1 (they look like percent: divide by 100), are negative or
        sum above 1; if ``bulk_density`` is outside (0, 2.66] g/cm3 (kg/m3 given?); if ``mv`` is
        negative; or if ``freq_ghz`` is outside 0.3-18 GHz. The message names the argument.

    Notes
    -----
    The model is monotonic in ``mv`` for ``mv`` above about 0.005 m3/m3 whatever the texture (for
    silty soils with ``beta' > 1`` the ``-mv`` term dominates in a sliver just above zero).

    References
    ----------
    Dobson, M. C., et al. (1985), IEEE TGRS GE-23(1), 35-46.
    Peplinski, N. R., Ulaby, F. T. and Dobson, M. C. (1995), IEEE TGRS 33(3), 803-807.
    """
    m = _f(mv)
    s = _f(sand)
    c = _f(clay)
    rho_b = _f(bulk_density)
    f = float(freq_ghz)
    if not 0.3 <= f <= 18.0:
        raise InputError(
            f"dobson: 'freq_ghz' = {f:g} is outside the 0.3-18 GHz range of the model "
            "(give the frequency in GHz, e.g. 5.405 for Sentinel-1)"
        )
    _check_range("sand", s, 0.0, 1.0, "give mass fractions in [0, 1], not percent (divide by 100)")
    _check_range("clay", c, 0.0, 1.0, "give mass fractions in [0, 1], not percent (divide by 100)")
    total = s + c
    if np.any(total[np.isfinite(total)] > 1.0 + 1e-9):
        raise InputError(
            f"dobson: 'sand' + 'clay' must not exceed 1 (max {np.nanmax(total):g}); are the fractions "
            "mixed with percent?"
        )
    _check_range(
        "bulk_density", rho_b, 1e-9, SOLID_DENSITY, "give it in g/cm3 (divide kg/m3 by 1000)"
    )
    _check_range("mv", m, 0.0, 1.0, "give volumetric soil moisture in m3/m3")

    eps_s = (1.01 + 0.44 * SOLID_DENSITY) ** 2 - 0.062
    beta = 1.2748 - 0.519 * s - 0.152 * c
    eps_fw = free_water_permittivity(f)
    inner = 1.0 + (rho_b / SOLID_DENSITY) * (eps_s**_ALPHA - 1.0) + m**beta * eps_fw**_ALPHA - m
    eps = inner ** (1.0 / _ALPHA)
    if f < 1.4:
        eps = 1.15 * eps - 0.68
    return _out(eps)


def fresnel_nadir(eps: npt.ArrayLike) -> np.ndarray | np.floating:
    """Power reflectivity of a flat surface at normal incidence.

    ``Gamma0 = |(1 - sqrt(eps)) / (1 + sqrt(eps))|^2``

    Parameters
    ----------
    eps : array_like (real or complex)
        Relative permittivity of the lower medium (upper medium is air).

    Returns
    -------
    numpy.ndarray or numpy scalar
        Reflectivity in [0, 1] (for eps = 4: 1/9).

    References
    ----------
    Ulaby and Long (2014), eq. (2.64).
    """
    n = np.sqrt(np.asarray(eps, dtype=np.complex128))
    return _out(np.abs((1.0 - n) / (1.0 + n)) ** 2)


def fresnel(
    eps: npt.ArrayLike, theta_deg: npt.ArrayLike, pol: Literal["v", "h"] = "v"
) -> np.ndarray | np.floating:
    """Fresnel power reflectivity of a flat air-soil interface.

    ``Gamma_h = |(cos t - sqrt(eps - sin^2 t)) / (cos t + sqrt(eps - sin^2 t))|^2``

    ``Gamma_v = |(eps cos t - sqrt(eps - sin^2 t)) / (eps cos t + sqrt(eps - sin^2 t))|^2``

    Parameters
    ----------
    eps : array_like (real or complex)
        Relative permittivity of the soil.
    theta_deg : array_like
        Incidence angle (degrees), 0-90.
    pol : {'v', 'h'}, default 'v'
        Polarisation (case-insensitive; 'vv'/'hh' accepted).

    Returns
    -------
    numpy.ndarray or numpy scalar
        Reflectivity in [0, 1]; equal to :func:`fresnel_nadir` at 0 deg; ``Gamma_v`` vanishes at the
        Brewster angle ``atan(sqrt(eps))`` for real ``eps``.

    Raises
    ------
    InputError
        If ``pol`` is not 'v' or 'h', or an angle is outside [0, 90] degrees.

    References
    ----------
    Ulaby and Long (2014), eqs. (2.61)-(2.62).
    """
    p = str(pol).lower()
    if p in ("vv", "hh"):
        p = p[0]
    if p not in ("v", "h"):
        raise InputError(f"fresnel: 'pol' must be 'v' or 'h', got {pol!r}")
    t = _f(theta_deg)
    finite = t[np.isfinite(t)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 90.0):
        raise InputError(
            f"fresnel: 'theta_deg' must lie in [0, 90] degrees, got [{finite.min():g}, "
            f"{finite.max():g}] (radians given?)"
        )
    e = np.asarray(eps, dtype=np.complex128)
    tr = np.deg2rad(t)
    cos_t = np.cos(tr)
    root = np.sqrt(e - np.sin(tr) ** 2)
    if p == "h":
        r = (cos_t - root) / (cos_t + root)
    else:
        r = (e * cos_t - root) / (e * cos_t + root)
    return _out(np.abs(r) ** 2)
