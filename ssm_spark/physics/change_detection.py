"""Change detection from a cell's own backscatter time series (Wagner et al. 1999).

The TU Wien change-detection method, the method of the Copernicus Sentinel-1 1 km SSM product:
each cell is its own reference. Over a window of dates, the angle-normalised backscatter of the
cell has a *dry reference* (a low percentile) and a *wet reference* (a high percentile); a date's

``relative wetness  m_s = (s - dry) / (wet - dry)``  (0 = driest seen, 1 = wettest seen)

cancels the cell's roughness, texture and mean vegetation, which no global model can know, and the

``anomaly  s - mean``  (dB)

carries the date's departure from the cell's normal. Both are coupled features for the trees; the
``change_detection`` candidate maps ``m_s`` to volumetric units with a per-environment linear
calibration ``mv = a + b m_s`` (:func:`calibrate_cd`, fitted on training stations only), bounded to
``[0, porosity]`` and flagged where it had to be.

Angles: the series is normalised to the cell's mean angle with the cell's own slope
(:func:`climatology` fits it where the cell saw a spread of angles of at least ``min_spread_deg``,
e.g. ascending and descending passes), else with :data:`ssm_spark.physics.angle.DEFAULT_SLOPES`; the
same slope is used when the features are computed (:func:`cd_features`), so the two always agree.

The per-cell statistics (:data:`CLIM_COLUMNS`) are computed from backscatter alone, never from
in-situ values: in matchups from the cell's own stack dates, in a user table from each station's own
rows, in production once per tile over the window (stored as a climatology stack).

References
----------
Wagner, W., Lemoine, G. and Rott, H. (1999), A method for estimating soil moisture from ERS
scatterometer and soil data, Remote Sens. Environ. 70, 191-207. Bauer-Marschallinger, B. et al.
(2019), Toward global soil moisture monitoring with Sentinel-1, IEEE TGRS 57(1), 520-539.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ssm_spark.physics.angle import DEFAULT_SLOPES, SLOPE_BOUNDS
from ssm_spark.physics.wcm_params import EnvKeys

__all__ = ["CLIM_COLUMNS", "CD_FEATURES", "climatology", "climatology_frame", "cd_features", "calibrate_cd",
           "cd_arrays", "porosity"]

#: Per-cell climatology columns (the bands of a climatology stack), in order.
CLIM_COLUMNS: tuple[str, ...] = (
    "clim_n", "clim_theta_mean",
    "clim_slope_vv", "clim_dry_vv", "clim_wet_vv", "clim_mean_vv",
    "clim_slope_vh", "clim_dry_vh", "clim_wet_vh", "clim_mean_vh",
)
#: Change-detection features of a row (per polarisation present).
CD_FEATURES: tuple[str, ...] = ("rw_vv", "anom_vv_db", "rw_vh", "anom_vh_db")
#: Smallest wet - dry contrast (dB) for a meaningful relative wetness.
MIN_CONTRAST_DB = 0.5
_SOLID_DENSITY = 2.65
GLOBAL_KEY = "global"


def porosity(bulk_density: Any, n: int, default: float = 0.6) -> np.ndarray:
    """Total porosity ``1 - bulk_density / 2.65`` (m3/m3), ``default`` where bulk density is unknown."""
    if bulk_density is None:
        return np.full(n, float(default))
    bd = np.asarray(bulk_density, dtype=float)
    p = 1.0 - bd / _SOLID_DENSITY
    return np.where(np.isfinite(p) & (p > 0.2) & (p < 0.9), p, float(default))


def _robust_slopes(y: np.ndarray, x: np.ndarray, ok: np.ndarray, iters: int = 3, c: float = 1.345) -> np.ndarray:
    """Row-wise Huber IRLS slope of y on x (arrays n_cells x n_dates, ``ok`` the valid entries)."""
    w = ok.astype(float)
    y0 = np.where(ok, y, 0.0)
    x0 = np.where(ok, x, 0.0)
    b = np.full(y.shape[0], np.nan)
    for _ in range(iters + 1):
        sw = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            xm = (w * x0).sum(1) / sw
            ym = (w * y0).sum(1) / sw
            dx = np.where(ok, x0 - xm[:, None], 0.0)
            dy = np.where(ok, y0 - ym[:, None], 0.0)
            b = (w * dx * dy).sum(1) / (w * dx * dx).sum(1)
            r = np.where(ok, dy - b[:, None] * dx, np.nan)
            scale = 1.4826 * _row_nanpercentile(np.abs(r), 50.0) if r.shape[1] else np.full(len(b), np.nan)
            scale = np.where(np.isfinite(scale) & (scale > 1e-6), scale, 1e-6)
            w = np.where(ok, np.minimum(1.0, c * scale[:, None] / np.maximum(np.abs(r), 1e-12)), 0.0)
    return b


def climatology(
    theta: np.ndarray,
    series: Mapping[str, np.ndarray],
    *,
    dry_percentile: float = 5.0,
    wet_percentile: float = 95.0,
    min_dates: int = 10,
    min_spread_deg: float = 3.0,
) -> dict[str, np.ndarray]:
    """Per-cell change-detection references from time series (cells x dates arrays, NaN = no date).

    Parameters
    ----------
    theta : ndarray (n_cells, n_dates)
        Incidence angle (deg); a scalar-per-date nominal angle is fine.
    series : mapping
        ``{"vv": ndarray, "vh": ndarray}`` backscatter in dB (either may be absent), same shape.
    dry_percentile, wet_percentile : float
        Robust low and high percentiles of the angle-normalised series.
    min_dates : int
        Fewer valid dates: every statistic of the cell is NaN (flagged when features are made).
    min_spread_deg : float
        The cell's own slope is fitted (Huber regression) where its angles span at least this;
        elsewhere the default slope of :mod:`ssm_spark.physics.angle` normalises the series.

    Returns
    -------
    dict of ndarray
        :data:`CLIM_COLUMNS` (those of the polarisations given, plus ``clim_n`` and
        ``clim_theta_mean``), float64 per cell; ``clim_slope_<pol>`` is the fitted slope or NaN.
    """
    theta = np.asarray(theta, dtype=float)
    out: dict[str, np.ndarray] = {}
    first = next(p for p in ("vv", "vh") if p in series)
    base_ok = np.isfinite(np.asarray(series[first], float)) & np.isfinite(theta)
    n = base_ok.sum(1)
    enough = n >= int(min_dates)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_sum = np.where(base_ok, theta, 0.0).sum(1) if theta.shape[1] else np.zeros(len(n))
        t_mean = np.where(enough, t_sum / np.maximum(n, 1), np.nan)
        t_min = np.nanmin(np.where(base_ok, theta, np.inf), axis=1) if theta.shape[1] else np.full(len(n), np.inf)
        t_max = np.nanmax(np.where(base_ok, theta, -np.inf), axis=1) if theta.shape[1] else np.full(len(n), -np.inf)
    out["clim_n"] = n.astype(float)
    out["clim_theta_mean"] = t_mean
    spread_ok = enough & ((t_max - t_min) >= float(min_spread_deg))
    lo_b, hi_b = SLOPE_BOUNDS
    for pol in ("vv", "vh"):
        if pol not in series:
            continue
        s = np.asarray(series[pol], dtype=float)
        ok = np.isfinite(s) & np.isfinite(theta)
        slope = np.full(len(n), np.nan)
        if spread_ok.any():
            b = _robust_slopes(s[spread_ok], theta[spread_ok], ok[spread_ok])
            slope[spread_ok] = np.where((b >= lo_b) & (b <= hi_b), b, np.nan)
        use = np.where(np.isfinite(slope), slope, DEFAULT_SLOPES[pol])
        sc = np.where(ok, s - use[:, None] * (theta - t_mean[:, None]), np.nan)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # cells without dates: all-NaN rows
            dry = _row_nanpercentile(sc, dry_percentile)
            wet = _row_nanpercentile(sc, wet_percentile)
            mean = np.nanmean(sc, axis=1)
        for name, val in (("slope", slope), ("dry", dry), ("wet", wet), ("mean", mean)):
            out[f"clim_{name}_{pol}"] = np.where(enough, val, np.nan)
    return out


def _row_nanpercentile(a: np.ndarray, q: float) -> np.ndarray:
    """``np.nanpercentile(a, q, axis=1)`` (method 'linear', same arithmetic) vectorised over rows:
    numpy's own loops over the rows in Python when they hold NaN (100 s for a 256 x 256 tile)."""
    a = np.asarray(a, dtype=float)
    if a.shape[1] == 0:
        return np.full(len(a), np.nan)
    s = np.sort(np.where(np.isnan(a), np.inf, a), axis=1)  # NaN last (as +inf); +inf is not in a series
    n = (~np.isnan(a)).sum(1)
    pos = (np.maximum(n, 1) - 1) * (float(q) / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    t = pos - lo
    idx = np.arange(len(a))
    x0, x1 = s[idx, lo], s[idx, hi]
    d = x1 - x0
    with np.errstate(invalid="ignore"):
        v = np.where(t >= 0.5, x1 - d * (1.0 - t), x0 + d * t)  # numpy's _lerp
        v = np.where(hi == lo, x0, v)
    return np.where(n > 0, v, np.nan)


def climatology_frame(
    df: pd.DataFrame,
    by: Sequence[str],
    *,
    date_col: str = "date",
    incidence_col: str = "incidence_deg",
    nominal_incidence_deg: float | None = None,
    window: tuple[Any, Any] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`climatology` of every group of rows (a cell, or a station of a user table).

    Rows are put on a (group x date) grid; several rows of a group on one date are averaged in
    linear power first. Only dates inside ``window`` (inclusive ``(start, end)``, None: all) count.

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns then :data:`CLIM_COLUMNS` present.
    """
    d = df
    if window is not None and date_col in d.columns:
        dates = pd.to_datetime(d[date_col])
        keep = np.ones(len(d), bool)
        if window[0] is not None:
            keep &= (dates >= pd.Timestamp(window[0])).to_numpy()
        if window[1] is not None:
            keep &= (dates <= pd.Timestamp(window[1])).to_numpy()
        d = d.loc[keep]
    pols = [p for p in ("vv", "vh") if f"{p}_db" in d.columns]
    if not pols:
        return pd.DataFrame(columns=[*by, *CLIM_COLUMNS])
    gkey = pd.MultiIndex.from_frame(d[list(by)].reset_index(drop=True)) if len(by) > 1 else d[by[0]].to_numpy()
    gcodes, guniq = pd.factorize(gkey)
    dcodes, duniq = pd.factorize(pd.to_datetime(d[date_col]).to_numpy() if date_col in d.columns
                                 else np.arange(len(d)))
    shape = (len(guniq), len(duniq))
    if incidence_col in d.columns:
        th_rows = d[incidence_col].to_numpy(float)
    else:
        th_rows = np.full(len(d), float(nominal_incidence_deg if nominal_incidence_deg is not None else 39.0))
    def grid_mean(v: np.ndarray, linear: bool) -> np.ndarray:
        ok = np.isfinite(v)
        vals = 10.0 ** (v / 10.0) if linear else v
        s = np.zeros(shape)
        c = np.zeros(shape)
        np.add.at(s, (gcodes[ok], dcodes[ok]), vals[ok])
        np.add.at(c, (gcodes[ok], dcodes[ok]), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s / c
        return 10.0 * np.log10(m) if linear else m
    series = {p: grid_mean(d[f"{p}_db"].to_numpy(float), True) for p in pols}
    theta = grid_mean(th_rows, False)
    clim = climatology(theta, series, **kwargs)
    if len(by) > 1:
        out = pd.DataFrame(list(guniq), columns=list(by))
    else:
        out = pd.DataFrame({by[0]: guniq})
    for c in CLIM_COLUMNS:
        if c in clim:
            out[c] = clim[c]
    return out


def cd_features(data: "pd.DataFrame | Mapping[str, Any]", theta: np.ndarray, pols: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Relative wetness and anomaly of each row against its cell's climatology columns.

    ``data``: a DataFrame or a mapping of column arrays. Returns ``({rw_<pol>, anom_<pol>_db},
    missing)`` with ``missing`` True where the row has no usable climatology (too few dates, no
    contrast): those rows get NaN features and the
    :attr:`~ssm_spark.physics.qc.QC.CHANGE_DETECTION_MISSING` bit from the caller.
    """
    frame = isinstance(data, pd.DataFrame)
    names = data.columns if frame else data

    def col(name: str) -> np.ndarray:
        return data[name].to_numpy(float) if frame else np.asarray(data[name], dtype=float)

    n = len(data) if frame else len(theta)
    out: dict[str, np.ndarray] = {}
    missing = np.ones(n, bool)
    if "clim_theta_mean" not in names:
        return out, missing
    t_mean = col("clim_theta_mean")
    for pol in pols:
        cols = [f"clim_{k}_{pol}" for k in ("slope", "dry", "wet", "mean")]
        if f"{pol}_db" not in names or any(c not in names for c in cols):
            continue
        s = col(f"{pol}_db")
        slope, dry, wet, mean = (col(c) for c in cols)
        use = np.where(np.isfinite(slope), slope, DEFAULT_SLOPES[pol])
        sc = s - use * (theta - t_mean)
        contrast = wet - dry
        good = np.isfinite(contrast) & (contrast >= MIN_CONTRAST_DB)
        with np.errstate(invalid="ignore", divide="ignore"):
            rw = np.where(good, (sc - dry) / contrast, np.nan)
        out[f"rw_{pol}"] = rw
        out[f"anom_{pol}_db"] = np.where(np.isfinite(mean), sc - mean, np.nan)
        missing &= ~np.isfinite(rw)
    return out, missing


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 5 or np.std(x[ok]) < 1e-6:
        return None
    x, y = x[ok], y[ok]
    b0 = np.polyfit(x, y, 1)
    res = least_squares(lambda p: p[0] + p[1] * x - y, np.array([b0[1], b0[0]]), loss="soft_l1", f_scale=0.05)
    return float(res.x[0]), float(res.x[1])


def calibrate_cd(df: pd.DataFrame, *, min_samples: int = 30, min_stations: int = 3, ssm_col: str = "ssm",
                 station_col: str = "station_id", env_col: str = "env", rw_col: str = "rw") -> dict[str, Any]:
    """Per-environment linear map ``mv = a + b m_s`` of relative wetness to soil moisture (m3/m3).

    Robust least squares (``soft_l1``, scale 0.05 m3/m3) on the training rows, with the environment ->
    land-cover group -> global fallback of the WCM calibration. Returns
    ``{"entries": {key: {"a", "b", "n", "stations", "source"}}}`` (empty without usable rows).
    """
    from ssm_spark.physics.calibrate import group_of

    entries: dict[str, dict[str, Any]] = {}
    if rw_col not in df.columns:
        return {"entries": entries}
    x_all = df[rw_col].to_numpy(float)
    y_all = df[ssm_col].to_numpy(float)
    st_all = df[station_col].to_numpy()

    def fit(mask: np.ndarray, key: str) -> dict[str, Any] | None:
        ok = mask & np.isfinite(x_all) & np.isfinite(y_all)
        if ok.sum() < min_samples or pd.unique(st_all[ok]).size < min_stations:
            return None
        line = _fit_line(x_all[ok], y_all[ok])
        if line is None:
            return None
        return {"a": line[0], "b": line[1], "n": int(ok.sum()), "stations": int(pd.unique(st_all[ok]).size),
                "source": key}

    g = fit(np.ones(len(df), bool), GLOBAL_KEY)
    if g is None:
        return {"entries": entries}
    entries[GLOBAL_KEY] = g
    envs = df[env_col].astype(str).to_numpy() if env_col in df.columns else np.full(len(df), GLOBAL_KEY)
    groups = np.array([group_of(e) for e in envs], dtype=object)
    for grp in sorted(set(groups) - {None}):
        entries[grp] = fit(groups == grp, grp) or dict(g)
    for env in sorted(set(envs)):
        if env != group_of(env):
            entries[env] = fit(envs == env, env) or dict(entries.get(group_of(env), g))
    return {"entries": entries}


def cd_arrays(cd: Mapping[str, Any] | None, envs: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of each row's environment (fallback: group, global; NaN without a calibration)."""
    from ssm_spark.physics.calibrate import group_of

    entries = (cd or {}).get("entries", {})
    glob = entries.get(GLOBAL_KEY)
    if glob is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    if envs is None:
        return np.full(n, glob["a"]), np.full(n, glob["b"])
    keys = EnvKeys.of(envs)
    uniq = keys.uniques
    a = np.empty(len(uniq) + 1)
    b = np.empty(len(uniq) + 1)
    for i, e in enumerate(uniq):
        hit = entries.get(str(e)) or entries.get(group_of(e) or "") or glob
        a[i], b[i] = hit["a"], hit["b"]
    a[-1], b[-1] = glob["a"], glob["b"]
    idx = keys.dense()
    return a[idx], b[idx]
