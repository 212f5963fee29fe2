"""The validation metrics of :mod:`ssm_spark.validation.scores`, computed in Spark for large inputs.

One aggregation pass per call: for each group, the additive sums over the valid pairs
(``n, sum e, sum o, sum e^2, sum o^2, sum eo`` and, for full precision of bias and RMSE when the
estimate is close to the observation, ``sum d, sum d^2`` with ``d = e - o``). The sums of each group
(one small row) are turned into metrics by the same numpy function as the no-Spark path,
:func:`ssm_spark.validation.scores.metrics_from_sums`, through ``mapInPandas``, so the formulas
exist once (Entekhabi et al. 2010: ``bias = mean(e - o)``, ``RMSE``, ``ubRMSE = sqrt(RMSE^2 -
bias^2)``, Pearson ``R``).

Numerically, the sums form subtracts ``mean^2`` from ``mean of squares``; for soil moisture
(values 0-0.6 m3/m3, variances 1e-4-1e-1) the loss is a few units in the 13th digit, far below what
the metrics are reported to. Sums are additive, so :func:`summary` aggregates the big table once per
(station, network, env) and pools everything else on the driver exactly.

References
----------
Entekhabi, D., Reichle, R. H., Koster, R. D. and Crow, W. T. (2010). Performance metrics for soil
moisture retrievals and application requirements. Journal of Hydrometeorology 11(3), 832-840.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.validation.scores import METRICS, SUM_COLUMNS, metrics_from_sums, summary_from_sums

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["sums_by", "metrics_by", "metrics", "summary"]


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def sums_by(df: "DataFrame", by: str | Sequence[str] | None = None, est: str = "ssm_est",
            obs: str = "ssm") -> "DataFrame":
    """Sums per group over the pairs where both ``est`` and ``obs`` are finite (null, NaN and
    infinite values are dropped), in one aggregation.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        One row per estimate/observation pair.
    by : str or sequence of str or None
        Grouping column(s); None or ``[]``: one row for the whole table.
    est, obs : str
        Columns of the estimate and of the observation (cast to double).

    Returns
    -------
    pyspark.sql.DataFrame
        The ``by`` columns then ``n`` (long) and ``s_e, s_o, s_ee, s_oo, s_eo, s_d, s_dd`` (double);
        one row per group with at least one valid pair (without ``by``, always one row).

    Raises
    ------
    InputError
        When a named column is missing.
    """
    from pyspark.sql import functions as F

    by = _as_list(by)
    missing = [c for c in by + [est, obs] if c not in df.columns]
    if missing:
        raise InputError(f"spark metrics: column(s) {missing} not in the table (columns: {df.columns})")
    e = F.col(est).cast("double")
    o = F.col(obs).cast("double")
    inf = float("inf")
    valid = (e.isNotNull() & o.isNotNull() & ~F.isnan(e) & ~F.isnan(o) & (F.abs(e) < inf) & (F.abs(o) < inf))
    pairs = df.where(valid).select(*[F.col(c) for c in by], e.alias("_e"), o.alias("_o"))
    d = F.col("_e") - F.col("_o")
    aggs = [
        F.count(F.lit(1)).alias("n"),
        F.sum("_e").alias("s_e"),
        F.sum("_o").alias("s_o"),
        F.sum(F.col("_e") * F.col("_e")).alias("s_ee"),
        F.sum(F.col("_o") * F.col("_o")).alias("s_oo"),
        F.sum(F.col("_e") * F.col("_o")).alias("s_eo"),
        F.sum(d).alias("s_d"),
        F.sum(d * d).alias("s_dd"),
    ]
    out = pairs.groupBy(*by).agg(*aggs) if by else pairs.agg(*aggs)
    return out.select(*by, *SUM_COLUMNS)


def metrics_by(df: "DataFrame", by: str | Sequence[str] | None = None, est: str = "ssm_est",
               obs: str = "ssm", min_n: int = 10) -> "DataFrame":
    """Spark twin of :func:`ssm_spark.validation.scores.metrics_by`: ``n, R, ubRMSE, bias, RMSE``
    per group, from one aggregation of sums.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        One row per estimate/observation pair.
    by : str or sequence of str or None
        Grouping column(s) (station, network, env, pixel, ...); None: the whole table.
    est, obs : str
        Columns of the estimate and the observation.
    min_n : int
        Groups with fewer valid pairs keep their ``n`` but get NaN metrics.

    Returns
    -------
    pyspark.sql.DataFrame
        The ``by`` columns then ``n`` (long), ``R, ubRMSE, bias, RMSE`` (double); unordered.
    """
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    by = _as_list(by)
    sums = sums_by(df, by, est, obs)
    key_fields = [sums.schema[c] for c in by]
    schema = StructType(key_fields + [StructField("n", LongType(), False)] +
                        [StructField(k, DoubleType(), True) for k in METRICS])

    def _apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            m = metrics_from_sums(pdf)
            out = pdf[by].copy()
            out["n"] = m["n"]
            few = m["n"] < min_n
            for k in METRICS:
                out[k] = np.where(few, np.nan, m[k])
            yield out

    return sums.mapInPandas(_apply, schema)


def metrics(df: "DataFrame", est: str = "ssm_est", obs: str = "ssm") -> dict[str, float | int]:
    """:func:`ssm_spark.validation.scores.metrics` over a whole Spark table (one aggregation; the
    sums come to the driver).

    Returns
    -------
    dict
        ``{"R", "ubRMSE", "bias", "RMSE", "n"}``.
    """
    row = sums_by(df, None, est, obs).toPandas()
    m = metrics_from_sums(row)
    out: dict[str, float | int] = {k: float(m[k][0]) for k in METRICS}
    out["n"] = int(m["n"][0])
    return out


def summary(df: "DataFrame", est: str = "ssm_est", obs: str = "ssm", station: str = "station_id",
            network: str | None = "network", env: str | None = "env", min_n: int = 10) -> dict[str, Any]:
    """Spark twin of :func:`ssm_spark.validation.scores.summary`.

    One aggregation of sums per (station[, network][, env]) in Spark (a few thousand rows at most),
    then :func:`ssm_spark.validation.scores.summary_from_sums` pools them on the driver.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        One row per pair.
    est, obs, station, network, env, min_n
        As in :func:`ssm_spark.validation.scores.summary`; an optional column absent from ``df``
        leaves its section out.

    Returns
    -------
    dict
        As :func:`ssm_spark.validation.scores.summary`.
    """
    keys = [station] + [c for c in (network, env) if c is not None and c in df.columns]
    sums = sums_by(df, keys, est, obs).toPandas()
    return summary_from_sums(sums, station=station,
                             network=network if network in keys else None,
                             env=env if env in keys else None, min_n=min_n)
