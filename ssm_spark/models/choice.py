"""The choice of a unit's served model, and its held-out intervals.

:func:`rank_candidates` orders the candidates of a unit by their out-of-fold figures (lowest ubRMSE,
R for ties, a minimum prediction coverage); :func:`choose_model` keeps a reference model (the global
one) unless the unit's best own candidate, or its best mix with the reference, beats it in a paired
test over stations; :func:`shrink_units` (``train.selection: shrink``, the default) mixes every
environment's own best model with the global one by one weight pooled over all environments,
cross-fitted by fold. :func:`conformal_shift` and :func:`_served_intervals` calibrate the 5/95 %
bounds on out-of-fold predictions. See docs/physics.md for the reasoning and the figures.

Plain numpy/pandas on out-of-fold arrays; :mod:`ssm_spark.models.training` (per unit) and
:mod:`ssm_spark.models.metrics_report` (across units) call these.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import pandas as pd

from ssm_spark.models.candidates import CANDIDATES, blend
from ssm_spark.validation import metrics as _validation_metrics

log = logging.getLogger(__name__)

__all__ = ["score", "conformal_shift", "rank_candidates", "choose_model", "shrink_units", "pool_intervals"]


def _train_cfg(cfg: Any) -> Any:
    """The ``train`` section of a full :class:`~ssm_spark.config.Config`, or a TrainConfig as is."""
    return cfg.train if hasattr(cfg, "train") else cfg


def score(est: np.ndarray, obs: np.ndarray, stations: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Metrics of an estimate (:func:`ssm_spark.validation.metrics`) plus ``stations`` (distinct
    stations among the valid pairs) and ``prediction_coverage`` (fraction of rows with a finite
    observation that have a finite estimate)."""
    est = np.asarray(est, dtype=float)
    obs = np.asarray(obs, dtype=float)
    m = dict(_validation_metrics(est, obs))
    ok = np.isfinite(est) & np.isfinite(obs)
    out = {k: m[k] for k in ("R", "ubRMSE", "bias", "RMSE")}
    out["n"] = int(m["n"])
    out["stations"] = int(pd.unique(np.asarray(stations)[ok]).size) if stations is not None else None
    has_obs = np.isfinite(obs)
    out["prediction_coverage"] = float(ok.sum() / has_obs.sum()) if has_obs.any() else math.nan
    return out

def _coverage(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    if not ok.any():
        return math.nan
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])))

def conformal_shift(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, quantiles: Sequence[float]) -> tuple[float, float]:
    """Split-conformal corrections of the two quantile bounds, one tail each.

    With ``a = q_lo`` the lower tail rate wanted, the new lower bound ``lo - s_lo`` has
    ``P(y < lo - s_lo) <= a`` for exchangeable data when ``s_lo`` is the ``ceil((n + 1)(1 - a)) / n``
    empirical quantile of ``lo - y``; likewise ``s_hi`` from ``y - hi`` and ``1 - q_hi``
    (Romano, Patterson and Candes 2019, conformalized quantile regression, per tail). A negative
    shift narrows an interval that was too wide.

    Returns
    -------
    (float, float)
        ``(s_lo, s_hi)``; (0, 0) without valid rows.
    """
    lo, hi, y = (np.asarray(a, dtype=float) for a in (lo, hi, y))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    n = int(ok.sum())
    if n == 0:
        return 0.0, 0.0
    q_lo, q_hi = float(quantiles[0]), float(quantiles[1])

    def tail(scores: np.ndarray, a: float) -> float:
        level = min(1.0, math.ceil((n + 1) * (1.0 - a)) / n)
        return float(np.quantile(scores, level, method="higher"))

    return tail(lo[ok] - y[ok], q_lo), tail(y[ok] - hi[ok], 1.0 - q_hi)

def _apply_shift(lo: np.ndarray, hi: np.ndarray, shift: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = lo - shift[0], hi + shift[1]
    return np.minimum(a, b), np.maximum(a, b)

def _by_fold(d: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
    fold = d["fold"].to_numpy()
    return [(int(f), fold == f) for f in sorted(np.unique(fold))]

def _served_intervals(d: pd.DataFrame, lo: np.ndarray, hi: np.ndarray, y: np.ndarray, t: Any
                      ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Held-out (cross-fitted) conformal intervals and the shift for the served model."""
    if t.interval_calibration == "none":
        return lo.copy(), hi.copy(), (0.0, 0.0)
    out_lo, out_hi = lo.copy(), hi.copy()
    folds = _by_fold(d)
    for f, test in folds:
        other = ~test
        s = conformal_shift(lo[other], hi[other], y[other], t.quantiles) if len(folds) > 1 else (0.0, 0.0)
        out_lo[test], out_hi[test] = _apply_shift(lo[test], hi[test], s)
    return out_lo, out_hi, conformal_shift(lo, hi, y, t.quantiles)

def rank_candidates(preds: Mapping[str, np.ndarray], y: np.ndarray, cfg: Any,
                    mask: Optional[np.ndarray] = None, stations: Optional[np.ndarray] = None
                    ) -> list[dict[str, Any]]:
    """Candidates ordered best first by the selection rule.

    A candidate predicting fewer than ``min_prediction_coverage`` of the rows (with an observation,
    within ``mask``) is ineligible and ranked after the eligible ones. The eligible candidates are
    scored on the rows where all of them predict; the lowest ubRMSE wins, and candidates within
    ``tie_tolerance`` of it are separated by the higher R (then the lower ubRMSE, then the order of
    :data:`~ssm_spark.models.candidates.CANDIDATES`).

    Returns
    -------
    list of dict
        ``{"candidate", "eligible", "prediction_coverage", "R", "ubRMSE", "bias", "RMSE", "n"}``,
        the metrics on the common rows (eligible) or the candidate's own rows (ineligible).
    """
    t = _train_cfg(cfg)
    y = np.asarray(y, dtype=float)
    rows = np.isfinite(y) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(y))
    names = list(preds)
    cover = {c: (float(np.isfinite(preds[c][rows]).mean()) if rows.any() else 0.0) for c in names}
    eligible = [c for c in names if cover[c] >= t.min_prediction_coverage and cover[c] > 0]
    if not eligible:
        eligible = [c for c in names if cover[c] > 0]
    common = rows.copy()
    for c in eligible:
        common &= np.isfinite(preds[c])
    entries = []
    for c in names:
        use = common if c in eligible else rows
        m = score(preds[c][use], y[use], None if stations is None else stations[use])
        entries.append({"candidate": c, "eligible": c in eligible, "prediction_coverage": cover[c],
                        **{k: m[k] for k in ("R", "ubRMSE", "bias", "RMSE", "n")}})
    order_idx = {c: (CANDIDATES.index(c) if c in CANDIDATES else len(CANDIDATES)) for c in names}

    def ub(e: dict) -> float:
        return e["ubRMSE"] if np.isfinite(e["ubRMSE"]) else math.inf

    def r(e: dict) -> float:
        return e["R"] if np.isfinite(e["R"]) else -math.inf

    ranked: list[dict[str, Any]] = []
    for pool in ([e for e in entries if e["eligible"]], [e for e in entries if not e["eligible"]]):
        pool = list(pool)
        while pool:
            best = min(ub(e) for e in pool)
            tied = [e for e in pool if ub(e) <= best + t.tie_tolerance] if math.isfinite(best) else pool
            win = sorted(tied, key=lambda e: (-r(e), ub(e), order_idx[e["candidate"]]))[0]
            ranked.append(win)
            pool.remove(win)
    return ranked

def choose_model(preds: Mapping[str, np.ndarray], y: np.ndarray, cfg: Any, *, stations: np.ndarray,
                 mask: Optional[np.ndarray] = None, level: str = "environment", reference: str = "global"
                 ) -> tuple[str, float, dict[str, Any]]:
    """The served model of a unit: the global model, or the unit's best own candidate blended with it.

    ``selection: best`` is the plain rule (lowest ubRMSE of every candidate, global included, wins).
    ``blend`` (default) and ``paired`` keep the global model unless the unit's best own candidate
    (by :func:`rank_candidates` among the others) *significantly* improves on it: the weight ``w`` of
    ``w own + (1 - w) global`` that minimises the mean squared error (``blend``: w in 0, 0.1, ..., 1;
    ``paired``: w in {0, 1}) must beat the global model alone in a paired test over stations (the
    mean over stations of each station's drop in squared error, divided by its standard error,
    above ``selection_z``; at least 3 stations). Noise between folds therefore never replaces the
    global model, and an environment that really differs gets its own model, or a mix.

    ``reference`` names the default model (``"global"``); any other reference (a unit that holds the
    whole table, whose "global" model is one more of its own: ``"xgb_raw"``, the plainest tree) is
    compared the same way with weights {0, 1} only (a served blend mixes with the global model).

    Returns
    -------
    (str, float, dict)
        Selected candidate (``"global"`` or the own candidate), its weight (1.0 for a model alone)
        and the evidence: ``own``, ``weight_best``, ``t_stat``, ``stations``, ``mse_global``, ``mse_blend``.
    """
    t = _train_cfg(cfg)
    rule = getattr(t, "selection", "best")
    y = np.asarray(y, dtype=float)
    if rule == "best" or reference not in preds or level == "global" or len(preds) == 1:
        r = rank_candidates(preds, y, t, mask=mask, stations=stations)
        return r[0]["candidate"], 1.0, {"rule": "best"}
    own_preds = {c: p for c, p in preds.items() if c != reference}
    own = rank_candidates(own_preds, y, t, mask=mask, stations=stations)[0]["candidate"]
    rows = np.isfinite(y) & np.isfinite(preds[reference]) & np.isfinite(preds[own])
    if mask is not None:
        rows &= np.asarray(mask, dtype=bool)
    info: dict[str, Any] = {"rule": "blend" if rule == "shrink" else rule, "reference": reference, "own": own, "weight_best": 0.0, "t_stat": math.nan,
                            "stations": int(pd.unique(np.asarray(stations)[rows]).size), "rows": int(rows.sum())}
    if rows.sum() < 10:
        return reference, 1.0, info
    g, o, yy, st = preds[reference][rows], preds[own][rows], y[rows], np.asarray(stations)[rows]
    weights = (np.linspace(0.0, 1.0, 11) if rule in ("blend", "shrink") and reference == "global"
               else np.array([0.0, 1.0]))
    mse = np.array([np.mean((w * o + (1 - w) * g - yy) ** 2) for w in weights])
    w = float(weights[int(np.argmin(mse))])
    info.update(weight_best=w, mse_global=float(mse[0]), mse_blend=float(mse.min()))
    if w == 0.0:
        return reference, 1.0, info
    gain = (g - yy) ** 2 - (w * o + (1 - w) * g - yy) ** 2
    codes = pd.factorize(st)[0]
    per_station = np.bincount(codes, gain) / np.bincount(codes)
    n_st = len(per_station)
    if n_st >= 3:
        sd = float(np.std(per_station, ddof=1))
        info["t_stat"] = float(np.mean(per_station) / (sd / math.sqrt(n_st))) if sd > 0 else math.inf
    if n_st >= 3 and info["t_stat"] > t.selection_z:
        return own, w, info
    return reference, 1.0, info

_SHRINK_WEIGHTS = np.linspace(0.0, 1.0, 11)

def _paired_t(gain: np.ndarray, stations: np.ndarray) -> float:
    """Mean over stations of each station's mean ``gain``, divided by its standard error (NaN with
    fewer than 3 stations; +inf when every station gains the same)."""
    codes = pd.factorize(stations)[0]
    per_station = np.bincount(codes, gain) / np.bincount(codes)
    if len(per_station) < 3:
        return math.nan
    sd = float(np.std(per_station, ddof=1))
    mean = float(np.mean(per_station))
    return mean / (sd / math.sqrt(len(per_station))) if sd > 0 else (math.inf if mean > 0 else -math.inf)

def _pooled_weight(own: np.ndarray, glob: np.ndarray, y: np.ndarray, stations: Optional[np.ndarray] = None,
                   z: Optional[float] = None) -> tuple[float, float]:
    """The pooled weight (lowest squared error of the mix, w in 0, 0.1, ..., 1) and the paired t of
    its gain over the global model alone (by station); with ``z``, a mix whose t is not above ``z``
    gives w = 0 (the global model)."""
    ok = np.isfinite(own) & np.isfinite(glob) & np.isfinite(y)
    if ok.sum() < 10:
        return 0.0, math.nan
    mse = [np.mean((w * own[ok] + (1 - w) * glob[ok] - y[ok]) ** 2) for w in _SHRINK_WEIGHTS]
    w = float(_SHRINK_WEIGHTS[int(np.argmin(mse))])
    if w == 0.0 or stations is None:
        return w, math.nan
    o, g, yy = own[ok], glob[ok], y[ok]
    t = _paired_t((g - yy) ** 2 - (w * o + (1 - w) * g - yy) ** 2, np.asarray(stations)[ok])
    if z is not None and not (t > z):
        return 0.0, t
    return w, t

def shrink_units(ctx: Any, units: Mapping[str, Any]) -> dict[str, Any]:
    """``selection: shrink``: every environment's own best model mixed with the global one by ONE
    weight ``w`` pooled over all environments (``w own + (1 - w) global``, w in 0, 0.1, ..., 1, lowest
    squared error), cross-fitted: fold k's rows get the weight found on the other folds' rows of every
    environment. One weight for thousands of matchups is stable where eleven per-environment weights
    are not (measured on the demo: see README, Accuracy). The served weight is the one pooled over all
    folds; ``w = 0`` serves the global model. With ``train.shrink_z`` the mix must also beat the global
    model alone in a paired test over stations (t above ``shrink_z``, on the same rows: for fold k on
    the other folds' rows), else w = 0: a mix that its own evidence cannot tell from the global model
    is not worth its cost (two more tree models per cell). Units are updated in place (framework,
    intervals, selection); returns the weights."""
    t = ctx.cfg
    sh = {k: u for k, u in units.items() if "own_cf" in u.oof.columns}
    if not sh:
        return {}
    pooled = pd.concat([u.oof for u in sh.values()], ignore_index=True)
    own, glob = pooled["own_cf"].to_numpy(float), pooled["pred_global"].to_numpy(float)
    y, fold = pooled["ssm"].to_numpy(float), pooled["fold"].to_numpy()
    st, z = pooled["station_id"].to_numpy(), getattr(t, "shrink_z", None)
    w_all, t_all = _pooled_weight(own, glob, y, st, z)
    w_fold = {int(f): _pooled_weight(own[fold != f], glob[fold != f], y[fold != f], st[fold != f], z)[0]
              for f in np.unique(fold)}
    for u in sh.values():
        o = u.oof
        f = o["fold"].to_numpy()
        wf = np.array([w_fold[int(k)] for k in f])
        own_cf, g = o["own_cf"].to_numpy(float), o["pred_global"].to_numpy(float)
        o["framework"] = np.where(np.isfinite(own_cf), wf * own_cf + (1 - wf) * g, g)
        own_in = o[f"pred_{u.selected}"].to_numpy(float)
        o["framework_insample"] = blend(own_in, g, w_all)
        if w_all == 0.0:
            lo_raw, hi_raw = o["lo_global_raw"].to_numpy(float), o["hi_global_raw"].to_numpy(float)
        else:
            lo_raw = blend(o["lo_raw"].to_numpy(float), o["lo_global_raw"].to_numpy(float), w_all)
            hi_raw = blend(o["hi_raw"].to_numpy(float), o["hi_global_raw"].to_numpy(float), w_all)
        lo, hi, shift = _served_intervals(o, lo_raw, hi_raw, o["ssm"].to_numpy(float), t)
        o["lo_raw"], o["hi_raw"], o["lo"], o["hi"] = lo_raw, hi_raw, lo, hi
        u.interval_shift = (float(shift[0]), float(shift[1]))
        u.weight_by_fold = dict(w_fold)
        u.selection_evidence.update(pooled_weight=w_all, pooled_weight_by_fold={str(k): v for k, v in w_fold.items()},
                                    pooled_t_stat=t_all, shrink_z=z)
        if w_all == 0.0:
            u.selected, u.blend_weight = "global", 1.0
            u.point_model = u.quantile_model = None
            u.features, u.quantile_features, u.base_fallback = [], [], None
        else:
            u.blend_weight = w_all
        u.oof = o.drop(columns=["own_cf", "lo_global_raw", "hi_global_raw"])
    log.info("selection: own models mixed with the global one at w = %.1f (by fold %s)", w_all, w_fold)
    return {"weight": w_all, "by_fold": w_fold, "t_stat": t_all}


def pool_intervals(ctx: Any, units: Mapping[str, Any]) -> Optional[tuple[float, float]]:
    """``train.conformal_scope: pooled``: one split-conformal correction for every unit, from the rows
    each environment is served and scored on (its own unit's out-of-fold rows, or its group's or the
    global model's: each matchup once), cross-fitted like the per-unit one (fold k's bounds shifted
    by the correction of the other folds' rows). Each unit's ``lo``/``hi`` and ``interval_shift`` are
    replaced in place; returns the served shift (None for ``scope: unit`` or no calibration).

    Why: a unit's own correction rests on its ~10 stations, whose errors are correlated within a
    station; its held-out coverage falls short of the nominal rate, where thousands of matchups of
    all environments estimate one correction well (benchmarks/bench_serving.py, docs/physics.md)."""
    t = ctx.cfg
    if t.interval_calibration == "none" or getattr(t, "conformal_scope", "unit") != "pooled":
        return None
    parts = []
    for env, plan in ctx.plan.items():
        o = units[plan["unit"]].oof
        rows = o if units[plan["unit"]].level == "environment" else o.loc[o["env"] == env]
        parts.append(rows[["_row", "fold", "ssm", "lo_raw", "hi_raw"]])
    pooled = pd.concat(parts, ignore_index=True).drop_duplicates("_row")
    lo, hi, y = (pooled[c].to_numpy(float) for c in ("lo_raw", "hi_raw", "ssm"))
    fold = pooled["fold"].to_numpy()
    by_fold = {int(f): conformal_shift(lo[fold != f], hi[fold != f], y[fold != f], t.quantiles)
               if len(np.unique(fold)) > 1 else (0.0, 0.0) for f in np.unique(fold)}
    served = conformal_shift(lo, hi, y, t.quantiles)
    for u in units.values():
        o = u.oof
        s = np.array([by_fold.get(int(f), served) for f in o["fold"].to_numpy()]).reshape(-1, 2)
        a, b = o["lo_raw"].to_numpy(float) - s[:, 0], o["hi_raw"].to_numpy(float) + s[:, 1]
        o["lo"], o["hi"] = np.minimum(a, b), np.maximum(a, b)
        u.interval_shift = (float(served[0]), float(served[1]))
    log.info("intervals: one conformal correction for every unit, %s (by fold %s)", served, by_fold)
    return served
