"""Training on Spark: the environments (training units) in parallel across executors.

:func:`train_on_spark` is :func:`ssm_spark.models.runner.run_training` with :func:`spark_map`: the
driver prepares (cleans, assigns station folds, calibrates the WCM per fold: all small) and trains
the global model with every driver core; then each unit (environment, land-cover group) is one task
of an RDD map (``parallelize(jobs, len(jobs)).map(train_unit)``) that runs
:func:`ssm_spark.models.training.train_unit` with XGBoost threads matched to the task's cores
(``spark.task.cpus``). Results come back as plain data and UBJ model bytes and are assembled by the
same runner as the single-process :func:`~ssm_spark.models.runner.train_models`: the result does not
depend on where it ran.

Limit: one unit must fit one executor (its matchups are a table of thousands to a few million rows,
its models a few MB). A global model that does not fit one executor is out of scope.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from ssm_spark.models.metrics_report import TrainingResult
from ssm_spark.models.runner import UnitJob, _unit_job, run_training
from ssm_spark.models.training import UnitResult

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = ["SparkMap", "spark_map", "train_on_spark"]


def _task_cpus(spark: "SparkSession") -> int:
    return int(spark.conf.get("spark.task.cpus", "1"))


@dataclasses.dataclass(frozen=True)
class SparkMap:
    """The units as Spark tasks, one unit per task, each with ``spark.task.cpus`` XGBoost threads."""

    spark: "SparkSession"

    def __call__(self, jobs: Sequence[UnitJob]) -> list[UnitResult]:
        if not jobs:
            return []
        cpus = _task_cpus(self.spark)
        shipped = [(key, frame, dataclasses.replace(ctx, nthread=cpus)) for key, frame, ctx in jobs]
        return self.spark.sparkContext.parallelize(shipped, numSlices=len(shipped)).map(_unit_job).collect()

    def describe(self) -> dict[str, Any]:
        return {"units_on": "spark", "task_cpus": _task_cpus(self.spark)}


def spark_map(spark: "SparkSession") -> SparkMap:
    """The unit map that trains every unit as one Spark task (:class:`SparkMap`)."""
    return SparkMap(spark)


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
    return run_training(matchups, cfg, spark_map(spark),
                        nthread=driver_threads or spark.sparkContext.defaultParallelism)
