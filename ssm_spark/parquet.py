"""Parquet outputs, whole or not at all: the library's Parquet writers, all through :mod:`ssm_spark.io`.

Three shapes, one scheme (a temporary name beside the target, renamed over it when complete;
removed on an error):

- :func:`write_parquet_file`: an Arrow table as one file (the product's tile files, written by the
  executors; zstd, with statistics);
- :func:`write_table_atomic`: a pandas DataFrame as one file (small driver-side tables: out-of-fold
  predictions, validation pairs, a user's matchups);
- :func:`write_parquet_atomic`: a Spark DataFrame as a dataset folder (features, matchups), renamed
  into place when Spark has committed every task; to a URL (``s3://...``) the executors stage the
  files on the store and the driver publishes them (:mod:`ssm_spark.remote_dataset`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ssm_spark.io import atomic_dir, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["write_parquet_file", "write_table_atomic", "write_parquet_atomic"]


def write_parquet_file(table: "pa.Table", path: str | os.PathLike) -> int:
    """Write an Arrow table as one zstd Parquet file (with statistics) at ``path``; its size in bytes."""
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    return path.stat().st_size


def write_table_atomic(df: "pd.DataFrame", path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as one zstd Parquet file (no index); a folder of that name is replaced."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, compression="zstd", index=False)
        if path.is_dir():  # e.g. a Spark dataset written there before
            shutil.rmtree(path)


def write_parquet_atomic(df: "DataFrame", path: str | os.PathLike, partition_by: list[str] | None = None) -> None:
    """Write a Spark DataFrame as a zstd Parquet dataset folder at ``path`` (local or mounted paths).

    The dataset is written beside ``path`` under a temporary name and renamed over it when Spark
    has committed every task; a previous dataset at ``path`` is removed only after that. A URL
    (``s3://``, ``gs://``, ``abfss://``): written by the executors to the store and published, marker
    last (:func:`ssm_spark.remote_dataset.write_dataset`; no folder shared with them).
    """
    from ssm_spark import storage

    if storage.is_remote(path):
        from ssm_spark.remote_dataset import write_dataset

        write_dataset(df, str(path), partition_by)
        return
    path = Path(path).resolve()  # the executors write it: no path relative to the driver's folder
    with atomic_dir(path) as tmp:
        writer = df.write.mode("overwrite").option("compression", "zstd")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(str(tmp))
