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
    from pyspark.sql.types import StructType

_SPARK_TYPES = {"f": "double", "i": "int", "u": "int", "b": "boolean", "O": "string"}


def features_fn(input_schema: str | "StructType", params: Any = None, **kwargs: Any):
    """The coupled-feature step as a pandas function and its output schema, for fusing into another
    pandas stage (:func:`ssm_spark.sources.stacks.read_pixels` ``then=``).

    Returns
    -------
    (callable, str)
        ``fn(pdf) -> pdf`` and the Spark DDL of its output.
    """
    from pyspark.sql.types import StructType, _parse_datatype_string

    st = input_schema if isinstance(input_schema, StructType) else _parse_datatype_string(input_schema)
    probe = pd.DataFrame({f.name: pd.Series([], dtype=object if f.dataType.simpleString() == "string" else "float64")
                          for f in st.fields})
    out = coupled_features(probe, params, **kwargs)
    added = [(c, _SPARK_TYPES[out[c].dtype.kind]) for c in out.columns if c not in probe.columns]
    in_cols = [f.name for f in st.fields]
    qc_col = kwargs.get("qc_col", "qc")
    ddl = ", ".join([f"`{f.name}` {f.dataType.simpleString()}" for f in st.fields] + [f"`{c}` {t}" for c, t in added])

    def fn(pdf: pd.DataFrame) -> pd.DataFrame:
        res = coupled_features(pdf, params, **kwargs)
        if qc_col in res.columns:
            res[qc_col] = res[qc_col].astype(np.int32)
        return res[in_cols + [c for c, _ in added]]

    return fn, ddl


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
    fn, ddl = features_fn(df.schema, params, **kwargs)

    def _apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            yield fn(pdf)

    return df.mapInPandas(_apply, ddl)
