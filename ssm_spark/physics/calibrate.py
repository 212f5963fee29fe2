"""Calibration of the Water Cloud Model per environment and polarisation.

The full forward model is fitted to in-situ matchups, per polarisation ``p``:

``sigma0_p[dB] = 10 log10(A V cos(theta) (1 - tau2) + tau2 10^((C + D mv) / 10))``,
``tau2 = exp(-2 B V / cos(theta))``

with ``mv`` the in-situ soil moisture, ``V`` the vegetation descriptor (NDVI by default) and
``theta`` the incidence angle, by :func:`scipy.optimize.least_squares` (trust-region reflective,
bounded, robust ``soft_l1`` loss whose ``f_scale`` is in dB, so residuals beyond about
``f_scale`` dB, e.g. speckle outliers, frozen or flooded dates the masks missed, weigh linearly
rather than quadratically).

Bounds (:data:`BOUNDS`), chosen to be physical yet wide:

========  ==============  =================================================================
param     bounds          why
========  ==============  =================================================================
A         [0, 1]          canopy backscatter per unit V (linear); 1 would be a 0 dB canopy at
                          V = 1, nadir, already brighter than any C-band vegetation.
B         [0, 2]          attenuation per unit V; with NDVI 0.9 at 40 deg, B = 2 is ~20 dB of
                          two-way loss (opaque). Non-negative: a canopy cannot amplify.
C         [-40, 0] dB     soil backscatter at mv = 0; dry-soil C-band sigma0 lies around -15 to
                          -30 dB (VH lowest); 0 dB would be a specular-bright dry soil.
D         [5, 80] dB/     soil sensitivity; C band shows 0.1-0.5 dB per vol. %, i.e. 10-50 dB per
          (m3/m3)         m3/m3; 80 leaves room. The floor of 5 (half the weakest reported
                          sensitivity) keeps the closed-form inversion mv = (soil - C) / D finite:
                          with D free down to 0, fits on vegetated environments whose soil signal
                          is swamped ran D to 1e-68 and mv_wcm to 1e55 (seen on the demo region).
========  ==============  =================================================================

Hierarchy (the same as the model-selection module): an environment (``env``, e.g. ``"cropland_C"``)
gets its own parameters when it has at least ``min_samples`` matchups from at least ``min_stations``
stations; otherwise those of its land-cover group (the part of ``env`` before the first ``"_"``, e.g.
``"cropland"``) when the group qualifies; otherwise the global parameters (fitted on every matchup).
:func:`lookup` applies the same fallback to environments never seen in training.

The result is a :class:`pandas.DataFrame` with one row per (key, pol) — every environment, every
group and ``"global"`` — and :func:`to_dict` / :func:`from_dict` turn it into plain JSON-serialisable
data for the model registry.

References
----------
Attema, E. P. W. and Ulaby, F. T. (1978). Vegetation modeled as a water cloud. Radio Science 13(2).
Bindlish, R. and Barros, A. P. (2001). Parameterization of vegetation backscatter in radar-based,
soil moisture estimation. Remote Sens. Environ. 76, 130-137.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import least_squares

from ssm_spark.errors import CalibrationError, InputError
from ssm_spark.physics.wcm import DEFAULT_WCM_PARAMS
from ssm_spark.physics.wcm_params import (GLOBAL_KEY, PARAM_NAMES, POLS, TABLE_COLUMNS, apply, from_dict, group_of,
                                         lookup, param_arrays, to_dict)

log = logging.getLogger(__name__)

__all__ = [
    "BOUNDS",
    "GLOBAL_KEY",
    "PARAM_NAMES",
    "POLS",
    "fit_wcm",
    "calibrate_wcm",
    "group_of",
    "lookup",
    "param_arrays",
    "apply",
    "to_dict",
    "from_dict",
]

#: Bounds of the fitted parameters (see the module docstring for the reasoning).
BOUNDS: dict[str, tuple[float, float]] = {
    "A": (0.0, 1.0),
    "B": (0.0, 2.0),
    "C": (-40.0, 0.0),
    "D": (5.0, 80.0),
}
#: Starting values of B tried by the multi-start (A and B trade off; the cost is not convex).
_B_STARTS: tuple[float, ...] = (0.1, 0.5, 1.2)



def _model_db(x: np.ndarray, v: np.ndarray, cos_t: np.ndarray, mv: np.ndarray) -> np.ndarray:
    a, b, c, d = x
    t2 = np.exp(-2.0 * b * v / cos_t)
    lin = a * v * cos_t * (1.0 - t2) + t2 * np.power(10.0, (c + d * mv) / 10.0)
    return 10.0 * np.log10(lin)


def fit_wcm(
    total_db: npt.ArrayLike,
    v: npt.ArrayLike,
    theta_deg: npt.ArrayLike,
    mv: npt.ArrayLike,
    *,
    pol: str = "vv",
    x0: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] = BOUNDS,
    loss: str = "soft_l1",
    f_scale_db: float = 1.0,
) -> dict[str, float]:
    """Fit (A, B, C, D) of the WCM to one set of matchups by bounded robust least squares.

    Minimises ``sum rho((sigma0_model[dB] - sigma0_obs[dB])^2)`` with the forward model of the module
    docstring, :func:`scipy.optimize.least_squares` (``method='trf'``, ``loss``, ``f_scale``), from a
    few starting values of B (the cost is not convex in (A, B)); the lowest cost wins.

    Parameters
    ----------
    total_db : array_like
        Observed backscatter (dB).
    v : array_like
        Vegetation descriptor (>= 0).
    theta_deg : array_like
        Incidence angle (degrees, 0-90 exclusive).
    mv : array_like
        In-situ soil moisture (m3/m3).
    pol : str, default 'vv'
        Polarisation, only to pick starting values from
        :data:`~ssm_spark.physics.wcm.DEFAULT_WCM_PARAMS`.
    x0 : mapping, optional
        Starting values (A, B, C, D); default from ``DEFAULT_WCM_PARAMS[pol]``.
    bounds : mapping, default :data:`BOUNDS`
        (low, high) per parameter.
    loss : str, default 'soft_l1'
        Robust loss of ``least_squares`` ('linear' for plain least squares).
    f_scale_db : float, default 1.0
        Soft margin between inlier and outlier residuals (dB).

    Returns
    -------
    dict
        ``A, B, C, D``; ``A_se .. D_se`` approximate standard errors (Gauss-Newton, from the
        robust-weighted Jacobian, scaled by the residual variance; NaN when singular);
        ``rmse_db``, ``bias_db`` (mean of model - observation) on the rows used; ``n_samples``;
        ``cost``; ``success``.

    Raises
    ------
    CalibrationError
        If fewer than 5 valid rows remain (4 parameters) or every start fails.
    """
    y = np.asarray(total_db, dtype=float)
    vv_ = np.asarray(v, dtype=float)
    t = np.asarray(theta_deg, dtype=float)
    m = np.asarray(mv, dtype=float)
    y, vv_, t, m = np.broadcast_arrays(y, vv_, t, m)
    ok = np.isfinite(y) & np.isfinite(vv_) & np.isfinite(t) & np.isfinite(m)
    ok &= (vv_ >= 0) & (t > 0) & (t < 90)
    n = int(ok.sum())
    if n < len(PARAM_NAMES) + 1:
        raise CalibrationError(
            f"WCM calibration ({pol}): only {n} valid matchups (need >= {len(PARAM_NAMES) + 1}); "
            "check for NaN backscatter, angle or vegetation columns"
        )
    y, vv_, cos_t, m = y[ok], vv_[ok], np.cos(np.deg2rad(t[ok])), m[ok]
    lo = np.array([bounds[k][0] for k in PARAM_NAMES], dtype=float)
    hi = np.array([bounds[k][1] for k in PARAM_NAMES], dtype=float)
    start = dict(DEFAULT_WCM_PARAMS.get(pol.lower(), DEFAULT_WCM_PARAMS["vv"]))
    if x0 is not None:
        start.update({k: float(x0[k]) for k in PARAM_NAMES if k in x0})

    def resid(x: np.ndarray) -> np.ndarray:
        return _model_db(x, vv_, cos_t, m) - y

    best = None
    b_starts = (start["B"],) + tuple(b for b in _B_STARTS if abs(b - start["B"]) > 1e-9)
    for b0 in b_starts:
        x_init = np.clip(
            np.array([start["A"], b0, start["C"], start["D"]], dtype=float),
            lo + 1e-6 * (hi - lo),
            hi - 1e-6 * (hi - lo),
        )
        try:
            res = least_squares(
                resid, x_init, bounds=(lo, hi), loss=loss, f_scale=f_scale_db, method="trf"
            )
        except (ValueError, FloatingPointError) as exc:  # pragma: no cover - defensive
            log.debug("WCM start B=%s failed: %s", b0, exc)
            continue
        if np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        raise CalibrationError(f"WCM calibration ({pol}): every start failed on {n} matchups")
    r = resid(best.x)
    dof = max(n - len(PARAM_NAMES), 1)
    s2 = float(np.sum(r**2) / dof)
    jac = np.asarray(best.jac, dtype=float)
    try:
        cov = np.linalg.inv(jac.T @ jac) * s2
        se = np.sqrt(np.where(np.diag(cov) >= 0, np.diag(cov), np.nan))
    except np.linalg.LinAlgError:
        se = np.full(len(PARAM_NAMES), np.nan)
    out: dict[str, Any] = {k: float(val) for k, val in zip(PARAM_NAMES, best.x)}
    out.update({f"{k}_se": float(val) for k, val in zip(PARAM_NAMES, se)})
    out.update(
        rmse_db=float(np.sqrt(np.mean(r**2))),
        bias_db=float(np.mean(r)),
        n_samples=n,
        cost=float(best.cost),
        success=bool(best.success),
    )
    return out


def _rmse(x: Mapping[str, float], y: np.ndarray, v: np.ndarray, t: np.ndarray, m: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(v) & np.isfinite(t) & np.isfinite(m) & (v >= 0)
    if not ok.any():
        return float("nan")
    model = _model_db(
        np.array([x[k] for k in PARAM_NAMES]), v[ok], np.cos(np.deg2rad(t[ok])), m[ok]
    )
    return float(np.sqrt(np.mean((model - y[ok]) ** 2)))


def calibrate_wcm(
    matchups: pd.DataFrame,
    *,
    pols: Sequence[str] = POLS,
    veg_col: str = "ndvi",
    ssm_col: str = "ssm",
    incidence_col: str = "incidence_deg",
    station_col: str = "station_id",
    env_col: str = "env",
    backscatter_cols: Mapping[str, str] | None = None,
    nominal_incidence_deg: float | None = None,
    min_samples: int = 30,
    min_stations: int = 3,
    loss: str = "soft_l1",
    f_scale_db: float = 1.0,
) -> pd.DataFrame:
    """Calibrate the WCM per environment and polarisation with the env -> group -> global fallback.

    Parameters
    ----------
    matchups : pandas.DataFrame
        One row per (station, date) with backscatter (``vv_db``, ``vh_db``), ``incidence_deg``, the
        vegetation descriptor, ``ssm`` (in situ, m3/m3), ``station_id`` and ``env``. Rows with NaN in a
        column a fit needs are left out of that fit.
    pols : sequence of str, default ('vv', 'vh')
        Polarisations to calibrate; one whose backscatter column is absent is skipped (logged).
    veg_col, ssm_col, incidence_col, station_col, env_col : str
        Column names.
    backscatter_cols : mapping, optional
        Column per polarisation; default ``{pol: f"{pol}_db"}``.
    nominal_incidence_deg : float, optional
        Angle used when ``incidence_col`` is absent (e.g. a user table without it).
    min_samples, min_stations : int, default 30 and 3
        An environment (or group) gets its own fit only with at least this many matchups from at
        least this many distinct stations.
    loss : str, default 'soft_l1'
        Robust loss for :func:`scipy.optimize.least_squares`.
    f_scale_db : float, default 1.0
        Robust-loss scale (dB).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`, one row per (key, pol) where key is each environment, each
        land-cover group and ``"global"``: fitted ``A, B, C, D`` and their approximate standard errors,
        ``rmse_db``/``bias_db``/``n_samples``/``n_stations`` of the fit that produced them, ``level``
        (``'environment'``, ``'group'`` or ``'global'``), ``source_key`` (the key whose data were
        fitted), and the key's own ``env_n_samples``, ``env_n_stations`` and ``env_rmse_db`` (RMSE of
        the chosen parameters on the key's own matchups). ``attrs`` holds the settings
        (vegetation descriptor, thresholds, loss).

    Raises
    ------
    InputError
        If a required column is missing (named), or no polarisation column is present.
    CalibrationError
        If the global fit of a polarisation has too few valid matchups.
    """
    if not isinstance(matchups, pd.DataFrame):
        raise InputError(f"calibrate_wcm: 'matchups' must be a pandas DataFrame, got {type(matchups)}")
    cols = dict(backscatter_cols or {p: f"{p}_db" for p in pols})
    required = [veg_col, ssm_col, station_col]
    missing = [c for c in required if c not in matchups.columns]
    if incidence_col not in matchups.columns and nominal_incidence_deg is None:
        missing.append(incidence_col)
    if missing:
        raise InputError(
            f"calibrate_wcm: matchup table lacks column(s) {missing}; present: {list(matchups.columns)}"
            + (
                " (no incidence angle? pass nominal_incidence_deg)"
                if incidence_col in missing
                else ""
            )
        )
    present = [p for p in pols if cols.get(p) in matchups.columns]
    for p in pols:
        if p not in present:
            log.info("calibrate_wcm: no column %r, polarisation %s skipped", cols.get(p), p)
    if not present:
        raise InputError(
            f"calibrate_wcm: none of the backscatter columns {[cols.get(p) for p in pols]} is present"
        )

    n_rows = len(matchups)
    v = matchups[veg_col].to_numpy(dtype=float)
    mv = matchups[ssm_col].to_numpy(dtype=float)
    if incidence_col in matchups.columns:
        theta = matchups[incidence_col].to_numpy(dtype=float)
    else:
        theta = np.full(n_rows, float(nominal_incidence_deg))
    stations = matchups[station_col].to_numpy()
    if env_col in matchups.columns:
        envs = matchups[env_col].astype(object).where(matchups[env_col].notna(), None).to_numpy()
    else:
        envs = np.full(n_rows, None, dtype=object)
    groups = np.array([group_of(e) for e in envs], dtype=object)

    rows: list[dict[str, Any]] = []
    for pol in present:
        y = matchups[cols[pol]].to_numpy(dtype=float)
        valid = np.isfinite(y) & np.isfinite(v) & np.isfinite(mv) & np.isfinite(theta) & (v >= 0)

        def counts(mask: np.ndarray) -> tuple[int, int]:
            sel = mask & valid
            return int(sel.sum()), int(pd.unique(stations[sel]).size)

        def fit(mask: np.ndarray, key: str) -> dict[str, Any]:
            log.debug("calibrate_wcm: fitting %s %s on %d rows", key, pol, int((mask & valid).sum()))
            res = fit_wcm(
                y[mask], v[mask], theta[mask], mv[mask], pol=pol, loss=loss, f_scale_db=f_scale_db
            )
            res["n_stations"] = counts(mask)[1]
            return res

        everything = np.ones(n_rows, dtype=bool)
        global_fit = fit(everything, GLOBAL_KEY)
        fits: dict[str, tuple[dict[str, Any], str, str]] = {
            GLOBAL_KEY: (global_fit, "global", GLOBAL_KEY)
        }
        key_masks: dict[str, np.ndarray] = {GLOBAL_KEY: everything}

        for g in sorted({g for g in groups if g is not None}):
            mask = groups == g
            key_masks[g] = mask
            n_s, n_st = counts(mask)
            if n_s >= min_samples and n_st >= min_stations:
                fits[g] = (fit(mask, g), "group", g)
            else:
                fits[g] = (global_fit, "global", GLOBAL_KEY)
        for e in sorted({e for e in envs if e is not None}):
            e = str(e)
            mask = envs == e
            if e in fits:  # an env key without "_" is its own group: same data, same fit
                key_masks[e] = mask
                continue
            key_masks[e] = mask
            n_s, n_st = counts(mask)
            if n_s >= min_samples and n_st >= min_stations:
                fits[e] = (fit(mask, e), "environment", e)
            else:
                fits[e] = fits[group_of(e)]

        for key, (res, level, source) in fits.items():
            mask = key_masks[key]
            n_s, n_st = counts(mask)
            rows.append(
                {
                    "env": key,
                    "pol": pol,
                    **{k: res[k] for k in PARAM_NAMES},
                    **{f"{k}_se": res[f"{k}_se"] for k in PARAM_NAMES},
                    "rmse_db": res["rmse_db"],
                    "bias_db": res["bias_db"],
                    "n_samples": int(res["n_samples"]),
                    "n_stations": int(res["n_stations"]),
                    "level": level,
                    "source_key": source,
                    "env_n_samples": n_s,
                    "env_n_stations": n_st,
                    "env_rmse_db": _rmse(res, y[mask], v[mask], theta[mask], mv[mask]),
                }
            )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table.attrs.update(
        vegetation_descriptor=veg_col,
        min_samples=int(min_samples),
        min_stations=int(min_stations),
        loss=loss,
        f_scale_db=float(f_scale_db),
        incidence="column" if incidence_col in matchups.columns else f"nominal {nominal_incidence_deg}",
    )
    return table
