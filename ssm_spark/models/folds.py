"""How a matchup table is split for training: clean rows, station folds, and levels.

:func:`clean_matchups` keeps the rows that can train (and counts the others by reason);
:func:`assign_folds` deals every *station* to exactly one of K folds over the whole table;
:func:`plan_levels` decides the level of every environment and so the units to train.

Leakage. Because folds are assigned by station once for the whole table, a station is a test
station in exactly one fold everywhere: in the WCM calibration of that fold (fitted on the other
folds' stations, :mod:`ssm_spark.models.calibration_folds`), in every per-environment and group
tree, and in the global tree. :func:`fold_assignments` and :func:`leakage_report` expose the
assignment for checks.

Levels. An environment with at least ``min_stations`` stations and ``min_samples`` matchups gets its
own models (``level: environment``); otherwise its land-cover group's pooled models when the group
qualifies (``level: group``); otherwise the global model (``level: global``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import InputError
from ssm_spark.physics.calibrate import GLOBAL_KEY, group_of

log = logging.getLogger(__name__)

__all__ = ["LEVELS", "clean_matchups", "assign_folds", "fold_assignments", "leakage_report", "plan_levels"]

#: The levels of an environment, most specific first.
LEVELS = ("environment", "group", "global")


def _train_cfg(cfg: Any) -> Any:
    """The ``train`` section of a full :class:`~ssm_spark.config.Config`, or a TrainConfig as is."""
    return cfg.train if hasattr(cfg, "train") else cfg


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
