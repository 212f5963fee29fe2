"""Oh (2002, 2004) semi-empirical backscatter model of bare soil and its closed-form inversion.

With ``theta`` in radians, ``mv`` volumetric soil moisture (m3/m3) and ``ks`` the normalised rms
height (wavenumber x rms height):

``q = sigma0_vh / sigma0_vv = 0.095 (0.13 + sin(1.5 theta))^1.4 (1 - exp(-1.3 ks^0.9))``

``sigma0_vh = 0.11 mv^0.7 cos(theta)^2.2 (1 - exp(-0.32 ks^1.8))``

``sigma0_vv = sigma0_vh / q``

(sigma0 linear). Inversion with VV and VH: ``q`` gives ``ks`` in closed form, then ``sigma0_vh``
gives ``mv``. The model was fitted for roughly 0.13 < ks < 6.98, 0.04 < mv < 0.291 and
10 deg < theta < 70 deg; retrievals outside that domain are kept and flagged.

References
----------
Oh, Y., Sarabandi, K. and Ulaby, F. T. (2002). Semi-empirical model of the ensemble-averaged
differential Mueller matrix for microwave backscattering from bare soil surfaces. IEEE Trans.
Geosci. Remote Sens. 40(6), 1348-1355.

Oh, Y. (2004). Quantitative retrieval of soil moisture content and surface roughness from
multipolarized radar observations of bare soil surfaces. IEEE Trans. Geosci. Remote Sens. 42(3),
596-601.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ssm_spark.physics.qc import INCIDENCE_VALID_DEG, QC, QC_DTYPE, flag_where
from ssm_spark.physics.wcm import linear_to_db

__all__ = [
    "KS_VALID",
    "MV_VALID",
    "forward",
    "inverse",
    "q_max",
]

#: Validity domain of the model (open intervals), Oh et al. (2002).
KS_VALID: tuple[float, float] = (0.13, 6.98)
MV_VALID: tuple[float, float] = (0.04, 0.291)


def _f(x: npt.ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray) -> np.ndarray | np.floating:
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _q_angle(theta_rad: np.ndarray) -> np.ndarray:
    """Angular factor of q: ``0.095 (0.13 + sin(1.5 theta))^1.4`` (the limit of q as ks -> inf)."""
    return 0.095 * (0.13 + np.sin(1.5 * theta_rad)) ** 1.4


def q_max(theta_deg: npt.ArrayLike) -> np.ndarray | np.floating:
    """Largest cross-polarisation ratio the Oh model can produce at an angle (ks -> infinity).

    ``q_max = 0.095 (0.13 + sin(1.5 theta))^1.4``

    Parameters
    ----------
    theta_deg : array_like
        Incidence angle (degrees).

    Returns
    -------
    numpy.ndarray or numpy scalar
        ``q_max`` (linear); about 0.087 (-10.6 dB) at 36 deg. Observed VH/VV ratios above it have no
        Oh solution.
    """
    return _out(_q_angle(np.deg2rad(_f(theta_deg))))


def forward(
    mv: npt.ArrayLike, ks: npt.ArrayLike, theta_deg: npt.ArrayLike
) -> tuple[np.ndarray | np.floating, np.ndarray | np.floating]:
    """Bare-soil VV and VH backscatter from soil moisture and roughness, Oh (2002).

    ``q = 0.095 (0.13 + sin(1.5 theta))^1.4 (1 - exp(-1.3 ks^0.9))``,
    ``sigma0_vh = 0.11 mv^0.7 cos(theta)^2.2 (1 - exp(-0.32 ks^1.8))``,
    ``sigma0_vv = sigma0_vh / q`` (theta in radians, sigma0 linear).

    Parameters
    ----------
    mv : array_like
        Volumetric soil moisture (m3/m3), > 0.
    ks : array_like
        Normalised rms height k*s, > 0 (k = 2 pi / lambda, about 1.13 cm^-1 at 5.405 GHz).
    theta_deg : array_like
        Incidence angle (degrees), in (0, 90).

    Returns
    -------
    vv_db, vh_db : numpy.ndarray or numpy scalar
        sigma0_vv and sigma0_vh (dB), broadcast shape; NaN where ``mv <= 0``, ``ks <= 0`` or the
        angle is outside (0, 90) deg (the forward model does not flag: it is evaluated as asked,
        also outside the validity domain).

    References
    ----------
    Oh, Sarabandi and Ulaby (2002), IEEE TGRS 40(6), 1348-1355, eqs. for q and sigma0_vh;
    Oh (2004), IEEE TGRS 42(3), 596-601.
    """
    m = _f(mv)
    k = _f(ks)
    t = _f(theta_deg)
    ok = (m > 0) & (k > 0) & (t > 0) & (t < 90)
    th = np.deg2rad(np.where(ok, t, 45.0))
    m_ = np.where(ok, m, 1.0)
    k_ = np.where(ok, k, 1.0)
    q = _q_angle(th) * (1.0 - np.exp(-1.3 * k_**0.9))
    vh = 0.11 * m_**0.7 * np.cos(th) ** 2.2 * (1.0 - np.exp(-0.32 * k_**1.8))
    vv = vh / q
    vv = np.where(ok, vv, np.nan)
    vh = np.where(ok, vh, np.nan)
    return linear_to_db(vv), linear_to_db(vh)


def inverse(
    vv_db: npt.ArrayLike, vh_db: npt.ArrayLike, theta_deg: npt.ArrayLike
) -> tuple[np.ndarray | np.floating, np.ndarray | np.floating, np.ndarray]:
    """Soil moisture and roughness from bare-soil VV and VH backscatter, Oh (2002) in closed form.

    With ``q = sigma0_vh / sigma0_vv`` and ``r = q / (0.095 (0.13 + sin(1.5 theta))^1.4)``:

    ``ks = (-ln(1 - r) / 1.3)^(1/0.9)``  (needs 0 < r < 1),

    ``mv = (sigma0_vh / (0.11 cos(theta)^2.2 (1 - exp(-0.32 ks^1.8))))^(1/0.7)``.

    Parameters
    ----------
    vv_db, vh_db : array_like
        Bare-soil (or vegetation-corrected) sigma0_vv and sigma0_vh (dB).
    theta_deg : array_like
        Incidence angle (degrees).

    Returns
    -------
    mv : numpy.ndarray or numpy scalar
        Volumetric soil moisture (m3/m3), not clipped.
    ks : numpy.ndarray or numpy scalar
        Normalised rms height.
    flags : numpy.ndarray of uint16
        QC bits: ``MISSING_INPUT`` (an input is NaN); ``INCIDENCE_OUT_OF_RANGE`` (angle outside
        10-70 deg; values kept inside (0, 90) deg, NaN outside); ``OH_OUT_OF_RANGE`` where the
        retrieved ks or mv is outside 0.13 < ks < 6.98, 0.04 < mv < 0.291 (values kept), and
        ``OH_OUT_OF_RANGE | OH_NO_SOLUTION`` where ``q`` is not below ``q_max(theta)``
        (:func:`q_max`: no roughness reproduces it; mv and ks are NaN).

    References
    ----------
    Oh, Sarabandi and Ulaby (2002), IEEE TGRS 40(6), 1348-1355; Oh (2004), IEEE TGRS 42(3),
    596-601.
    """
    vv = _f(vv_db)
    vh = _f(vh_db)
    t = _f(theta_deg)
    lo, hi = INCIDENCE_VALID_DEG
    # the terms of the angle alone are computed on the angle as given, then broadcast: a nominal
    # angle (one value for every row) costs one sine and one cosine, not one per row (the same
    # values: the functions are element-wise)
    ok_theta = (t > 0) & (t < 90)
    th = np.deg2rad(np.where(ok_theta, t, 45.0))
    q_angle = _q_angle(th)
    cos_term = 0.11 * np.cos(th) ** 2.2
    incidence_bits = flag_where(np.isfinite(t) & ~((t >= lo) & (t <= hi)), QC.INCIDENCE_OUT_OF_RANGE)
    vv, vh, t, ok_theta, q_angle, cos_term, incidence_bits = np.broadcast_arrays(
        vv, vh, t, ok_theta, q_angle, cos_term, incidence_bits)
    missing = ~(np.isfinite(vv) & np.isfinite(vh) & np.isfinite(t))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        q = np.power(10.0, (vh - vv) / 10.0)
        r = q / q_angle
        solvable = ~missing & ok_theta & (r > 0) & (r < 1)
        r_ = np.where(solvable, r, 0.5)
        ks = (-np.log1p(-r_) / 1.3) ** (1.0 / 0.9)
        rough = 1.0 - np.exp(-0.32 * ks**1.8)
        sig_vh = np.power(10.0, np.where(solvable, vh, 0.0) / 10.0)
        mv = (sig_vh / (cos_term * rough)) ** (1.0 / 0.7)
        # rough underflows to 0 only for ks ~ 0 (q ~ 0): no finite answer then either.
        solvable &= np.isfinite(mv) & np.isfinite(ks)
        mv = np.where(solvable, mv, np.nan)
        ks = np.where(solvable, ks, np.nan)
    no_solution = ~missing & ok_theta & ~solvable
    outside = solvable & ~(
        (ks > KS_VALID[0]) & (ks < KS_VALID[1]) & (mv > MV_VALID[0]) & (mv < MV_VALID[1])
    )
    flags = (
        flag_where(missing, QC.MISSING_INPUT)
        | incidence_bits
        | flag_where(outside, QC.OH_OUT_OF_RANGE)
        | flag_where(no_solution, QC.OH_OUT_OF_RANGE | QC.OH_NO_SOLUTION)
    )
    return _out(mv), _out(ks), flags.astype(QC_DTYPE)
