"""Validation metrics of estimated against in-situ soil moisture (numpy/pandas).

Conventions of Entekhabi et al. (2010), with ``e`` the estimate, ``o`` the observation (in situ) and
``n`` the number of pairs where both are finite:

``bias = mean(e - o)``

``RMSE = sqrt(mean((e - o)^2))``

``ubRMSE = sqrt(RMSE^2 - bias^2) = sqrt(mean(((e - mean(e)) - (o - mean(o)))^2))``

``R = cov(e, o) / (std(e) std(o))`` (Pearson, population moments)

``R`` is NaN when ``n < 3`` or when ``e`` or ``o`` has no variance (a standard deviation below
1e-6 of its root mean square, which also catches rounding in sums of a constant); ``ubRMSE`` is NaN
when ``n < 2``; everything but ``n`` is NaN when ``n == 0``.

Three entry points share one set of formulas (:func:`_from_moments`):

* :func:`metrics` on two arrays (centred moments, the most accurate);
* :func:`metrics_by` per group of a pandas DataFrame (vectorised centred moments);
* :func:`metrics_from_sums` from the additive sums ``n, sum e, sum o, sum e^2, sum o^2, sum eo``
  (and optionally ``sum d, sum d^2`` with ``d = e - o``), which is what the Spark twin
  (:mod:`ssm_spark.validation.spark_scores`) aggregates in one pass, and what lets sums per station be
  pooled into networks and environments exactly.

:func:`summary` gives the validation summary of docs/contracts.md (validation ``metrics.json``):
pooled metrics overall, per network and per environment, and the median of the per-station values
with the number of stations.

References
----------
Entekhabi, D., Reichle, R. H., Koster, R. D. and Crow, W. T. (2010). Performance metrics for soil
moisture retrievals and application requirements. Journal of Hydrometeorology 11(3), 832-840.

Li et al. (2025). Global multi-scale surface soil moisture retrieval coupling physical mechanisms and
machine learning in the cloud environment. Remote Sensing of Environment 329, 114928.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from ssm_spark.errors import InputError

__all__ = [
    "METRICS",
    "PAPER_REFERENCE",
    "metrics",
    "metrics_by",
    "metrics_from_sums",
    "sums_by",
    "summary",
    "summary_from_sums",
    "to_jsonable",
]

#: Metric names, in the order tables show them.
METRICS: tuple[str, ...] = ("R", "ubRMSE", "bias", "RMSE")

#: The paper's headline figures (Li et al. 2025, global ISMN in-situ sites at 1 km), for reference
#: lines in reports. They are the paper's figures on the paper's data, not a target on ours.
PAPER_REFERENCE: dict[str, Any] = {
    "label": "Li et al. (2025), paper's figures on their data (global ISMN, 1 km)",
    "R": 0.851,
    "ubRMSE": 0.058,
}

#: Sum columns of :func:`sums_by` / the Spark twin, in order.
SUM_COLUMNS: tuple[str, ...] = ("n", "s_e", "s_o", "s_ee", "s_oo", "s_eo", "s_d", "s_dd")

# A variance at or below this fraction of the mean square counts as zero (std < 1e-6 rms): it is
# rounding, not signal, and R would be noise.
_REL_VAR_EPS = 1e-12


def _from_moments(n: npt.ArrayLike, mean_e: npt.ArrayLike, mean_o: npt.ArrayLike, var_e: npt.ArrayLike,
                  var_o: npt.ArrayLike, cov_eo: npt.ArrayLike, bias: npt.ArrayLike, mse: npt.ArrayLike,
                  var_d: npt.ArrayLike) -> dict[str, np.ndarray]:
    """The metrics from population moments (arrays, one element per group). The one place of the
    formulas; see the module docstring."""
    n = np.asarray(n, dtype=np.float64)
    mean_e, mean_o, var_e, var_o, cov_eo, bias, mse, var_d = (
        np.asarray(a, dtype=np.float64) for a in (mean_e, mean_o, var_e, var_o, cov_eo, bias, mse, var_d))
    with np.errstate(invalid="ignore", divide="ignore"):
        flat_e = var_e <= _REL_VAR_EPS * (var_e + mean_e ** 2)
        flat_o = var_o <= _REL_VAR_EPS * (var_o + mean_o ** 2)
        r = np.clip(cov_eo / np.sqrt(var_e * var_o), -1.0, 1.0)
        r = np.where((n < 3) | flat_e | flat_o, np.nan, r)
        ubrmse = np.where(n < 2, np.nan, np.sqrt(np.maximum(var_d, 0.0)))
        rmse = np.sqrt(np.maximum(mse, 0.0))
    empty = n < 1
    return {
        "R": r,
        "ubRMSE": np.where(empty, np.nan, ubrmse),
        "bias": np.where(empty, np.nan, bias),
        "RMSE": np.where(empty, np.nan, rmse),
    }


def _scalar_dict(m: Mapping[str, np.ndarray], n: int) -> dict[str, float | int]:
    out: dict[str, float | int] = {k: float(np.asarray(m[k]).reshape(())) for k in METRICS}
    out["n"] = int(n)
    return out


def metrics(est: npt.ArrayLike, obs: npt.ArrayLike) -> dict[str, float | int]:
    """Pearson R, ubRMSE, bias and RMSE of an estimate against observations (Entekhabi et al. 2010).

    ``bias = mean(e - o)``, ``RMSE = sqrt(mean((e - o)^2))``,
    ``ubRMSE = sqrt(RMSE^2 - bias^2)`` (the standard deviation of ``e - o``),
    ``R = cov(e, o) / (std(e) std(o))``. Pairs where either value is NaN (or inf) are dropped.

    Parameters
    ----------
    est, obs : array_like
        Estimated and observed (in-situ) soil moisture, same shape, m3/m3.

    Returns
    -------
    dict
        ``{"R", "ubRMSE", "bias", "RMSE"}`` as floats and ``"n"`` (pairs used) as int. R is NaN when
        n < 3 or either series is constant; ubRMSE is NaN when n < 2; all are NaN when n == 0.

    Raises
    ------
    InputError
        When ``est`` and ``obs`` do not have the same shape.

    References
    ----------
    Entekhabi, D., Reichle, R. H., Koster, R. D. and Crow, W. T. (2010). J. Hydrometeorol. 11, 832-840.
    """
    e = np.asarray(est, dtype=np.float64)
    o = np.asarray(obs, dtype=np.float64)
    if e.shape != o.shape:
        raise InputError(f"metrics: est and obs must have the same shape, got {e.shape} and {o.shape}")
    ok = np.isfinite(e) & np.isfinite(o)
    e, o = e[ok], o[ok]
    n = e.size
    if n == 0:
        return _scalar_dict(_from_moments(0, *([np.nan] * 8)), 0)
    d = e - o
    me, mo, md = e.mean(), o.mean(), d.mean()
    ce, co, cd = e - me, o - mo, d - md
    m = _from_moments(n, me, mo, np.mean(ce * ce), np.mean(co * co), np.mean(ce * co), md, np.mean(d * d),
                      np.mean(cd * cd))
    return _scalar_dict(m, n)


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{what}: column(s) {missing} not in the table (columns: {list(df.columns)})")


def _pairs(df: pd.DataFrame, by: list[str], est: str, obs: str) -> pd.DataFrame:
    """by columns + float e, o, with non-finite pairs dropped."""
    _check_columns(df, by + [est, obs], "metrics_by")
    e = pd.to_numeric(df[est], errors="coerce").to_numpy(dtype=np.float64)
    o = pd.to_numeric(df[obs], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(e) & np.isfinite(o)
    out = df.loc[ok, by].copy() if by else pd.DataFrame(index=df.index[ok])
    out["_e"] = e[ok]
    out["_o"] = o[ok]
    return out


def metrics_by(df: pd.DataFrame, by: str | Sequence[str] | None, est: str = "ssm_est", obs: str = "ssm",
               min_n: int = 10) -> pd.DataFrame:
    """:func:`metrics` per group of a table (per station, network, environment, ...).

    Vectorised (two grouped passes: means, then centred moments), so thousands of stations take
    milliseconds. Pairs where either value is NaN are dropped first.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per estimate/observation pair.
    by : str or sequence of str or None
        Grouping column(s); None or ``[]`` gives one row for the whole table.
    est, obs : str
        Columns of the estimate and of the in-situ observation.
    min_n : int
        Groups with fewer pairs are kept (with their ``n``) but their metrics are NaN, so no group
        disappears silently. 10 is a common floor for per-station scores.

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns, then ``n, R, ubRMSE, bias, RMSE``; one row per group with at least one
        valid pair, sorted by the group keys.

    Raises
    ------
    InputError
        When a named column is missing.
    """
    by = _as_list(by)
    p = _pairs(df, by, est, obs)
    if not by:
        m = metrics(p["_e"].to_numpy(), p["_o"].to_numpy())
        if m["n"] < min_n:
            m.update({k: math.nan for k in METRICS})
        return pd.DataFrame([{"n": m["n"], **{k: m[k] for k in METRICS}}])
    if p.empty:
        return pd.DataFrame({**{c: pd.Series([], dtype=df[c].dtype) for c in by},
                             "n": pd.Series([], dtype="int64"),
                             **{k: pd.Series([], dtype="float64") for k in METRICS}})
    p["_d"] = p["_e"] - p["_o"]
    g = p.groupby(by, sort=True, observed=True, dropna=False)
    means = g[["_e", "_o", "_d"]].transform("mean")
    ce = p["_e"] - means["_e"]
    co = p["_o"] - means["_o"]
    cd = p["_d"] - means["_d"]
    mom = pd.DataFrame({"ee": ce * ce, "oo": co * co, "eo": ce * co, "dd": cd * cd, "d2": p["_d"] ** 2,
                        "e": p["_e"], "o": p["_o"], "d": p["_d"]})
    mom[by] = p[by]
    agg = mom.groupby(by, sort=True, observed=True, dropna=False).agg(
        n=("e", "size"), me=("e", "mean"), mo=("o", "mean"), md=("d", "mean"), ee=("ee", "mean"),
        oo=("oo", "mean"), eo=("eo", "mean"), dd=("dd", "mean"), d2=("d2", "mean"))
    m = _from_moments(agg["n"], agg["me"], agg["mo"], agg["ee"], agg["oo"], agg["eo"], agg["md"], agg["d2"],
                      agg["dd"])
    out = agg.index.to_frame(index=False)
    out["n"] = agg["n"].to_numpy(dtype=np.int64)
    few = out["n"].to_numpy() < min_n
    for k in METRICS:
        out[k] = np.where(few, np.nan, m[k])
    return out


def metrics_from_sums(sums: pd.DataFrame | Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
    """The metrics from additive sums (the one-pass form used in Spark and for pooling groups).

    With ``S_x = sum(x)`` over the valid pairs: ``mean_e = S_e / n``,
    ``var_e = S_ee / n - mean_e^2``, ``cov = S_eo / n - mean_e mean_o``, ``bias = S_d / n``,
    ``RMSE^2 = S_dd / n``, ``ubRMSE^2 = RMSE^2 - bias^2``; then as :func:`metrics`.
    ``s_d`` and ``s_dd`` (sums of ``d = e - o`` and ``d^2``) are optional: without them
    ``S_d = S_e - S_o`` and ``S_dd = S_ee - 2 S_eo + S_oo``; with them bias and RMSE keep full
    precision when the estimate is close to the observation.

    Parameters
    ----------
    sums : pandas.DataFrame or mapping
        Columns ``n, s_e, s_o, s_ee, s_oo, s_eo`` and optionally ``s_d, s_dd`` (scalars or arrays).

    Returns
    -------
    dict of numpy.ndarray
        ``R, ubRMSE, bias, RMSE`` (float) and ``n`` (int64), one element per row.
    """
    n = np.asarray(sums["n"], dtype=np.float64)
    s_e, s_o, s_ee, s_oo, s_eo = (np.asarray(sums[k], dtype=np.float64) for k in ("s_e", "s_o", "s_ee", "s_oo", "s_eo"))
    has_d = "s_d" in sums and "s_dd" in sums
    s_d = np.asarray(sums["s_d"], dtype=np.float64) if has_d else s_e - s_o
    s_dd = np.asarray(sums["s_dd"], dtype=np.float64) if has_d else s_ee - 2.0 * s_eo + s_oo
    with np.errstate(invalid="ignore", divide="ignore"):
        me, mo, md = s_e / n, s_o / n, s_d / n
        mse = s_dd / n
        m = _from_moments(n, me, mo, s_ee / n - me * me, s_oo / n - mo * mo, s_eo / n - me * mo, md, mse,
                          mse - md * md)
    m["n"] = n.astype(np.int64)
    return m


def sums_by(df: pd.DataFrame, by: str | Sequence[str] | None, est: str = "ssm_est",
            obs: str = "ssm") -> pd.DataFrame:
    """The additive sums (:data:`SUM_COLUMNS`) per group: the pandas twin of the Spark aggregation.

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns then ``n, s_e, s_o, s_ee, s_oo, s_eo, s_d, s_dd``.
    """
    by = _as_list(by)
    p = _pairs(df, by, est, obs)
    d = p["_e"] - p["_o"]
    t = pd.DataFrame({"n": 1, "s_e": p["_e"], "s_o": p["_o"], "s_ee": p["_e"] ** 2, "s_oo": p["_o"] ** 2,
                      "s_eo": p["_e"] * p["_o"], "s_d": d, "s_dd": d * d}, index=p.index)
    if not by:
        return t.sum().to_frame().T.astype({"n": "int64"})
    t[by] = p[by]
    return t.groupby(by, sort=True, observed=True, dropna=False)[list(SUM_COLUMNS)].sum().reset_index()


# -- summary --------------------------------------------------------------------------------------
def _row_dict(row: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out = {k: float(row[k]) for k in METRICS}
    out["n"] = int(row["n"])
    if extra:
        out.update(extra)
    return out


def _median_block(stations: pd.DataFrame, min_n: int) -> dict[str, Any]:
    """Median of per-station metrics over stations with at least min_n pairs."""
    ok = stations[stations["n"] >= min_n]
    out: dict[str, Any] = {}
    for k in METRICS:
        v = ok[k].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        out[k] = float(np.median(v)) if v.size else math.nan
    out["stations"] = int(len(ok))
    out["stations_total"] = int(len(stations))
    out["n"] = int(ok["n"].sum())
    return out


def _assemble(pooled: dict[str, pd.DataFrame], per_station: pd.DataFrame, station: str,
              network: str | None, env: str | None, min_n: int) -> dict[str, Any]:
    """Build the summary dict from pooled tables (overall / stations / networks / environments) and a
    per-station table keyed by (station[, network][, env])."""
    n_stations = int(per_station[station].nunique())
    out: dict[str, Any] = {
        "min_n": int(min_n),
        "overall": {"pooled": _row_dict(pooled["overall"].iloc[0], {"stations": n_stations}),
                    "per_station_median": _median_block(pooled["stations"], min_n)},
    }
    for key, col in (("networks", network), ("environments", env)):
        if col is None:
            continue
        sec: dict[str, Any] = {}
        for _, row in pooled[key].iterrows():
            name = row[col]
            missing = pd.isna(name)
            sub = per_station[per_station[col].isna() if missing else per_station[col] == name]
            sec["(none)" if missing else str(name)] = {
                "pooled": _row_dict(row, {"stations": int(sub[station].nunique())}),
                "per_station_median": _median_block(sub, min_n)}
        out[key] = sec
    return out


def _resolve_optional(df_cols: Sequence[str], name: str | None) -> str | None:
    return name if name is not None and name in df_cols else None


def summary(df: pd.DataFrame, est: str = "ssm_est", obs: str = "ssm", station: str = "station_id",
            network: str | None = "network", env: str | None = "env", min_n: int = 10) -> dict[str, Any]:
    """The validation summary: pooled metrics and the median of per-station metrics, overall, per
    network and per environment.

    Pooled metrics use every valid pair of the group at once (``min_n`` does not apply: a pooled
    group is reported whatever its size, with its ``n``). Per-station medians use the stations with
    at least ``min_n`` pairs; each metric's median skips stations where that metric is NaN (a
    constant series has no R). A station that spans two environments counts in each with its pairs
    there.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per pair, with ``est``, ``obs``, ``station`` and optionally ``network`` and ``env``.
    est, obs, station : str
        Column names.
    network, env : str or None
        Column names; None, or a column absent from ``df``, leaves that section out.
    min_n : int
        Minimum pairs for a station to count in the medians.

    Returns
    -------
    dict
        ``{"min_n", "overall": {"pooled": {R, ubRMSE, bias, RMSE, n, stations},
        "per_station_median": {R, ubRMSE, bias, RMSE, n, stations, stations_total}},
        "networks": {name: {...same...}}, "environments": {name: {...same...}}}``. ``stations`` in a
        median block counts the stations with at least ``min_n`` pairs; ``stations_total`` all of
        them. Floats may be NaN (:func:`to_jsonable` turns them into None for strict JSON).

    Raises
    ------
    InputError
        When ``est``, ``obs`` or ``station`` is missing.
    """
    _check_columns(df, [est, obs, station], "summary")
    network = _resolve_optional(df.columns, network)
    env = _resolve_optional(df.columns, env)
    keys = [station] + [c for c in (network, env) if c is not None]
    per_station = metrics_by(df, keys, est, obs, min_n=min_n)
    pooled = {"overall": metrics_by(df, None, est, obs, min_n=0),
              "stations": metrics_by(df, station, est, obs, min_n=min_n)}
    if network is not None:
        pooled["networks"] = metrics_by(df, network, est, obs, min_n=0)
    if env is not None:
        pooled["environments"] = metrics_by(df, env, est, obs, min_n=0)
    return _assemble(pooled, per_station, station, network, env, min_n)


def summary_from_sums(sums: pd.DataFrame, station: str = "station_id", network: str | None = "network",
                      env: str | None = "env", min_n: int = 10) -> dict[str, Any]:
    """:func:`summary` from a table of sums per (station[, network][, env]) (:func:`sums_by` or the
    Spark twin): sums are additive, so stations, networks, environments and the whole set are pooled
    exactly from one aggregation pass over the pairs.

    Parameters
    ----------
    sums : pandas.DataFrame
        Key columns and :data:`SUM_COLUMNS`.
    station, network, env, min_n
        As in :func:`summary`.

    Returns
    -------
    dict
        As :func:`summary`.
    """
    _check_columns(sums, [station, "n", "s_e", "s_o", "s_ee", "s_oo", "s_eo"], "summary_from_sums")
    network = _resolve_optional(sums.columns, network)
    env = _resolve_optional(sums.columns, env)
    cols = [c for c in SUM_COLUMNS if c in sums.columns]

    def pool(by: list[str], floor: int) -> pd.DataFrame:
        if by:
            s = sums.groupby(by, sort=True, observed=True, dropna=False)[cols].sum().reset_index()
        else:
            s = sums[cols].sum().to_frame().T
        s = s[s["n"] > 0].reset_index(drop=True) if by else s
        m = metrics_from_sums(s)
        out = s[by].copy() if by else pd.DataFrame(index=range(len(s)))
        out["n"] = m["n"]
        few = out["n"].to_numpy() < floor
        for k in METRICS:
            out[k] = np.where(few, np.nan, m[k])
        return out

    keys = [station] + [c for c in (network, env) if c is not None]
    pooled = {"overall": pool([], 0), "stations": pool([station], min_n)}
    if network is not None:
        pooled["networks"] = pool([network], 0)
    if env is not None:
        pooled["environments"] = pool([env], 0)
    return _assemble(pooled, pool(keys, min_n), station, network, env, min_n)


def to_jsonable(obj: Any) -> Any:
    """A copy of nested dicts/lists/numbers with NaN/inf as None and numpy scalars as Python ones,
    for strict JSON (``json.dumps(..., allow_nan=False)``)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
