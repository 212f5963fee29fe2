"""The validation metrics of :mod:`ssm_spark.validation.scores`, computed in Spark for large inputs.

One aggregation pass per call: for each group, the additive sums over the valid pairs
(``n, sum e, sum o, sum e^2, sum o^2, sum eo`` and, for full precision of bias and RMSE when the
estimate is close to the observation, ``sum d, sum d^2`` with ``d = e - o``). The sums of each group
become metrics through Spark SQL expressions that mirror
:func:`ssm_spark.validation.scores.metrics_from_sums` term by term (Entekhabi et al. 2010:
``bias = mean(e - o)``, ``RMSE``, ``ubRMSE = sqrt(RMSE^2 - bias^2)``, Pearson ``R``), so nothing
leaves the JVM; ``tests/test_validation.py`` holds the two equal per group. :func:`metrics` and
:func:`summary` bring the (small) sums to the driver and use the numpy function itself.

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

from typing import TYPE_CHECKING, Any, Sequence

from ssm_spark.errors import InputError
from ssm_spark.validation.scores import _REL_VAR_EPS, METRICS, SUM_COLUMNS, metrics_from_sums, summary_from_sums

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


def _metric_columns(min_n: int) -> list:
    """Spark column expressions of R, ubRMSE, bias, RMSE over the sum columns: the formulas of
    :func:`ssm_spark.validation.scores._from_moments` (same NaN rules and zero-variance threshold),
    written out in Spark SQL so the aggregation never leaves the JVM."""
    from pyspark.sql import functions as F

    n = F.col("n").cast("double")
    nan = F.lit(float("nan"))
    me, mo, md = F.col("s_e") / n, F.col("s_o") / n, F.col("s_d") / n
    var_e = F.col("s_ee") / n - me * me
    var_o = F.col("s_oo") / n - mo * mo
    cov = F.col("s_eo") / n - me * mo
    mse = F.col("s_dd") / n
    flat_e = var_e <= F.lit(_REL_VAR_EPS) * (var_e + me * me)
    flat_o = var_o <= F.lit(_REL_VAR_EPS) * (var_o + mo * mo)
    r = F.greatest(F.least(cov / F.sqrt(var_e * var_o), F.lit(1.0)), F.lit(-1.0))
    few = F.col("n") < F.lit(max(int(min_n), 1))
    return [
        F.when(few | (F.col("n") < 3) | flat_e | flat_o, nan).otherwise(r).alias("R"),
        F.when(few | (F.col("n") < 2), nan).otherwise(F.sqrt(F.greatest(mse - md * md, F.lit(0.0)))).alias("ubRMSE"),
        F.when(few, nan).otherwise(md).alias("bias"),
        F.when(few, nan).otherwise(F.sqrt(F.greatest(mse, F.lit(0.0)))).alias("RMSE"),
    ]


def metrics_by(df: "DataFrame", by: str | Sequence[str] | None = None, est: str = "ssm_est",
               obs: str = "ssm", min_n: int = 10) -> "DataFrame":
    """Spark twin of :func:`ssm_spark.validation.scores.metrics_by`: ``n, R, ubRMSE, bias, RMSE``
    per group, from one aggregation of sums (pure Spark SQL; no Python worker).

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
        The ``by`` columns then ``n`` (long), ``R, ubRMSE, bias, RMSE`` (double, NaN where undefined);
        unordered.
    """
    by = _as_list(by)
    return sums_by(df, by, est, obs).select(*by, "n", *_metric_columns(min_n))


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
