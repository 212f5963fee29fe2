"""Spark transforms: the numpy/pandas kernels of :mod:`ssm_spark.physics` over DataFrames.

This is the one place the physics meets Spark: each transform hands Arrow batches to the same
pandas function that the no-Spark paths (point retrieval, tests, benchmarks) call, so there is one
implementation of every equation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from ssm_spark.physics.features import coupled_features

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

_SPARK_TYPES = {"f": "double", "i": "int", "u": "int", "b": "boolean", "O": "string"}


def _feature_columns(df: "DataFrame", params: Any, kwargs: dict) -> list[tuple[str, str]]:
    """Names and Spark types of the columns :func:`coupled_features` adds for this input schema."""
    probe = pd.DataFrame({f.name: pd.Series([], dtype="float64") for f in df.schema.fields})
    for f in df.schema.fields:
        if f.dataType.simpleString() == "string":
            probe[f.name] = pd.Series([], dtype=object)
    out = coupled_features(probe, params, **kwargs)
    return [(c, _SPARK_TYPES[out[c].dtype.kind]) for c in out.columns if c not in df.columns]


def add_coupled_features(df: "DataFrame", params: Any = None, **kwargs: Any) -> "DataFrame":
    """Add the coupled physics features (:func:`ssm_spark.physics.features.coupled_features`) to a
    pixel or matchup DataFrame.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        With ``vv_db`` and/or ``vh_db``, ``incidence_deg``, ``ndvi`` and optionally ``env`` and
        ``qc`` (mask bits, kept and ORed with the physics bits).
    params : optional
        WCM parameters in any form :func:`coupled_features` accepts (a calibration table or dict);
        small, shipped with the task closure.
    **kwargs
        Passed to :func:`coupled_features` (column names, nominal incidence angle, ...).

    Returns
    -------
    pyspark.sql.DataFrame
        The input columns, then the feature columns; ``qc`` is an int column (uint16 bits).
    """
    added = _feature_columns(df, params, kwargs)
    in_cols = df.columns
    qc_col = kwargs.get("qc_col", "qc")
    schema = ", ".join([f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields] +
                       [f"`{c}` {t}" for c, t in added])

    def _apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            out = coupled_features(pdf, params, **kwargs)
            if qc_col in out.columns:
                out[qc_col] = out[qc_col].astype(np.int32)
            yield out[in_cols + [c for c, _ in added]]

    return df.mapInPandas(_apply, schema)
