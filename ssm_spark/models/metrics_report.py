"""The per-unit results assembled: per-environment and overall figures, ``cv_metrics.json``.

:func:`finalize_training` applies the pooled shrinkage weight across the units
(:func:`ssm_spark.models.choice.shrink_units`), then :func:`cv_metrics` gives every environment its
figures at its level (its own unit, its land-cover group's, or the global model's out-of-fold rows),
the figures pooled over all environments, and the out-of-fold table of the whole run. The key order
of every block is the contract of docs/contracts.md, "cv_metrics.json" (:data:`CONTRACT_METRIC_KEYS`,
:data:`CONTRACT_ENV_KEYS`); more keys follow them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.models.candidates import CANDIDATES
from ssm_spark.models.choice import _coverage, pool_intervals, score, shrink_units
from ssm_spark.models.folds import LEVELS
from ssm_spark.models.training import TrainingContext, UnitResult
from ssm_spark.validation import metrics_by

__all__ = ["CONTRACT_METRIC_KEYS", "CONTRACT_ENV_KEYS", "MIN_STATION_SAMPLES", "TrainingResult", "cv_metrics",
           "finalize_training"]

#: Keys of every metrics block of ``cv_metrics.json`` (docs/contracts.md, "cv_metrics.json").
CONTRACT_METRIC_KEYS: tuple[str, ...] = ("R", "ubRMSE", "bias", "RMSE", "n", "stations")
#: Keys of every environment block of ``cv_metrics.json`` (more may follow them, none is renamed).
CONTRACT_ENV_KEYS: tuple[str, ...] = ("framework", "candidates", "selected", "runner_up", "level", "n",
                                      "stations", "coverage_p05_p95")
#: A station's own metrics (for the medians of per-station values) need this many matchups.
MIN_STATION_SAMPLES = 10


def _station_median(est: np.ndarray, obs: np.ndarray, stations: np.ndarray) -> dict[str, Any]:
    t = pd.DataFrame({"station_id": stations, "e": est, "o": obs})
    per = metrics_by(t, "station_id", est="e", obs="o", min_n=MIN_STATION_SAMPLES)
    ok = per[per["n"] >= MIN_STATION_SAMPLES]
    out: dict[str, Any] = {}
    for k in ("R", "ubRMSE", "bias", "RMSE"):
        v = ok[k].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        out[k] = float(np.median(v)) if v.size else math.nan
    out["stations"] = int(len(ok))
    out["min_samples_per_station"] = MIN_STATION_SAMPLES
    return out


@dataclass
class TrainingResult:
    """A finished training: context, per-unit results, out-of-fold table and ``cv_metrics``."""

    ctx: TrainingContext
    units: dict[str, UnitResult]
    oof: pd.DataFrame
    cv_metrics: dict[str, Any]
    seconds: dict[str, float]

    @property
    def cfg(self) -> Any:
        return self.ctx.cfg


def _env_slice(env: str, ctx: TrainingContext, units: Mapping[str, UnitResult]) -> tuple[UnitResult, pd.DataFrame]:
    unit = units[ctx.plan[env]["unit"]]
    rows = unit.oof if unit.level == "environment" else unit.oof.loc[unit.oof["env"] == env]
    return unit, rows


def _metric_block(m: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in CONTRACT_METRIC_KEYS}
    out["prediction_coverage"] = m["prediction_coverage"]
    return out


def cv_metrics(ctx: TrainingContext, units: Mapping[str, UnitResult]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The ``cv_metrics.json`` dict (docs/contracts.md, "cv_metrics.json") and the out-of-fold table.

    ``environments[env]``: ``framework`` (cross-fitted selection, see :mod:`ssm_spark.models.training`),
    ``candidates`` (each candidate's out-of-fold predictions at the environment's level), ``selected``
    and ``runner_up`` (the served choice), ``level``, ``n``, ``stations``, ``coverage_p05_p95``
    (held-out coverage of the served interval); then extra keys. ``overall``: the same pooled over all
    environments, plus medians of per-station values. Values are plain Python (NaN stays NaN; use
    :func:`ssm_spark.validation.to_jsonable` for strict JSON).
    """
    envs: dict[str, Any] = {}
    pieces = []
    for env in sorted(ctx.plan):
        plan = ctx.plan[env]
        unit, rows = _env_slice(env, ctx, units)
        y = rows["ssm"].to_numpy(dtype=float)
        st = rows["station_id"].to_numpy()
        cands = {c: _metric_block(score(rows[f"pred_{c}"].to_numpy(), y, st)) for c in unit.candidates}
        fw = _metric_block(score(rows["framework"].to_numpy(), y, st))
        envs[env] = {
            "framework": fw,
            "candidates": cands,
            "selected": unit.selected,
            "runner_up": unit.runner_up,
            "level": plan["level"],
            "n": int(len(rows)),
            "stations": int(pd.unique(st).size),
            "coverage_p05_p95": _coverage(rows["lo"].to_numpy(), rows["hi"].to_numpy(), y),
            # extra keys
            "unit": unit.key,
            "fallback_chain": plan["fallback_chain"],
            "framework_insample_selection": _metric_block(score(rows["framework_insample"].to_numpy(), y, st)),
            "selected_by_fold": {str(k): v for k, v in unit.selected_by_fold.items()},
            "blend_weight": unit.blend_weight,
            "selection_evidence": unit.selection_evidence,
            "coverage_p05_p95_raw": _coverage(rows["lo_raw"].to_numpy(), rows["hi_raw"].to_numpy(), y),
            "interval_width_mean": float(np.nanmean(rows["hi"] - rows["lo"])) if len(rows) else math.nan,
        }
        pieces.append(rows.assign(level=plan["level"], unit=unit.key, selected=unit.selected))
    oof = pd.concat(pieces, ignore_index=True).sort_values("_row", kind="stable").reset_index(drop=True)
    y = oof["ssm"].to_numpy(dtype=float)
    st = oof["station_id"].to_numpy()
    names = [c for c in CANDIDATES if f"pred_{c}" in oof.columns]
    overall = {
        "framework": _metric_block(score(oof["framework"].to_numpy(), y, st)),
        "candidates": {c: _metric_block(score(oof[f"pred_{c}"].to_numpy(), y, st)) for c in names},
        # extra keys
        "framework_station_median": _station_median(oof["framework"].to_numpy(), y, st),
        "candidates_station_median": {c: _station_median(oof[f"pred_{c}"].to_numpy(), y, st) for c in names},
        "framework_insample_selection": _metric_block(score(oof["framework_insample"].to_numpy(), y, st)),
        "coverage_p05_p95": _coverage(oof["lo"].to_numpy(), oof["hi"].to_numpy(), y),
        "coverage_p05_p95_raw": _coverage(oof["lo_raw"].to_numpy(), oof["hi_raw"].to_numpy(), y),
        "quantiles": list(ctx.cfg.quantiles),
        "interval_calibration": ctx.cfg.interval_calibration,
        "selection": "cross-fitted: the candidate scored on fold k is the one winning on the other folds",
        "k_folds": ctx.k,
        "levels": {lv: sum(1 for p in ctx.plan.values() if p["level"] == lv) for lv in LEVELS},
    }
    return {"overall": overall, "environments": envs}, oof


def finalize_training(ctx: TrainingContext, units: Mapping[str, UnitResult]) -> TrainingResult:
    """Assemble the per-unit results into a :class:`TrainingResult` (with ``cv_metrics``)."""
    missing = [u for u in ctx.units if u not in units]
    if missing:
        raise InputError(f"finalize_training: no result for unit(s) {missing}")
    shrink = shrink_units(ctx, units)
    pooled_shift = pool_intervals(ctx, units)
    cvm, oof = cv_metrics(ctx, units)
    cvm["overall"]["conformal_scope"] = getattr(ctx.cfg, "conformal_scope", "unit")
    if pooled_shift is not None:
        cvm["overall"]["conformal_shift_pooled"] = list(pooled_shift)
    if shrink:
        cvm["overall"]["shrinkage_weight"] = shrink["weight"]
        cvm["overall"]["shrinkage_weight_by_fold"] = {str(k): v for k, v in shrink["by_fold"].items()}
        cvm["overall"]["shrinkage_t_stat"] = shrink.get("t_stat")
    seconds = dict(ctx.seconds)
    seconds["units"] = {k: round(u.seconds, 3) for k, u in units.items()}
    return TrainingResult(ctx=ctx, units=dict(units), oof=oof, cv_metrics=cvm, seconds=seconds)
