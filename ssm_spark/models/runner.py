"""The one training runner: prepare, global model, every unit (mapped anywhere), finalize.

The run, in order (:func:`run_training`):

1. :func:`~ssm_spark.models.training.prepare_training` (driver): clean the matchups (no in-situ
   value, no environment, or a mask bit set: water, built-up, snow/ice, frozen, steep slope ->
   dropped and counted), assign every *station* to exactly one of K folds over the whole table,
   calibrate the WCM once per fold on that fold's *training* stations only and once on everything,
   choose the level of every environment.
2. :func:`~ssm_spark.models.training.train_global` (driver): the ``global`` candidate, one coupled
   model over all environments (K fold models for out-of-fold predictions + the final model, with
   its quantile model).
3. :func:`~ssm_spark.models.training.attach_global_oof`: its out-of-fold predictions become columns
   of the table, so that each environment compares its own candidates with the global model on
   exactly the same rows.
4. :func:`~ssm_spark.models.training.train_unit` for every *unit* (environment or land-cover group),
   through the *unit map*: the one thing that differs between running here and running on Spark.
   :func:`local_map` trains the units in this process (or in spawned worker processes);
   :func:`ssm_spark.models.spark_train.spark_map` makes each unit one Spark task.
5. :func:`~ssm_spark.models.metrics_report.finalize_training`: per-environment figures, the overall
   figures and the ``cv_metrics.json`` dict; then the out-of-fold table gets each row's date and
   place (``date, lon, lat, network, row, col`` where the matchups have them).

The units are assembled in one order whatever the map (the global unit, then the biggest unit
first, as they are handed out), so the result does not depend on where, or in which order, they ran.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.models.folds import _train_cfg
from ssm_spark.models.metrics_report import TrainingResult, finalize_training
from ssm_spark.models.training import (TrainingContext, UnitResult, attach_global_oof, prepare_training,
                                       train_global, train_unit, unit_frames)
from ssm_spark.physics.calibrate import GLOBAL_KEY

log = logging.getLogger(__name__)

__all__ = ["UnitJob", "UnitMap", "LocalMap", "local_map", "run_training", "train_models", "OOF_PLACE_COLUMNS"]

#: One unit to train: its key, its rows, and the context (whose ``nthread`` the map may change).
UnitJob = tuple[str, pd.DataFrame, TrainingContext]
#: Columns of the matchups carried into the out-of-fold table (where the matchups have them).
OOF_PLACE_COLUMNS = ("date", "lon", "lat", "network", "row", "col")


class UnitMap(Protocol):
    """Where the units train: called with every unit job, returns one result per job (any order)."""

    def __call__(self, jobs: Sequence[UnitJob]) -> Iterable[UnitResult]: ...

    def describe(self) -> dict[str, Any]:
        """What to record in ``TrainingResult.seconds`` about where the units ran (``units_on``, ...)."""
        ...


def _unit_job(job: UnitJob) -> UnitResult:
    key, d, ctx = job
    return train_unit(key, d, ctx)


@dataclass(frozen=True)
class LocalMap:
    """The units in this process, or (``max_workers > 1``) in that many spawned processes."""

    max_workers: int = 1

    def __call__(self, jobs: Sequence[UnitJob]) -> list[UnitResult]:
        if self.max_workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=self.max_workers, mp_context=ctx) as ex:
                return list(ex.map(_unit_job, jobs))
        return [_unit_job(job) for job in jobs]

    def describe(self) -> dict[str, Any]:
        return {"units_on": "process" if self.max_workers <= 1 else "processes", "workers": self.max_workers}


def local_map(max_workers: int = 1) -> LocalMap:
    """The unit map of a single-machine run (:class:`LocalMap`)."""
    return LocalMap(max_workers=max_workers)


def _collect(jobs: Sequence[UnitJob], results: Iterable[UnitResult]) -> dict[str, UnitResult]:
    """The map's results keyed and ordered as the jobs were; refuses a missing, extra or repeated one."""
    got: dict[str, UnitResult] = {}
    for res in results:
        if res.key in got:
            raise InputError(f"training: the unit map returned unit {res.key!r} twice")
        got[res.key] = res
    wanted = [key for key, _, _ in jobs]
    missing = [k for k in wanted if k not in got]
    extra = sorted(set(got) - set(wanted))
    if missing or extra:
        raise InputError(f"training: the unit map returned no result for {missing} and unasked ones for {extra}")
    return {k: got[k] for k in wanted}


def run_training(matchups: pd.DataFrame, cfg: Any, map_units: UnitMap, *, nthread: Optional[int] = None,
                 max_workers: int = 1) -> TrainingResult:
    """Train, cross-validate and select per environment, the units trained by ``map_units``.

    Parameters
    ----------
    matchups : pandas.DataFrame
        The matchup table.
    cfg : Config or TrainConfig
    map_units : UnitMap
        Where the units train: :func:`local_map` or :func:`ssm_spark.models.spark_train.spark_map`.
        The result does not depend on it.
    nthread : int, optional
        XGBoost threads per model on the driver (preparation, global model) and of the units unless
        the map sets its own (default ``cfg.xgb.nthread``; 0 -> all cores).
    max_workers : int, default 1
        Processes for the K + 1 WCM calibrations.

    Returns
    -------
    TrainingResult
        With ``oof`` carrying :data:`OOF_PLACE_COLUMNS` of the matchups, and ``seconds`` the time of
        each step plus the map's :meth:`UnitMap.describe`.

    Raises
    ------
    InputError
        From the preparation (no usable row, fewer than 2 stations, ...), or when the map does not
        return exactly one result per unit.
    """
    t0 = time.perf_counter()
    ctx, df = prepare_training(matchups, cfg, nthread=nthread, max_workers=max_workers)
    t1 = time.perf_counter()
    glob = train_global(df, ctx)
    t2 = time.perf_counter()
    df = attach_global_oof(df, glob)
    # biggest units first (stable), so that the longest ones start at once wherever they run
    frames = sorted(unit_frames(df, ctx).items(), key=lambda kv: -len(kv[1]))
    jobs: list[UnitJob] = [(key, frame, ctx) for key, frame in frames]
    results = {GLOBAL_KEY: glob, **(_collect(jobs, map_units(jobs)) if jobs else {})}
    t3 = time.perf_counter()
    out = finalize_training(ctx, results)
    # carry each out-of-fold row's date and place, for reports and evaluation
    keep = [c for c in OOF_PLACE_COLUMNS if c in df.columns and c not in out.oof.columns]
    if keep and "_row" in out.oof.columns:
        out.oof = out.oof.merge(df[["_row", *keep]], on="_row", how="left")
    where = map_units.describe()
    out.seconds.update(prepare=t1 - t0, global_model=t2 - t1, units_total=t3 - t2, total=time.perf_counter() - t0,
                       **where)
    log.info("trained %d units (%s) in %.1f s (global %.1f s on the driver)", len(results), where.get("units_on"),
             t3 - t0, t2 - t1)
    return out


def train_models(matchups: pd.DataFrame, cfg: Any, *, nthread: Optional[int] = None,
                 max_workers: int = 1) -> TrainingResult:
    """The whole training on this machine: :func:`run_training` with :func:`local_map`.

    Parameters
    ----------
    matchups : pandas.DataFrame
        The matchup table.
    cfg : Config or TrainConfig
    nthread : int, optional
        XGBoost threads per model (default ``cfg.xgb.nthread``; 0 -> all cores).
    max_workers : int, default 1
        > 1: the WCM calibrations and the units run in that many spawned processes (give ``nthread``
        = cores / workers; by default it is). Results do not depend on it.

    Returns
    -------
    TrainingResult
    """
    if nthread is None and max_workers > 1 and not _train_cfg(cfg).xgb.nthread:
        nthread = max(1, (os.cpu_count() or 1) // max_workers)
    return run_training(matchups, cfg, local_map(max_workers), nthread=nthread, max_workers=max_workers)
