"""A tile of the product on the executors: read and clip its stack file, predict, write its files.

No Spark here (the Spark tasks that call these are in :mod:`ssm_spark.product.tasks`), so the same
functions serve tests, benchmarks and ``ssm-spark point``:

- :func:`read_clipped`: a stack file -> pixel rows (masks, environment) of the region's cells,
  with the change-detection climatology of the cells when the run has one;
- :func:`predict_rows`: pixel rows -> product rows (:data:`~ssm_spark.product.schema.PRODUCT_FILE`,
  float32 estimates):
  coupled physics with the registry's WCM parameters + the model selected for each environment
  (:meth:`Registry.predict`, the physics computed once per pixel, in the task that reads it);
- :class:`TileFiles`: the one writer of a grid's tile files (Parquet + COG), for the fine product
  (:func:`write_tile`) and each coarse grid (:func:`ssm_spark.product.aggregate.write_coarse_tile`).

Rows are sorted by (row, col) before writing, so the bytes do not depend on how Spark split the
work; every file goes through a temporary name and a rename (a retried task rewrites it whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ssm_spark.environments import MASK_BITS
from ssm_spark.grid import Grid
from ssm_spark.io import atomic_path
from ssm_spark.physics.qc import QC
from ssm_spark.product.cog import tile_arrays, write_tile_cog
from ssm_spark.product.region import Region, clip_mask
from ssm_spark.product.schema import ESTIMATES, PRODUCT_FILE, arrow_table, empty_frame, plain_columns

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.models.registry import Registry
    from ssm_spark.sources.stacks import StackFile

__all__ = ["tile_name", "write_tile_parquet", "TileFiles", "DateJob", "read_clipped", "empty_rows", "predict_rows", "write_tile"]

_OUT_OF_RANGE = int(QC.PREDICTION_OUT_OF_RANGE)


def tile_name(grid: Grid, tile_row: int, tile_col: int) -> str:
    """A tile's file stem: ``<grid>_<tile_row>_<tile_col>``."""
    return f"{grid.name}_{tile_row}_{tile_col}"


def write_tile_parquet(table: pa.Table, path: Path) -> int:
    """One tile's table as a zstd Parquet file (temporary name, then rename); its size in bytes.

    The estimates (:func:`~ssm_spark.product.schema.plain_columns`) without a dictionary: a tile's
    float32 estimates are nearly all distinct, and zstd packs them into ~3.3 bytes each plain
    against ~5.2 through a dictionary. (BYTE_STREAM_SPLIT would give ~2.9, but Spark 3.5's reader
    refuses that encoding.) The other columns keep the dictionary (a few distinct values a tile).
    """
    import pyarrow.parquet as pq

    plain = plain_columns(table.schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True,
                       use_dictionary=[c for c in table.column_names if c not in plain])
    return path.stat().st_size


@dataclass(frozen=True)
class TileFiles:
    """Where and how a date's tiles of one grid are written (the fine product, or one coarse grid).

    ``base`` is the grid's staging folder: ``base/parquet/date=<date>/<tile>.parquet`` and, with
    ``bands``, ``base/cog/<date>/<tile>.tif``. ``tags`` (provenance) go into every file, with the
    tile's row and column.
    """

    grid: Grid
    base: str
    date: str
    schema: pa.Schema  # the files' table (schema.PRODUCT_FILE or schema.AGGREGATE_FILE)
    tags: dict
    bands: tuple[str, ...] | None  # COG bands; None: no COG
    blocksize: int = 0
    compress: str = "deflate"
    overview_resampling: str = "nearest"

    def write(self, rows: pd.DataFrame, tile_row: int, tile_col: int) -> tuple[int, int]:
        """Write one tile's rows (already sorted by row, col); the Parquet and COG sizes in bytes (0: none)."""
        name = tile_name(self.grid, tile_row, tile_col)
        meta = {**self.tags, "tile_row": tile_row, "tile_col": tile_col}
        base = Path(self.base)
        pq_path = base / "parquet" / f"date={self.date}" / f"{name}.parquet"
        parquet_bytes = write_tile_parquet(arrow_table(rows, self.schema, meta), pq_path)
        cog_bytes = 0
        if self.bands:
            data = tile_arrays(rows, self.grid, tile_row, tile_col, self.bands)
            cog_bytes = write_tile_cog(
                base / "cog" / self.date / f"{name}.tif", data, self.grid, tile_row, tile_col, self.bands,
                {k: str(v) for k, v in meta.items()}, blocksize=self.blocksize, compress=self.compress,
                overview_resampling=self.overview_resampling)
        return parquet_bytes, cog_bytes


@dataclass(frozen=True)
class DateJob:
    """What an executor needs to produce a date's tiles (shipped in the task closure; small)."""

    date: str
    grid: Grid
    region: Region
    staging: str
    max_slope_deg: float | None
    tags: dict
    bands: tuple[str, ...] | None  # COG bands; None: no COG
    blocksize: int = 0
    compress: str = "deflate"
    overview_resampling: str = "nearest"
    climatology: Any = None  # ClimatologyStack: its clim_* columns are attached to the rows

    def tile_name(self, tile_row: int, tile_col: int) -> str:
        return tile_name(self.grid, tile_row, tile_col)

    @property
    def files(self) -> TileFiles:
        """The writer of the date's fine tiles."""
        return TileFiles(self.grid, self.staging, self.date, PRODUCT_FILE, self.tags, self.bands, self.blocksize,
                         self.compress, self.overview_resampling)


def read_clipped(f: "StackFile", job: DateJob, empty: list | None = None) -> tuple[pd.DataFrame, list]:
    """Read one stack file into pixel rows (masks, environment) and keep the region's cells.

    Returns the rows and the value-range rejections (``{"file", "band", "n", "range"}``); a file
    with no acquisition cell at all is recorded in ``empty`` (a list) when given.
    """
    from ssm_spark.sources.stacks import NO_ACQUISITION, read_file_cells

    rejected: list = []
    px = read_file_cells(f, job.grid, job.max_slope_deg, rejected=rejected)
    if len(px) == 0 and empty is not None:
        empty.append({"file": f.path, "reason": NO_ACQUISITION})
    keep = clip_mask(px, job.region)
    if not keep.all():
        px = px[keep].reset_index(drop=True)
    if job.climatology is not None:  # the cells' change-detection climatology (ClimatologyError if unreadable)
        px = job.climatology.attach(px)
    return px, rejected


def empty_rows() -> pd.DataFrame:
    """No product rows (the columns of :data:`~ssm_spark.product.schema.PRODUCT_FILE`)."""
    return empty_frame(PRODUCT_FILE)


def predict_rows(px: pd.DataFrame, registry: "Registry") -> pd.DataFrame:
    """Product rows (:data:`~ssm_spark.product.schema.PRODUCT_FILE`) of pixel rows: coupled physics
    with the registry's WCM parameters and the model selected for each environment
    (:meth:`Registry.predict`), QC bits of the masks and the physics. Masked cells keep their row,
    with NaN estimates and no model id."""
    if len(px) == 0:
        return empty_rows()
    pred = registry.predict(px, with_features=True)
    qc = pred["qc"].to_numpy().astype(np.int64).astype(np.int32)
    masked = (qc & MASK_BITS) != 0
    model_id = pred["model_id"].to_numpy(dtype=object).copy()
    model_id[masked] = None
    return pd.DataFrame({
        "grid": px["grid"].to_numpy(dtype=object), "tile_row": px["tile_row"].to_numpy("i4"),
        "tile_col": px["tile_col"].to_numpy("i4"), "row": px["row"].to_numpy("i4"), "col": px["col"].to_numpy("i4"),
        "lon": px["lon"].to_numpy("f8"), "lat": px["lat"].to_numpy("f8"),
        **{c: pred[c].to_numpy("f4") for c in ESTIMATES}, "env": pred["env"].to_numpy(dtype=object),
        "model_id": model_id, "qc": qc,
    })


def write_tile(rows: pd.DataFrame, tile_row: int, tile_col: int, job: DateJob) -> dict:
    """Write one tile's product rows (Parquet, and the COG when asked) into the staging folder.

    Rows are sorted by (row, col) first, so the bytes do not depend on how Spark split the work.

    Returns
    -------
    dict
        The tile's summary (:data:`~ssm_spark.product.schema.TILE_SUMMARY` fields).
    """
    tile_row, tile_col = int(tile_row), int(tile_col)
    rows = rows.sort_values(["row", "col"], kind="mergesort").reset_index(drop=True)
    n = len(rows)
    ssm = rows["ssm"].to_numpy("f8") if n else np.zeros(0)
    ok = np.isfinite(ssm)
    qc = rows["qc"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    masked = int(((qc & MASK_BITS) != 0).sum())
    wild = int((((qc & _OUT_OF_RANGE) != 0) & ((qc & MASK_BITS) == 0)).sum())
    summary = {"tile_row": tile_row, "tile_col": tile_col, "pixels": n, "retrieved": int(ok.sum()), "masked": masked,
               "out_of_range": wild, "ssm_sum": float(ssm[ok].sum()) if ok.any() else 0.0,
               "ssm_min": float(ssm[ok].min()) if ok.any() else None,
               "ssm_max": float(ssm[ok].max()) if ok.any() else None,
               "parquet_bytes": 0, "cog_bytes": 0, "rejected": None, "error": None, "empty": None}
    if n == 0:
        return summary
    summary["parquet_bytes"], summary["cog_bytes"] = job.files.write(rows, tile_row, tile_col)
    return summary
