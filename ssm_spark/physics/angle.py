"""Incidence-angle normalisation of backscatter to a reference angle.

Sentinel-1 IW sees a cell at 30-46 deg, and the ascending and descending passes see the same cell at
different angles (on the demo region ``theta_asc + theta_desc = 76 deg``). Backscatter falls with
the angle (about -0.1 to -0.3 dB/deg at C band over land), so a one-orbit time series mixes the
angle into the moisture signal. The usual first-order correction (e.g. Wagner et al. 1999; the
Copernicus Sentinel-1 1 km SSM product) is linear in dB:

``sigma0(theta_ref)[dB] = sigma0(theta)[dB] - beta (theta - theta_ref)``

with the slope ``beta`` (dB/deg) estimated from the data, either

* **per environment** from the training matchups, by a robust within-station regression that also
  takes the in-situ moisture as a covariate (so a wet evening pass is not read as an angle effect):
  ``s - s_station = beta (theta - theta_station) + gamma (ssm - ssm_station)``
  (:func:`fit_slopes`, the same environment -> land-cover group -> global fallback as the WCM), or
* **per cell** from the cell's own multi-orbit time series (no in-situ value needed, so available
  everywhere in production; :func:`ssm_spark.physics.change_detection.climatology`), where the cell
  saw a wide enough spread of angles; elsewhere the environment's slope.

Everything is plain numpy/pandas; slopes travel with the model registry (``physics.wcm["angle"]``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ssm_spark.physics.wcm_params import EnvKeys

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SLOPES", "SLOPE_BOUNDS", "normalise", "fit_slope", "fit_slopes", "slope_arrays",
           "reference_backscatter"]

#: Slopes used where none could be fitted (dB/deg): typical C-band values over mixed land
#: (e.g. Bauer-Marschallinger et al. 2019 report a median of about -0.12 dB/deg for VV).
DEFAULT_SLOPES: dict[str, float] = {"vv": -0.12, "vh": -0.15}
#: Physical bounds of a slope (dB/deg): backscatter of land does not rise with the angle.
SLOPE_BOUNDS: tuple[float, float] = (-0.5, 0.05)
GLOBAL_KEY = "global"


def normalise(sigma_db: Any, theta_deg: Any, slope: Any, theta_ref: float) -> np.ndarray:
    """``sigma0(theta_ref) = sigma0(theta) - slope (theta - theta_ref)`` (dB, dB/deg, deg).

    NaN slopes leave the value unchanged (no correction is better than an invented one)."""
    s = np.asarray(sigma_db, dtype=float)
    b = np.asarray(slope, dtype=float)
    d = np.asarray(theta_deg, dtype=float) - float(theta_ref)
    return s - np.where(np.isfinite(b), b, 0.0) * d


def fit_slope(sigma_db: np.ndarray, theta_deg: np.ndarray, station: np.ndarray,
              ssm: np.ndarray | None = None, *, f_scale_db: float = 1.0) -> dict[str, float]:
    """Robust within-station slope of backscatter on the incidence angle (dB/deg).

    Both sides are centred on each station's mean (a station's roughness and mean moisture never
    enter the slope); the in-situ moisture, centred likewise, is a covariate when given. Fitted by
    :func:`scipy.optimize.least_squares` with the ``soft_l1`` loss (``f_scale`` in dB), bounded to
    :data:`SLOPE_BOUNDS`.

    Returns
    -------
    dict
        ``slope``, ``slope_se``, ``moisture_db_per_unit`` (gamma), ``n``, ``stations``,
        ``angle_spread_deg`` (std of the centred angles): with no spread the slope is NaN.
    """
    y = np.asarray(sigma_db, float)
    t = np.asarray(theta_deg, float)
    m = np.zeros_like(y) if ssm is None else np.asarray(ssm, float)
    ok = np.isfinite(y) & np.isfinite(t) & np.isfinite(m)
    y, t, m, st = y[ok], t[ok], m[ok], np.asarray(station)[ok]
    out = {"slope": math.nan, "slope_se": math.nan, "moisture_db_per_unit": math.nan, "n": int(len(y)),
           "stations": int(pd.unique(st).size) if len(st) else 0, "angle_spread_deg": 0.0}
    if len(y) < 5:
        return out
    codes = pd.factorize(st)[0]
    def centred(a: np.ndarray) -> np.ndarray:
        mean = np.bincount(codes, a) / np.bincount(codes)
        return a - mean[codes]
    yc, tc, mc = centred(y), centred(t), centred(m)
    spread = float(np.std(tc))
    out["angle_spread_deg"] = spread
    if spread < 0.5:
        return out
    use_m = ssm is not None and float(np.std(mc)) > 1e-6
    lo, hi = SLOPE_BOUNDS
    def resid(x: np.ndarray) -> np.ndarray:
        return x[0] * tc + (x[1] * mc if use_m else 0.0) - yc
    res = least_squares(resid, np.array([-0.1, 10.0]), bounds=([lo, -100.0], [hi, 200.0]),
                        loss="soft_l1", f_scale=f_scale_db)
    r = res.fun
    jac = res.jac[:, :2] if use_m else res.jac[:, :1]
    try:
        cov = np.linalg.inv(jac.T @ jac) * float(np.sum(r ** 2) / max(len(r) - jac.shape[1], 1))
        se = float(np.sqrt(cov[0, 0]))
    except np.linalg.LinAlgError:
        se = math.nan
    out.update(slope=float(res.x[0]), slope_se=se, moisture_db_per_unit=float(res.x[1]) if use_m else math.nan)
    return out


def fit_slopes(df: pd.DataFrame, *, pols: Sequence[str] = ("vv", "vh"), min_samples: int = 30,
               min_stations: int = 3, incidence_col: str = "incidence_deg", station_col: str = "station_id",
               env_col: str = "env", ssm_col: str | None = "ssm") -> dict[str, Any]:
    """Per-environment angle slopes with the environment -> land-cover group -> global fallback.

    An environment (group) gets its own slope with at least ``min_samples`` rows from
    ``min_stations`` stations and a finite fit; otherwise its group's, then the global one, then
    :data:`DEFAULT_SLOPES`. Without an incidence column every slope is the default (and the
    normalisation is a constant shift of a nominal angle, recorded as ``source: "default"``).

    Returns
    -------
    dict
        ``{"slopes": {key: {pol: {"slope", "source", "n", "stations", "slope_se"}}}}`` for every
        environment, group and ``"global"``.
    """
    from ssm_spark.physics.calibrate import group_of

    has_angle = incidence_col in df.columns and df[incidence_col].notna().any()
    keys_env = sorted(map(str, df[env_col].dropna().unique())) if env_col in df.columns else []
    groups = sorted({group_of(e) for e in keys_env} - {None})
    result: dict[str, dict[str, Any]] = {}

    def fit(mask: np.ndarray, pol: str) -> dict[str, Any] | None:
        col = f"{pol}_db"
        sub = df.loc[mask]
        if len(sub) < min_samples or sub[station_col].nunique() < min_stations:
            return None
        f = fit_slope(sub[col].to_numpy(float), sub[incidence_col].to_numpy(float), sub[station_col].to_numpy(),
                      None if ssm_col is None or ssm_col not in sub.columns else sub[ssm_col].to_numpy(float))
        if not math.isfinite(f["slope"]):
            return None
        return {"slope": f["slope"], "slope_se": f["slope_se"], "n": f["n"], "stations": f["stations"]}

    for pol in pols:
        if f"{pol}_db" not in df.columns or not has_angle:
            for key in (*keys_env, *groups, GLOBAL_KEY):
                result.setdefault(key, {})[pol] = {"slope": DEFAULT_SLOPES[pol], "source": "default"}
            continue
        g = fit(np.ones(len(df), bool), pol)
        glob = {**g, "source": GLOBAL_KEY} if g else {"slope": DEFAULT_SLOPES[pol], "source": "default"}
        result.setdefault(GLOBAL_KEY, {})[pol] = glob
        env_group = df[env_col].map(group_of) if env_col in df.columns else None
        for grp in groups:
            f = fit((env_group == grp).to_numpy(), pol)
            result.setdefault(grp, {})[pol] = {**f, "source": grp} if f else dict(glob)
        for env in keys_env:
            f = fit((df[env_col].astype(str) == env).to_numpy(), pol)
            result.setdefault(env, {})[pol] = {**f, "source": env} if f else dict(result[group_of(env)][pol])
    return {"slopes": result}


def slope_arrays(angle: Mapping[str, Any] | None, envs: np.ndarray | None, pol: str, n: int) -> np.ndarray:
    """The fitted slope (dB/deg) of each row's environment (fallback: group, global, default)."""
    from ssm_spark.physics.calibrate import group_of

    slopes = (angle or {}).get("slopes", {})
    default = slopes.get(GLOBAL_KEY, {}).get(pol, {}).get("slope", DEFAULT_SLOPES.get(pol, DEFAULT_SLOPES["vv"]))
    if envs is None:
        return np.full(n, float(default))
    keys = EnvKeys.of(envs)
    uniq = keys.uniques
    table = np.empty(len(uniq) + 1)
    for i, e in enumerate(uniq):
        hit = slopes.get(str(e)) or slopes.get(group_of(e) or "") or {}
        table[i] = float(hit.get(pol, {}).get("slope", default))
    table[-1] = float(default)
    return table[keys.dense()]


def reference_backscatter(df: "pd.DataFrame | Mapping[str, Any]", angle: Mapping[str, Any], theta: np.ndarray,
                          pols: Sequence[str], env_col: str = "env") -> dict[str, np.ndarray]:
    """``<pol>_ref_db`` of every row: its backscatter normalised to ``angle["theta_ref"]`` with its
    environment's slope, or its cell's own (``clim_slope_<pol>``) where ``angle["mode"]`` is
    ``cell`` and the cell has one. ``df``: a DataFrame, or a mapping of column arrays (its
    ``env_col`` an array of keys or an :class:`~ssm_spark.physics.wcm_params.EnvKeys`)."""
    frame = isinstance(df, pd.DataFrame)
    names = df.columns if frame else df
    n = len(df) if frame else (len(np.asarray(df[f"{pols[0]}_db"])) if pols else 0)

    def col(name: str) -> np.ndarray:
        return df[name].to_numpy(float) if frame else np.asarray(df[name], dtype=float)

    envs = None
    if env_col in names:
        envs = df[env_col].to_numpy(dtype=object) if frame else df[env_col]
    out = {}
    for pol in pols:
        slope = slope_arrays(angle, envs, pol, n)
        if angle.get("mode") == "cell" and f"clim_slope_{pol}" in names:
            cell = col(f"clim_slope_{pol}")
            slope = np.where(np.isfinite(cell), cell, slope)
        out[f"{pol}_ref_db"] = normalise(col(f"{pol}_db"), theta, slope, float(angle["theta_ref"]))
    return out
