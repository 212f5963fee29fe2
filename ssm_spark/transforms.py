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


def cd_kwargs(cdc: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`ssm_spark.physics.change_detection.climatology` from a
    :class:`~ssm_spark.config.ChangeDetectionConfig`."""
    return {"dry_percentile": cdc.dry_percentile, "wet_percentile": cdc.wet_percentile,
            "min_dates": cdc.min_dates, "min_spread_deg": cdc.min_spread_deg}


def cd_window(cdc: Any) -> tuple[Any, Any] | None:
    """The reference window ``(start, end)`` of a ChangeDetectionConfig (None: every date)."""
    if cdc.window_start is None and cdc.window_end is None:
        return None
    return (cdc.window_start, cdc.window_end)


def add_cell_climatology(df: "DataFrame", cdc: Any, *, by: tuple[str, ...] = ("row", "col")) -> "DataFrame":
    """Add each cell's change-detection climatology (:data:`~ssm_spark.physics.change_detection.CLIM_COLUMNS`)
    to a pixel DataFrame: one group per cell across its dates (``groupBy(by).applyInPandas``, the
    same :func:`~ssm_spark.physics.change_detection.climatology_frame` as the no-Spark paths), joined
    back on ``by``. Backscatter only: no in-situ value enters a climatology."""
    from ssm_spark.physics.change_detection import CLIM_COLUMNS, climatology_frame

    pols = [p for p in ("vv", "vh") if f"{p}_db" in df.columns]
    cols = [c for c in CLIM_COLUMNS if c in ("clim_n", "clim_theta_mean") or c.endswith(tuple(f"_{p}" for p in pols))]
    key_types = {f.name: f.dataType.simpleString() for f in df.schema.fields if f.name in by}
    ddl = ", ".join([f"{k} {key_types[k]}" for k in by] + [f"{c} double" for c in cols])
    need = [*by, "date", *[f"{p}_db" for p in pols], *(["incidence_deg"] if "incidence_deg" in df.columns else [])]
    kw = cd_kwargs(cdc)
    window = cd_window(cdc)

    def _clim(pdf: pd.DataFrame) -> pd.DataFrame:
        # a group's rows arrive in the shuffle's order, which varies from run to run: sorted, the
        # sums inside the climatology (means, slopes) are the same to the last bit in every run
        pdf = pdf.sort_values(need, kind="mergesort", ignore_index=True)
        out = climatology_frame(pdf, list(by), window=window, **kw)
        for c in cols:
            if c not in out.columns:
                out[c] = np.nan
        return out[[*by, *cols]]

    stats = df.select(*need).groupBy(*by).applyInPandas(_clim, ddl)
    return df.join(stats, on=list(by), how="left")
