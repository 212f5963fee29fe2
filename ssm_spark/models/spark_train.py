"""Training on Spark: the environments (training units) in parallel across executors.

The driver prepares (cleans, assigns station folds, calibrates the WCM per fold: all small) and
trains the global model with every driver core; then each unit (environment, land-cover group) is
one Spark task that runs :func:`ssm_spark.models.selection.train_unit` with XGBoost threads matched
to the task's cores (``spark.task.cpus``). Results come back as plain data and UBJ model bytes and
are assembled by :func:`ssm_spark.models.selection.finalize_training`, exactly as the single-process
:func:`~ssm_spark.models.selection.train_models` does: the result does not depend on where it ran.

Limit: one unit must fit one executor (its matchups are a table of thousands to a few million rows,
its models a few MB). A global model that does not fit one executor is out of scope.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from ssm_spark.models.selection import (
    GLOBAL_KEY,
    TrainingResult,
    attach_global_oof,
    finalize_training,
    prepare_training,
    train_global,
    train_unit,
    unit_frames,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def _task_cpus(spark: "SparkSession") -> int:
    return int(spark.conf.get("spark.task.cpus", "1"))


def train_on_spark(spark: "SparkSession", matchups: pd.DataFrame, cfg: Any,
                   driver_threads: Optional[int] = None) -> TrainingResult:
    """Train, cross-validate and select per environment, the units in parallel on the executors.

    Parameters
    ----------
    spark : SparkSession
    matchups : pandas.DataFrame
        The matchup table (small: thousands of rows per environment).
    cfg : Config or TrainConfig
    driver_threads : int, optional
        XGBoost threads for the global model on the driver (default: Spark's default parallelism).

    Returns
    -------
    TrainingResult
    """
    sc = spark.sparkContext
    t0 = time.perf_counter()
    ctx, df = prepare_training(matchups, cfg, nthread=driver_threads or sc.defaultParallelism)
    t1 = time.perf_counter()
    glob = train_global(df, ctx)
    t2 = time.perf_counter()
    df = attach_global_oof(df, glob)
    unit_ctx = dataclasses.replace(ctx, nthread=_task_cpus(spark))
    frames = unit_frames(df, unit_ctx)
    # biggest units first, one per task, so the longest ones start at once
    jobs = sorted(frames.items(), key=lambda kv: -len(kv[1]))
    results = {GLOBAL_KEY: glob}
    if jobs:
        def _run(job):
            key, frame = job
            return train_unit(key, frame, unit_ctx)

        for res in sc.parallelize(jobs, numSlices=len(jobs)).map(_run).collect():
            results[res.key] = res
    t3 = time.perf_counter()
    out = finalize_training(ctx, results)
    # carry each out-of-fold row's date and place, for reports and evaluation
    keep = [c for c in ("date", "lon", "lat", "network", "row", "col") if c in df.columns and c not in out.oof.columns]
    if keep and "_row" in out.oof.columns:
        out.oof = out.oof.merge(df[["_row", *keep]], on="_row", how="left")
    out.seconds.update(prepare=t1 - t0, global_model=t2 - t1, units_total=t3 - t2, total=time.perf_counter() - t0,
                       units_on="spark", task_cpus=_task_cpus(spark))
    log.info("trained %d units on Spark in %.1f s (global %.1f s on the driver)", len(results), t3 - t0, t2 - t1)
    return out
