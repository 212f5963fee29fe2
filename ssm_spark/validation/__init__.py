"""Validation of soil-moisture estimates against in situ (Entekhabi et al. 2010 metrics).

``from ssm_spark.validation import metrics`` gives :func:`ssm_spark.validation.scores.metrics`.
The Spark twin is :mod:`ssm_spark.validation.spark_scores` and the HTML report
:mod:`ssm_spark.validation.report`; neither is imported here, so this package stays light (numpy and
pandas only).
"""

from __future__ import annotations

from ssm_spark.validation.scores import (
    METRICS,
    PAPER_REFERENCE,
    metrics,
    metrics_by,
    metrics_from_sums,
    sums_by,
    summary,
    summary_from_sums,
    to_jsonable,
)

__all__ = [
    "METRICS",
    "PAPER_REFERENCE",
    "metrics",
    "metrics_by",
    "metrics_from_sums",
    "sums_by",
    "summary",
    "summary_from_sums",
    "to_jsonable",
]
