"""Training one unit: the context every unit shares, cross-validation, selection and final fits.

:func:`prepare_training` (the driver's part) cleans the matchups, assigns the station folds, calibrates
the WCM per fold and plans the levels (:mod:`ssm_spark.models.folds`,
:mod:`ssm_spark.models.calibration_folds`) into a small, picklable :class:`TrainingContext`.
:func:`train_global` trains the ``global`` candidate (one coupled model over all environments);
:func:`attach_global_oof` adds its out-of-fold predictions to the table, so that each unit compares
its own candidates with the global model on exactly the same rows; :func:`train_unit` trains one
*unit* (an environment, or a pooled land-cover group): out-of-fold predictions of every candidate,
selection, quantile model, final fits on all the unit's rows. Deterministic, pandas in, plain data
and UBJ bytes out (:class:`UnitResult`), so it runs the same in this process, in a worker process or
in a Spark task (:mod:`ssm_spark.models.runner`).

Selection (:mod:`ssm_spark.models.choice`, ``train.selection``). Default ``shrink``: every
environment's best own candidate mixed with the global model by one weight pooled over all
environments (applied when the units are assembled, :func:`ssm_spark.models.choice.shrink_units`);
``blend``/``paired``: the global model unless a paired test over stations says the environment's own
candidate (or mix) is better; ``best``: the lowest ubRMSE wins. The reported ``framework`` figures
are *cross-fitted*: the choice (and weight) used for fold k is made on the other folds' out-of-fold
predictions, at no extra training cost. The in-sample choice (the one served) and its figures are
reported beside it (``framework_insample_selection``).

Uncertainty. The quantile model of the selected candidate is cross-validated on the same folds. With
``interval_calibration: conformal`` each bound is shifted by the split-conformal correction of its
own tail, measured on out-of-fold predictions: for fold k on the other folds (so the reported
coverage is held out), for the served model on all of them; with ``train.conformal_scope: pooled``
(the default) :func:`ssm_spark.models.choice.pool_intervals` then replaces every unit's correction
by one from all environments' served out-of-fold rows together, cross-fitted the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

import ssm_spark.models.candidates as candidates
from ssm_spark.errors import InputError
from ssm_spark.models.calibration_folds import calibrate_folds
from ssm_spark.models.candidates import CANDIDATES, blend
from ssm_spark.models.choice import _by_fold, _served_intervals, choose_model, rank_candidates
from ssm_spark.models.folds import _train_cfg, assign_folds, clean_matchups, plan_levels
from ssm_spark.physics.calibrate import GLOBAL_KEY, group_of

log = logging.getLogger(__name__)

__all__ = ["TrainingContext", "UnitResult", "training_summary", "prepare_training", "train_global",
           "attach_global_oof", "unit_frames", "train_unit"]


@dataclass
class TrainingContext:
    """Everything a unit needs besides its rows: small, picklable, the same on every worker."""

    cfg: Any  # TrainConfig
    k: int
    folds: dict[Any, int]
    fold_params: dict[Any, dict[str, Any]]
    features: dict[str, list[str]]
    quantile_features: dict[str, list[str]]
    candidates: list[str]
    plan: dict[str, dict[str, Any]]
    units: dict[str, str]
    nthread: int
    dropped: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def wcm_params(self) -> dict[str, Any]:
        """WCM parameters calibrated on all training data (``calibrate.to_dict`` form)."""
        return self.fold_params["all"]


def training_summary(df: pd.DataFrame, dropped: Optional[Mapping[str, int]] = None, *,
                     station_col: str = "station_id", env_col: str = "env") -> dict[str, Any]:
    """Rows, stations, networks, date range and per-environment counts of a training table."""
    dates = pd.to_datetime(df["date"], errors="coerce") if "date" in df.columns else pd.Series(dtype="datetime64[ns]")
    per_env = df.groupby(env_col).agg(n=(station_col, "size"), stations=(station_col, "nunique"))
    return {
        "rows": int(len(df)),
        "stations": int(df[station_col].nunique()),
        "networks": sorted(map(str, df["network"].dropna().unique())) if "network" in df.columns else None,
        "date_range": ([str(dates.min().date()), str(dates.max().date())] if dates.notna().any() else None),
        "environments": {str(e): {"n": int(r["n"]), "stations": int(r["stations"])} for e, r in per_env.iterrows()},
        "dropped": dict(dropped or {}),
    }


def prepare_training(matchups: pd.DataFrame, cfg: Any, *, nthread: Optional[int] = None, max_workers: int = 1
                     ) -> tuple[TrainingContext, pd.DataFrame]:
    """Clean, fold, calibrate per fold, resolve features and plan levels (the driver's part).

    Parameters
    ----------
    matchups : pandas.DataFrame
        The matchup table (docs/contracts.md, "Tables"). Stale physics columns are ignored.
    cfg : Config or TrainConfig
    nthread : int, optional
        XGBoost threads per model (default: ``cfg.xgb.nthread``, 0 -> all cores).
    max_workers : int, default 1
        Processes for the K + 1 WCM calibrations.

    Returns
    -------
    (TrainingContext, pandas.DataFrame)
        The context and the clean table with ``fold`` and ``_row`` columns.
    """
    t = _train_cfg(cfg)
    t0 = time.perf_counter()
    df, dropped = clean_matchups(matchups)
    group = t.cv_group
    if group not in df.columns:
        raise InputError(f"training: train.cv_group {group!r} is not a column of the matchups "
                         f"(columns: {list(df.columns)})")
    if group != "station_id":   # e.g. fields holding several sampling points: a field is one CV group
        split = df.groupby("station_id")[group].nunique()
        if (split > 1).any():
            raise InputError(f"training: stations {list(split[split > 1].index[:5])} lie in several "
                             f"{group!r} groups; a station must belong to one CV group")
    group_folds = assign_folds(df, t.k_folds, t.seed, station_col=group)
    df["fold"] = df[group].map(group_folds).astype(np.int64)
    folds = df.groupby("station_id")["fold"].first()
    k = int(group_folds.max()) + 1
    t1 = time.perf_counter()
    fold_params = calibrate_folds(df, t, max_workers=max_workers, physics=getattr(cfg, "physics", None))
    t2 = time.perf_counter()
    feats_all = candidates.add_physics(df, fold_params["all"], nominal_incidence_deg=t.nominal_incidence_deg)
    cands = [c for c in t.candidates if c in CANDIDATES]
    features = candidates.resolve_features(feats_all, CANDIDATES)
    if t.exclude_features:   # e.g. static inputs that let the trees recognise a station
        drop = set(t.exclude_features)
        known = {f for fs in candidates.FEATURE_SCHEMA.values() for f in fs}
        if drop - known:
            raise InputError(f"train.exclude_features: unknown feature(s) {sorted(drop - known)}; "
                             f"the trees' features are {sorted(known)}")
        features = {c: [f for f in fs if f not in drop] for c, fs in features.items()}
    qfeatures = candidates.resolve_quantile_features(features)
    plan, units = plan_levels(df, t)
    ctx = TrainingContext(
        cfg=t, k=k, folds={str(s): int(f) for s, f in folds.items()}, fold_params=fold_params,
        features=features, quantile_features=qfeatures, candidates=cands, plan=plan, units=units,
        nthread=candidates.resolve_nthread(t.xgb.nthread, nthread), dropped=dropped,
        summary=training_summary(df, dropped),
        seconds={"prepare": t1 - t0, "calibration": t2 - t1},
    )
    log.info("training: %d rows, %d stations, %d folds, units %s", len(df), df["station_id"].nunique(), k,
             list(units))
    return ctx, df


@dataclass
class UnitResult:
    """What training one unit (environment, group or global) produces: plain data and UBJ bytes."""

    key: str
    level: str
    candidates: list[str]
    selected: str
    runner_up: Optional[str]
    ranking: list[dict[str, Any]]
    selected_by_fold: dict[int, str]
    n: int
    stations: int
    oof: pd.DataFrame
    point_model: Optional[bytes]
    quantile_model: Optional[bytes]
    features: list[str]
    quantile_features: list[str]
    base_fallback: Optional[float]
    interval_shift: tuple[float, float]
    feature_importance: dict[str, float]
    audit: list[dict[str, Any]]
    seconds: float
    blend_weight: float = 1.0
    weight_by_fold: dict[int, float] = field(default_factory=dict)
    selection_evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_global(self) -> bool:
        """True when the unit serves the global model (its files are the global unit's)."""
        return self.level != "global" and self.selected == "global"


def _cv_point(d: pd.DataFrame, ctx: TrainingContext, names: Sequence[str], audit: list[dict[str, Any]]
              ) -> dict[str, np.ndarray]:
    """Out-of-fold point predictions of ``names`` on ``d`` (physics features from each fold's own
    calibration)."""
    t = ctx.cfg
    preds = {c: np.full(len(d), np.nan) for c in names}
    st = d["station_id"].to_numpy()
    for f, test in _by_fold(d):
        train = ~test
        if not train.any():
            continue
        overlap = set(st[train]) & set(st[test])
        if overlap:  # cannot happen with station folds; a guard against a broken fold column
            raise InputError(f"fold {f}: stations {sorted(overlap)[:5]} are on both sides of the split")
        audit.append({"fold": f, "train_rows": int(train.sum()), "test_rows": int(test.sum()),
                      "train_stations": int(pd.unique(st[train]).size),
                      "test_stations": int(pd.unique(st[test]).size),
                      "calibration_fold": ctx.fold_params[f]["settings"].get("calibration_fold")})
        feats = candidates.add_physics(d, ctx.fold_params[f], nominal_incidence_deg=t.nominal_incidence_deg)
        tr, te = feats.loc[train], feats.loc[test]
        for c in names:
            model = candidates.fit_candidate(c, tr, ctx.features[c], t, nthread=ctx.nthread)
            preds[c][test] = candidates.predict_candidate(model, te)
    return preds


def _cv_quantiles(d: pd.DataFrame, ctx: TrainingContext, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = ctx.cfg
    lo = np.full(len(d), np.nan)
    hi = np.full(len(d), np.nan)
    for f, test in _by_fold(d):
        train = ~test
        if not train.any():
            continue
        feats = candidates.add_physics(d, ctx.fold_params[f], nominal_incidence_deg=t.nominal_incidence_deg)
        model = candidates.fit_quantiles(name, feats.loc[train], ctx.quantile_features[name], t, nthread=ctx.nthread)
        lo[test], hi[test] = candidates.predict_quantiles(model, feats.loc[test])
    return lo, hi


def _importance(booster_bytes: Optional[bytes]) -> dict[str, float]:
    if booster_bytes is None:
        return {}
    b = candidates.booster_from_bytes(booster_bytes, 1)
    gain = b.get_score(importance_type="total_gain")
    tot = sum(gain.values()) or 1.0
    return {k: float(v / tot) for k, v in sorted(gain.items(), key=lambda kv: -kv[1])}


def train_global(df: pd.DataFrame, ctx: TrainingContext) -> UnitResult:
    """The global candidate: out-of-fold predictions (K models over every environment's training
    folds), its quantile model's held-out intervals, and the final models on all rows."""
    return _train(GLOBAL_KEY, "global", df, ctx, ["global"])


def attach_global_oof(df: pd.DataFrame, global_result: UnitResult) -> pd.DataFrame:
    """``df`` with the global model's out-of-fold columns ``pred_global``, ``lo_global``,
    ``hi_global`` (raw quantiles), aligned on ``_row``."""
    g = global_result.oof.set_index("_row")
    out = df.copy()
    for src, dst in (("pred_global", "pred_global"), ("lo_raw", "lo_global"), ("hi_raw", "hi_global")):
        out[dst] = g[src].reindex(out["_row"].to_numpy()).to_numpy()
    return out


def unit_frames(df: pd.DataFrame, ctx: TrainingContext) -> dict[str, pd.DataFrame]:
    """Rows of each non-global unit: an environment's own rows, or the pooled rows of a group.

    (On Spark too the frames are cut here, on the driver; each is then one task of an RDD map:
    :mod:`ssm_spark.models.spark_train`.)
    """
    groups = df["env"].map(group_of)
    out = {}
    for key, level in ctx.units.items():
        if level == "environment":
            out[key] = df.loc[df["env"] == key]
        elif level == "group":
            out[key] = df.loc[groups == key]
    return out


def train_unit(key: str, df_unit: pd.DataFrame, ctx: TrainingContext) -> UnitResult:
    """Cross-validate every candidate on one unit, select, fit the final and quantile models.

    Parameters
    ----------
    key : str
        Environment key (``"cropland_C"``) or land-cover group (``"cropland"``) as in ``ctx.units``.
    df_unit : pandas.DataFrame
        The unit's rows from :func:`prepare_training`, with the global out-of-fold columns of
        :func:`attach_global_oof` when ``global`` is a candidate.
    ctx : TrainingContext

    Returns
    -------
    UnitResult
    """
    level = ctx.units.get(key)
    if level not in ("environment", "group"):
        raise InputError(f"train_unit: {key!r} is not an environment or group unit of this run ({list(ctx.units)})")
    names = [c for c in ctx.candidates if c != "global"]
    if "global" in ctx.candidates:
        if "pred_global" in df_unit.columns:
            names.append("global")
        else:
            log.warning("unit %s: no global out-of-fold columns (attach_global_oof): global not compared", key)
    return _train(key, level, df_unit, ctx, names)


def _train(key: str, level: str, df_unit: pd.DataFrame, ctx: TrainingContext, names: list[str]) -> UnitResult:
    t0 = time.perf_counter()
    t = ctx.cfg
    d = df_unit.sort_values("_row", kind="stable").reset_index(drop=True)
    y = d["ssm"].to_numpy(dtype=float)
    st = d["station_id"].to_numpy()
    audit: list[dict[str, Any]] = []
    local = [c for c in names if c != "global" or level == "global"]
    preds = _cv_point(d, ctx, local, audit)
    if "global" in names and level != "global":
        preds["global"] = d["pred_global"].to_numpy(dtype=float)

    # selection: in-sample (served) and cross-fitted (reported)
    ranking = rank_candidates(preds, y, t, stations=st)
    # a unit holding every row of the table (one environment) has no global model apart from its own:
    # there the global model is one more own candidate, and the plainest tree is the reference
    sole = level != "global" and len(d) == int(ctx.summary.get("rows", -1))
    reference = "xgb_raw" if sole and "xgb_raw" in preds else "global"
    shrink = t.selection == "shrink" and not sole and level != "global" and "global" in preds
    if shrink:   # the unit's best own candidate; its weight against the global model is pooled (finalize)
        own_preds = {c: p for c, p in preds.items() if c != "global"}
        selected, weight = rank_candidates(own_preds, y, t, stations=st)[0]["candidate"], 1.0
        evidence: dict[str, Any] = {"rule": "shrink", "own": selected}
    else:
        selected, weight, evidence = choose_model(preds, y, t, stations=st, level=level, reference=reference)
    runner_up = next((e["candidate"] for e in ranking if e["candidate"] != selected), None)

    def served(name: str, w: float, rows: Any = slice(None)) -> np.ndarray:
        if w < 1.0:
            return blend(preds[name][rows], preds["global"][rows], w)
        return preds[name][rows]

    framework = np.full(len(d), np.nan)
    by_fold: dict[int, str] = {}
    weight_by_fold: dict[int, float] = {}
    folds = _by_fold(d)
    for f, test in folds:
        if len(folds) > 1 and shrink:
            own_preds = {c: p for c, p in preds.items() if c != "global"}
            choice, w_f = rank_candidates(own_preds, y, t, mask=~test)[0]["candidate"], 1.0
        elif len(folds) > 1:
            choice, w_f, _ = choose_model(preds, y, t, stations=st, mask=~test, level=level, reference=reference)
        else:
            choice, w_f = selected, weight
        by_fold[f] = choice
        weight_by_fold[f] = w_f
        framework[test] = served(choice, w_f, test)

    # uncertainty of the served model (a blend mixes its components' bounds, then is calibrated)
    if selected == "global" and level != "global":
        lo_raw = d["lo_global"].to_numpy(dtype=float)
        hi_raw = d["hi_global"].to_numpy(dtype=float)
    else:
        lo_raw, hi_raw = _cv_quantiles(d, ctx, selected)
        if weight < 1.0:
            lo_raw = blend(lo_raw, d["lo_global"].to_numpy(dtype=float), weight)
            hi_raw = blend(hi_raw, d["hi_global"].to_numpy(dtype=float), weight)
    lo, hi, shift = _served_intervals(d, lo_raw, hi_raw, y, t)

    # final models on all rows
    point_bytes = quant_bytes = None
    base_fallback = None
    if not (selected == "global" and level != "global"):
        feats = candidates.add_physics(d, ctx.wcm_params, nominal_incidence_deg=t.nominal_incidence_deg)
        point = candidates.fit_candidate(selected, feats, ctx.features[selected], t, nthread=ctx.nthread)
        base_fallback = point.base_fallback
        quant = candidates.fit_quantiles(selected, feats, ctx.quantile_features[selected], t,
                                         base_fallback=base_fallback, nthread=ctx.nthread)
        point_bytes, quant_bytes = point.to_bytes(), quant.to_bytes()

    oof = pd.DataFrame({"_row": d["_row"].to_numpy(), "station_id": st, "env": d["env"].to_numpy(),
                        "fold": d["fold"].to_numpy(), "ssm": y})
    for c in names:
        oof[f"pred_{c}"] = preds[c]
    oof["framework"] = framework
    oof["framework_insample"] = served(selected, weight)
    oof["lo_raw"], oof["hi_raw"], oof["lo"], oof["hi"] = lo_raw, hi_raw, lo, hi
    if shrink:   # what finalize needs to mix the unit's own model with the global one
        oof["own_cf"] = framework
        oof["lo_global_raw"] = d["lo_global"].to_numpy(dtype=float)
        oof["hi_global_raw"] = d["hi_global"].to_numpy(dtype=float)
    res = UnitResult(
        key=key, level=level, candidates=list(names), selected=selected, runner_up=runner_up,
        ranking=ranking, selected_by_fold=by_fold, blend_weight=weight, weight_by_fold=weight_by_fold,
        selection_evidence=evidence, n=int(len(d)), stations=int(pd.unique(st).size), oof=oof,
        point_model=point_bytes, quantile_model=quant_bytes,
        features=list(ctx.features[selected]) if point_bytes is not None or selected in candidates.PHYSICAL_CANDIDATES
        else [],
        quantile_features=list(ctx.quantile_features[selected]) if quant_bytes is not None else [],
        base_fallback=base_fallback, interval_shift=(float(shift[0]), float(shift[1])),
        feature_importance=_importance(point_bytes), audit=audit, seconds=time.perf_counter() - t0,
    )
    log.info("unit %s (%s): %s wins (runner-up %s), %.1f s", key, level, selected, runner_up, res.seconds)
    return res
