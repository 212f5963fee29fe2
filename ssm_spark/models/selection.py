"""Model selection: station-grouped cross-validation of the candidates per environment, fallback
levels, final fits, and the ``cv_metrics.json`` summary.

The run, in order (:func:`train_models` does all of it in one process; the Spark layer runs step 4
per unit with ``applyInPandas``):

1. :func:`prepare_training` (driver): clean the matchups (no in-situ value, no environment, or a mask
   bit set: water, built-up, snow/ice, frozen, steep slope -> dropped and counted), assign every
   *station* to exactly one of K folds over the whole table (:func:`assign_folds`: within each
   environment, stations are dealt to the folds so that each fold gets a similar number of stations
   and matchups), calibrate the WCM once per fold on that fold's *training* stations only, and once on
   everything (:func:`calibrate_folds`), choose the level of every environment (:func:`plan_levels`).
2. :func:`train_global`: the ``global`` candidate, one coupled model over all environments (K fold
   models for out-of-fold predictions + the final model, with its quantile model).
3. :func:`attach_global_oof`: its out-of-fold predictions become columns of the table, so that each
   environment can compare its own candidates with the global model on exactly the same rows.
4. :func:`train_unit` per *unit* (an environment with enough stations and matchups, or a pooled
   land-cover group): out-of-fold predictions of every candidate, selection, quantile model, final
   fits on all the unit's rows. Deterministic, pandas in, plain data + UBJ bytes out.
5. :func:`finalize_training`: per-environment figures (environment, group or global level), the
   overall figures and the ``cv_metrics.json`` dict (:func:`cv_metrics`).

Leakage. Because folds are assigned by station once for the whole table, a station is a test
station in exactly one fold everywhere: in the WCM calibration of that fold (fitted on the other
folds' stations), in every per-environment and group tree, and in the global tree.
:func:`fold_assignments` and :func:`leakage_report` expose the assignment for checks.

Selection (:mod:`ssm_spark.models.choice`, ``train.selection``). Default ``shrink``: every
environment's best own candidate mixed with the global model by one weight pooled over all
environments; ``blend``/``paired``: the global model unless a paired test over stations says the
environment's own candidate (or mix) is better; ``best``: the lowest ubRMSE wins. The reported
``framework`` figures are *cross-fitted*: the choice (and weight) used for fold k is made on the
other folds' out-of-fold predictions, at no extra training cost. The in-sample choice (the one
served) and its figures are reported beside it (``framework_insample_selection``).

Uncertainty. The quantile model of the selected candidate is cross-validated on the same folds. With
``interval_calibration: conformal`` each bound is shifted by the split-conformal correction of its
own tail, measured on out-of-fold predictions: for fold k on the other folds (so the reported
coverage is held out), for the served model on all of them.

Levels. An environment with at least ``min_stations`` stations and ``min_samples`` matchups gets its
own models (``level: environment``); otherwise its land-cover group's pooled models when the group
qualifies (``level: group``); otherwise the global model (``level: global``).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import InputError
from ssm_spark.models import candidates
from ssm_spark.models.candidates import CANDIDATES, blend
from ssm_spark.models.choice import (_by_fold, _coverage, _served_intervals, choose_model, conformal_shift,
                                     rank_candidates, score, shrink_units)
from ssm_spark.physics.calibrate import GLOBAL_KEY, group_of
from ssm_spark.validation import metrics_by

log = logging.getLogger(__name__)

__all__ = [
    "CONTRACT_METRIC_KEYS",
    "CONTRACT_ENV_KEYS",
    "MIN_STATION_SAMPLES",
    "TrainingContext",
    "UnitResult",
    "TrainingResult",
    "clean_matchups",
    "assign_folds",
    "fold_assignments",
    "leakage_report",
    "calibrate_fold",
    "calibrate_folds",
    "plan_levels",
    "prepare_training",
    "train_global",
    "attach_global_oof",
    "unit_frames",
    "train_unit",
    "finalize_training",
    "train_models",
    "rank_candidates",
    "conformal_shift",
    "cv_metrics",
    "score",
]

#: Keys of every metrics block of ``cv_metrics.json`` (DESIGN.md, "Public interfaces").
CONTRACT_METRIC_KEYS: tuple[str, ...] = ("R", "ubRMSE", "bias", "RMSE", "n", "stations")
#: Keys of every environment block of ``cv_metrics.json`` (more may follow them, none is renamed).
CONTRACT_ENV_KEYS: tuple[str, ...] = ("framework", "candidates", "selected", "runner_up", "level", "n",
                                      "stations", "coverage_p05_p95")
#: A station's own metrics (for the medians of per-station values) need this many matchups.
MIN_STATION_SAMPLES = 10

LEVELS = ("environment", "group", "global")


def _train_cfg(cfg: Any) -> Any:
    """The ``train`` section of a full :class:`~ssm_spark.config.Config`, or a TrainConfig as is."""
    return cfg.train if hasattr(cfg, "train") else cfg


# ------------------------------------------------------------------------------------------ metrics


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


# --------------------------------------------------------------------------------------- folds


def clean_matchups(
    matchups: pd.DataFrame,
    *,
    ssm_col: str = "ssm",
    station_col: str = "station_id",
    env_col: str = "env",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Training rows of a matchup table and the number of rows dropped per reason.

    Dropped: no finite in-situ value; no environment (masked land cover); a mask bit in ``qc``
    (:data:`ssm_spark.environments.MASK_BITS`). The rest is sorted by station and date (models do not
    depend on the input row order) and gets a ``_row`` column (0..n-1): the canonical order that
    every unit trains in and the key that out-of-fold predictions are aligned on.

    Raises
    ------
    InputError
        If ``ssm``, ``station_id`` or ``env`` is missing, or no row is left.
    """
    missing = [c for c in (ssm_col, station_col, env_col) if c not in matchups.columns]
    if missing:
        raise InputError(
            f"training: matchup table lacks column(s) {missing} (columns: {list(matchups.columns)}); "
            "env comes from ssm_spark.environments.environment(landcover, climate)")
    ssm = pd.to_numeric(matchups[ssm_col], errors="coerce").to_numpy(dtype=float)
    env = matchups[env_col]
    qc = (matchups["qc"].fillna(0).to_numpy().astype(np.int64) if "qc" in matchups.columns
          else np.zeros(len(matchups), np.int64))
    reasons = {
        "no_insitu": ~np.isfinite(ssm),
        "no_environment": env.isna().to_numpy() | (env.astype(str) == "").to_numpy(),
        "masked": (qc & MASK_BITS) != 0,
    }
    drop = np.zeros(len(matchups), dtype=bool)
    dropped: dict[str, int] = {}
    for reason, mask in reasons.items():
        dropped[reason] = int((mask & ~drop).sum())
        drop |= mask
    df = matchups.loc[~drop]
    # a canonical row order (Spark gives none): models depend on it through row subsampling
    order = [station_col] + [c for c in ("date", "time") if c in df.columns]
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    if df.empty:
        raise InputError(f"training: no usable matchup left of {len(matchups)} (dropped: {dropped})")
    df[env_col] = df[env_col].astype(str)
    df["_row"] = np.arange(len(df), dtype=np.int64)
    if any(dropped.values()):
        log.info("training: dropped %s of %d matchups", dropped, len(matchups))
    return df, dropped


def assign_folds(
    df: pd.DataFrame,
    k: int,
    seed: int,
    *,
    station_col: str = "station_id",
    env_col: str = "env",
) -> pd.Series:
    """Assign every station to one of ``k`` folds, once for the whole table.

    Within each environment (a station's environment is its most frequent one), stations are taken
    in a seeded random order, then largest first, and each goes to the fold that has the fewest
    stations of that environment so far (then the fewest matchups of it, then the fewest matchups
    overall, then the lowest index). Every environment is thus spread over the folds as evenly as its
    station count allows, and a station is in exactly one test fold everywhere.

    Parameters
    ----------
    df : pandas.DataFrame
        Matchups with station and environment columns.
    k : int
        Folds wanted; fewer stations than ``k`` gives one fold per station.
    seed : int
        Seed of the station order (``numpy.random.default_rng``).

    Returns
    -------
    pandas.Series
        Fold (int, 0..k_eff-1) indexed by station id, named ``fold``.

    Raises
    ------
    InputError
        With fewer than 2 stations (no cross-validation is possible).
    """
    sizes = df.groupby([station_col, env_col], sort=True).size().rename("n").reset_index()
    sizes = sizes.sort_values([station_col, "n", env_col], ascending=[True, False, True], kind="stable")
    st_env = sizes.drop_duplicates(station_col, keep="first")
    st_n = df.groupby(station_col, sort=True).size()
    n_st = len(st_n)
    if n_st < 2:
        raise InputError(f"cross-validation needs at least 2 stations, the matchups have {n_st}")
    k_eff = int(min(k, n_st))
    if k_eff < k:
        log.warning("only %d stations: %d-fold cross-validation instead of %d", n_st, k_eff, k)
    rng = np.random.default_rng(seed)
    total = np.zeros(k_eff, dtype=np.int64)
    folds: dict[Any, int] = {}
    for env in sorted(st_env[env_col].astype(str).unique()):
        sts = st_env.loc[st_env[env_col].astype(str) == env, station_col].to_numpy()
        sts = sts[rng.permutation(len(sts))]
        n = st_n.loc[sts].to_numpy()
        order = np.argsort(-n, kind="stable")
        cnt = np.zeros(k_eff, dtype=np.int64)
        smp = np.zeros(k_eff, dtype=np.int64)
        for i in order:
            f = min(range(k_eff), key=lambda j: (cnt[j], smp[j], total[j], j))
            folds[sts[i]] = f
            cnt[f] += 1
            smp[f] += n[i]
            total[f] += n[i]
    return pd.Series(folds, name="fold", dtype=np.int64).sort_index()


def fold_assignments(df: pd.DataFrame, cfg: Any, *, station_col: str = "station_id",
                     env_col: str = "env") -> pd.DataFrame:
    """The fold of every station as a table (``station_id, env, fold, n``), from the configuration's
    ``k_folds`` and ``seed``: the leakage-check helper."""
    t = _train_cfg(cfg)
    folds = assign_folds(df, t.k_folds, t.seed, station_col=station_col, env_col=env_col)
    info = df.groupby(station_col).agg(env=(env_col, lambda s: s.mode().iloc[0]), n=(env_col, "size"))
    out = info.join(folds).reset_index().rename(columns={"index": station_col})
    return out[[station_col, "env", "fold", "n"]]


def leakage_report(df: pd.DataFrame, fold_col: str = "fold", station_col: str = "station_id") -> pd.DataFrame:
    """Per fold: training and test station counts and how many stations are on both sides (0)."""
    rows = []
    for f in sorted(df[fold_col].unique()):
        test = set(df.loc[df[fold_col] == f, station_col])
        train = set(df.loc[df[fold_col] != f, station_col])
        rows.append({"fold": int(f), "train_stations": len(train), "test_stations": len(test),
                     "overlap": len(train & test)})
    return pd.DataFrame(rows)


def calibrate_fold(df: pd.DataFrame, cfg: Any, fold: Any, *, fold_col: str = "fold", physics: Any = None
                   ) -> dict[str, Any]:
    """Calibrate the physics chain on the stations *outside* ``fold`` (``fold="all"``: on everything).

    Parameters
    ----------
    df : pandas.DataFrame
        Clean matchups with a ``fold`` column.
    cfg : TrainConfig
        ``calib_min_samples``, ``calib_min_stations``, ``nominal_incidence_deg``.
    fold : int or "all"
    physics : PhysicsConfig, optional
        Angle normalisation, vegetation descriptor, bounds and change detection (default settings).

    Returns
    -------
    dict
        :func:`ssm_spark.physics.chain.calibrate_physics`: the WCM parameters
        (:func:`ssm_spark.physics.calibrate.to_dict` form, whose ``settings`` record
        ``calibration_fold`` and ``calibration_stations``) with the angle slopes and the
        change-detection calibration beside them.
    """
    from ssm_spark.physics.chain import calibrate_physics

    t = _train_cfg(cfg)
    train = df if fold == "all" else df.loc[df[fold_col] != fold]
    params = calibrate_physics(train, physics, min_samples=t.calib_min_samples, min_stations=t.calib_min_stations,
                               nominal_incidence_deg=t.nominal_incidence_deg)
    params.setdefault("settings", {})
    params["settings"]["calibration_fold"] = fold
    params["settings"]["calibration_stations"] = int(train["station_id"].nunique())
    return params


def _calibrate_job(args: tuple[pd.DataFrame, Any, Any, Any]) -> dict[str, Any]:
    df, cfg, fold, physics = args
    return calibrate_fold(df, cfg, fold, physics=physics)


def calibrate_folds(df: pd.DataFrame, cfg: Any, *, fold_col: str = "fold", max_workers: int = 1,
                    physics: Any = None) -> dict[Any, dict[str, Any]]:
    """:func:`calibrate_fold` for every fold and for all data: ``{0: ..., 1: ..., "all": ...}``.

    ``max_workers > 1`` runs them in spawned processes (the results do not depend on it).
    """
    keys: list[Any] = [*sorted(int(x) for x in df[fold_col].unique()), "all"]
    cols = [c for c in df.columns if not c.startswith("pred_")]
    jobs = [(df[cols], cfg, k, physics) for k in keys]
    if max_workers > 1:
        with cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            tables = list(ex.map(_calibrate_job, jobs))
    else:
        tables = [_calibrate_job(j) for j in jobs]
    return dict(zip(keys, tables))


def plan_levels(df: pd.DataFrame, cfg: Any, *, station_col: str = "station_id", env_col: str = "env"
                ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Level of every environment and the units to train.

    Returns
    -------
    (dict, dict)
        ``{env: {"level", "unit", "n", "stations", "fallback_chain"}}`` and ``{unit: level}`` where a
        unit is a qualifying environment (``environment``), a qualifying land-cover group
        (``group``: every one when ``group_models``, else only those some environment falls back
        to) and ``"global"`` (always).
    """
    t = _train_cfg(cfg)
    env_counts = df.groupby(env_col).agg(n=(station_col, "size"), stations=(station_col, "nunique"))
    groups = df[env_col].map(group_of)
    grp_counts = df.assign(_g=groups).groupby("_g").agg(n=(station_col, "size"), stations=(station_col, "nunique"))

    def qualifies(row: pd.Series) -> bool:
        return int(row["n"]) >= t.min_samples and int(row["stations"]) >= t.min_stations

    grp_ok = {g: qualifies(r) for g, r in grp_counts.iterrows()}
    plan: dict[str, dict[str, Any]] = {}
    units: dict[str, str] = {}
    for env, r in env_counts.sort_index().iterrows():
        g = group_of(env)
        chain = [env] + ([g] if g != env else []) + [GLOBAL_KEY]
        if g != env and qualifies(r):
            level, unit = "environment", env
        elif grp_ok.get(g, False):
            level, unit = "group", g
        else:
            level, unit = "global", GLOBAL_KEY
        plan[env] = {"level": level, "unit": unit, "n": int(r["n"]), "stations": int(r["stations"]),
                     "fallback_chain": chain}
        if level == "environment":
            units[env] = "environment"
        elif level == "group":
            units[g] = "group"
    if t.group_models:
        for g, ok in grp_ok.items():
            if ok:
                units[g] = "group"
    units[GLOBAL_KEY] = "global"
    return plan, dict(sorted(units.items()))


# ------------------------------------------------------------------------------------------ context


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
        The matchup table (DESIGN.md "Tables"). Stale physics columns are ignored.
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


# --------------------------------------------------------------------------------------------- units


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

    (In Spark: ``explode(array(env, group))`` filtered to the unit keys, then ``applyInPandas``
    grouped by unit.)
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


# ------------------------------------------------------------------------------------------ results


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
    """The ``cv_metrics.json`` dict (DESIGN.md "Public interfaces") and the out-of-fold table.

    ``environments[env]``: ``framework`` (cross-fitted selection, see the module docstring),
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
    cvm, oof = cv_metrics(ctx, units)
    if shrink:
        cvm["overall"]["shrinkage_weight"] = shrink["weight"]
        cvm["overall"]["shrinkage_weight_by_fold"] = {str(k): v for k, v in shrink["by_fold"].items()}
    seconds = dict(ctx.seconds)
    seconds["units"] = {k: round(u.seconds, 3) for k, u in units.items()}
    return TrainingResult(ctx=ctx, units=dict(units), oof=oof, cv_metrics=cvm, seconds=seconds)


def _unit_job(args: tuple[str, pd.DataFrame, TrainingContext]) -> UnitResult:
    key, d, ctx = args
    return train_unit(key, d, ctx)


def train_models(matchups: pd.DataFrame, cfg: Any, *, nthread: Optional[int] = None,
                 max_workers: int = 1) -> TrainingResult:
    """The whole training in pandas: prepare, global, every unit, finalize.

    Parameters
    ----------
    matchups : pandas.DataFrame
        The matchup table.
    cfg : Config or TrainConfig
    nthread : int, optional
        XGBoost threads per model (default ``cfg.xgb.nthread``; 0 -> all cores).
    max_workers : int, default 1
        > 1: the WCM calibrations and the units run in that many spawned processes (give ``nthread``
        = cores / workers). Results do not depend on it.

    Returns
    -------
    TrainingResult
    """
    t0 = time.perf_counter()
    if nthread is None and max_workers > 1 and not _train_cfg(cfg).xgb.nthread:
        nthread = max(1, (os.cpu_count() or 1) // max_workers)
    ctx, df = prepare_training(matchups, cfg, nthread=nthread, max_workers=max_workers)
    t1 = time.perf_counter()
    glob = train_global(df, ctx)
    t2 = time.perf_counter()
    df = attach_global_oof(df, glob)
    frames = unit_frames(df, ctx)
    results: dict[str, UnitResult] = {GLOBAL_KEY: glob}
    jobs = [(k, d, ctx) for k, d in frames.items()]
    if max_workers > 1 and len(jobs) > 1:
        with cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            for res in ex.map(_unit_job, jobs):
                results[res.key] = res
    else:
        for job in jobs:
            res = _unit_job(job)
            results[res.key] = res
    t3 = time.perf_counter()
    out = finalize_training(ctx, results)
    out.seconds.update(prepare=t1 - t0, global_model=t2 - t1, units_total=t3 - t2, total=time.perf_counter() - t0)
    return out
