"""A tile of the product on the executors: read and clip its stack file, predict, write its files.

No Spark here (the Spark tasks that call these are in :mod:`ssm_spark.product.tasks`), so the same
functions serve tests, benchmarks and ``ssm-spark point``. Two forms of the same steps:

- the product's per-tile path, on column arrays (numpy, no pandas frame between the stack file
  and the Parquet file): :func:`read_tile_columns` (a stack file -> the region's pixel rows, with
  the cells' change-detection climatology when the run has one) -> :func:`predict_tile`
  (:meth:`Registry.predict_columns`: coupled physics with the registry's WCM parameters + the
  model selected for each environment) -> :func:`write_tile` (one Arrow table straight from the
  arrays, :func:`~ssm_spark.product.schema.columns_table`);
- the same on pandas frames, for ``ssm-spark point`` and the regrouped (shuffled) Spark path:
  :func:`read_clipped` -> :func:`predict_rows` (:meth:`Registry.predict`) -> :func:`write_tile`.

Both give the same rows and the same bytes (tests/test_produce.py compares them). What the column
path saves, per 256 x 256 tile (benchmarks/bench_produce.py, docs/performance.md): the frame copies
and block consolidations of the physics, the per-row environment strings hashed again by every
lookup (an :class:`~ssm_spark.physics.wcm_params.EnvKeys` is factorized once, from the distinct
land-cover/climate pairs), the object arrays of the string columns (Arrow decodes them from their
few distinct values), and the sort when the rows are already in (row, col) order (a stack file's
rows are).

:class:`TileFiles` is the one writer of a grid's tile files (Parquet + COG), for the fine product
(:func:`write_tile`) and each coarse grid (:func:`ssm_spark.product.aggregate.write_coarse_tile`).
Rows are written in (row, col) order (sorted first unless they already are), so the bytes do not
depend on how Spark split the work; every file goes through a temporary name and a rename (a
retried task rewrites it whole). When its base is an object-store URL (the run's staging prefix of
a product on a store, :mod:`ssm_spark.product.remote`), the files are written into a task-local
temporary folder and PUT by the executor itself under the same relative keys (:func:`put_files`):
one PUT is atomic per object, and a retried or speculative task PUTs the same bytes to the same key.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ssm_spark import storage
from ssm_spark.environments import MASK_BITS
from ssm_spark.grid import Grid
from ssm_spark.io import atomic_path
from ssm_spark.physics.qc import QC
from ssm_spark.product.cog import tile_arrays, write_tile_cog
from ssm_spark.product.region import Region, clip_mask
from ssm_spark.product.schema import ESTIMATES, PRODUCT_FILE, arrow_table, columns_table, empty_frame, plain_columns

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.errors import InputIOError
    from ssm_spark.models.registry import Registry
    from ssm_spark.sources.stacks import StackFile

__all__ = ["tile_name", "staged_path", "put_files", "store_error_of", "write_tile_parquet", "TileFiles", "DateJob", "read_clipped",
           "read_tile_columns", "empty_rows", "predict_rows", "predict_tile", "write_tile", "PARQUET_ZSTD_LEVEL"]

_OUT_OF_RANGE = int(QC.PREDICTION_OUT_OF_RANGE)


def tile_name(grid: Grid, tile_row: int, tile_col: int) -> str:
    """A tile's file stem: ``<grid>_<tile_row>_<tile_col>``."""
    return f"{grid.name}_{tile_row}_{tile_col}"


def staged_path(base: str, *parts: str) -> str:
    """``base/part/...`` of a local folder or of an object-store URL (a key prefix: joined with ``/``)."""
    if storage.is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def put_files(folder: Path, url: str, rels: Iterable[str]) -> None:
    """PUT files of a local folder under ``url``, each at its relative key (one PUT per object).

    For the executors: the filesystem is :func:`ssm_spark.storage.filesystem`'s, its credentials
    the executor's own environment (never in a task's closure); one instance per Python worker
    (:func:`~ssm_spark.storage.shared_filesystems`), not one per tile (a fresh client costs ~0.3 s).

    Raises
    ------
    InputIOError
        The object that could not be written, with the likely cause (the executors' credentials,
        endpoint, bucket).
    """
    with storage.shared_filesystems():
        fs = storage.filesystem(url)
    root = storage.fs_path(url)
    for rel in rels:
        try:
            fs.put_file(str(folder / rel), f"{root}/{rel}")
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
            raise storage.io_error(f"{url.rstrip('/')}/{rel}", "write it from an executor (the store's settings and "
                                   "credentials must be in the executors' environment)", exc) from exc


_STORE_ERROR = re.compile(r"ssm_spark\.errors\.InputIOError: (.+)")


def store_error_of(exc: BaseException) -> "InputIOError | None":
    """The store error an executor raised (:func:`put_files`, a staged tile's read), found in a failed Spark
    job's error, as the driver's own :class:`~ssm_spark.errors.InputIOError` (the CLI's exit 2 and message
    instead of the job's stack traces); None for any other failure."""
    from ssm_spark.errors import InputIOError

    found = _STORE_ERROR.findall(str(exc))
    return InputIOError(found[-1].strip()) if found else None


def write_tile_parquet(table: pa.Table, path: Path) -> int:
    """One tile's table as a zstd Parquet file (temporary name, then rename); its size in bytes.

    ``table``: :func:`~ssm_spark.product.schema.arrow_table`'s or
    :func:`~ssm_spark.product.schema.columns_table`'s (either form of its string columns, plain or
    ``dictionary=True``: the same bytes). The string columns are written from a dictionary array
    (a plain one is encoded first), so the writer does not hash every row's string; the file's
    schema is the declared one (strings, read back as strings) with the table's key-value metadata.
    :func:`~ssm_spark.product.schema.plain_columns` (the float32 estimates, the cell centres, row and
    col: nearly all distinct in a tile, or repeating in a way zstd finds) are written without a
    dictionary: a tile's estimates pack into ~3.3 bytes each plain against ~5.2 through one. The
    other columns (strings, tile, qc) keep it. zstd at :data:`PARQUET_ZSTD_LEVEL`, with statistics.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    plain = plain_columns(table.schema)
    for i, f in enumerate(table.schema):
        if pa.types.is_string(f.type):
            table = table.set_column(i, f.name, pc.dictionary_encode(table.column(i)))
    with atomic_path(path) as tmp:
        # store_schema=False: Arrow's own copy of the schema would say dictionary<string> and turn the
        # strings into dictionaries (pandas categoricals) for pyarrow readers; the Parquet schema alone
        # reads back as the declared types, and the metadata is added as the file's key-value pairs.
        with pq.ParquetWriter(tmp, table.schema, compression="zstd", compression_level=PARQUET_ZSTD_LEVEL,
                              write_statistics=True, use_dictionary=[c for c in table.column_names if c not in plain],
                              store_schema=False) as writer:
            writer.write_table(table)
            if table.schema.metadata:
                writer.add_key_value_metadata(table.schema.metadata)
    return path.stat().st_size


#: zstd level of the Parquet files: 3 (zstd's own default) packs the demo product into 8.38 bytes per
#: cell against 9.1 at pyarrow's level 1 (8.57 at 2), for ~6 CPU-ms more per 256 x 256 tile than
#: level 1 (~3.5 more than 2; docs/outputs.md, docs/performance.md).
PARQUET_ZSTD_LEVEL = 3


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

    def write(self, rows: "pd.DataFrame | Mapping[str, Any]", tile_row: int, tile_col: int) -> dict[str, int]:
        """Write one tile's rows (already sorted by row, col: a frame, or column arrays as
        :func:`~ssm_spark.product.schema.columns_table` takes them); returns the files written, each
        key relative to ``base`` with its size in bytes (the Parquet file first, then the COG).

        ``base`` an object-store URL: written into a temporary folder of the task (removed after),
        then PUT under ``base`` (:func:`put_files`).
        """
        name = tile_name(self.grid, tile_row, tile_col)
        rels = [f"parquet/date={self.date}/{name}.parquet"] + ([f"cog/{self.date}/{name}.tif"] if self.bands else [])
        if not storage.is_remote(self.base):
            return self._write_into(Path(self.base), rels, rows, tile_row, tile_col)
        tmp = Path(tempfile.mkdtemp(prefix="ssm-tile-"))
        try:
            for rel in rels:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            sizes = self._write_into(tmp, rels, rows, tile_row, tile_col)
            put_files(tmp, self.base, rels)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sizes

    def _write_into(self, base: Path, rels: list[str], rows: "pd.DataFrame | Mapping[str, Any]", tile_row: int,
                    tile_col: int) -> dict[str, int]:
        meta = {**self.tags, "tile_row": tile_row, "tile_col": tile_col}
        table = (arrow_table(rows, self.schema, meta) if isinstance(rows, pd.DataFrame)
                 else columns_table(rows, self.schema, meta, dictionary=True))
        sizes = {rels[0]: write_tile_parquet(table, base / rels[0])}
        if self.bands:
            data = tile_arrays(rows, self.grid, tile_row, tile_col, self.bands)
            sizes[rels[1]] = write_tile_cog(
                base / rels[1], data, self.grid, tile_row, tile_col, self.bands,
                {k: str(v) for k, v in meta.items()}, blocksize=self.blocksize, compress=self.compress,
                overview_resampling=self.overview_resampling)
        return sizes


@dataclass(frozen=True)
class DateJob:
    """What an executor needs to produce a date's tiles (shipped in the task closure; small)."""

    date: str
    grid: Grid
    region: Region
    staging: str  # where the tiles go: the date's staging folder, or its staging prefix on a store (a URL)
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


def read_tile_columns(f: "StackFile", job: DateJob, empty: list | None = None) -> tuple[dict[str, Any], list]:
    """:func:`read_clipped` as column arrays (:func:`~ssm_spark.sources.stacks.read_file_columns`:
    the same rows and values, ``env`` as an :class:`~ssm_spark.physics.wcm_params.EnvKeys`, ``grid``
    the grid's name) for :func:`predict_tile`."""
    from ssm_spark.sources.stacks import NO_ACQUISITION, read_file_columns

    rejected: list = []
    px = read_file_columns(f, job.grid, job.max_slope_deg, rejected=rejected)
    n = len(px["row"])
    if n == 0 and empty is not None:
        empty.append({"file": f.path, "reason": NO_ACQUISITION})
    if n and not _inside_full_tiles(f, job):  # a cell test only where the file reaches past the full tiles
        keep = clip_mask(pd.DataFrame({k: px[k] for k in ("tile_row", "tile_col", "row", "col", "lon", "lat")}),
                         job.region)
        if not keep.all():
            idx = np.flatnonzero(keep)
            px = {k: (v.take(idx) if hasattr(v, "uniques") else v[idx]) for k, v in px.items()}
    if job.climatology is not None:  # the cells' change-detection climatology (ClimatologyError if unreadable)
        px.update(job.climatology.values(px["tile_row"], px["tile_col"], px["row"], px["col"]))
    px["grid"] = job.grid.name
    return px, rejected


def _inside_full_tiles(f: "StackFile", job: DateJob) -> bool:
    """True when every grid tile the file touches is wholly inside the region (no cell to clip)."""
    ts = job.grid.tile_size
    full = job.region.full_tiles
    return all((tr, tc) in full for tr in range(f.row_off // ts, (f.row_off + f.height - 1) // ts + 1)
               for tc in range(f.col_off // ts, (f.col_off + f.width - 1) // ts + 1))


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


def predict_tile(px: Mapping[str, Any], registry: "Registry") -> dict[str, Any]:
    """:func:`predict_rows` of column arrays (:func:`read_tile_columns`): the product rows as the
    columns of :data:`~ssm_spark.product.schema.PRODUCT_FILE` (what
    :func:`~ssm_spark.product.schema.columns_table` takes: ``grid`` a str, ``env`` and ``model_id``
    as codes into their distinct values, no model id where masked), the same values."""
    from ssm_spark.physics.wcm_params import EnvKeys

    n = len(px["row"])
    if n == 0:
        return {f.name: px.get(f.name, np.zeros(0, f.type.to_pandas_dtype())) if f.type != pa.string()
                else EnvKeys(np.zeros(0, np.intp), []) for f in PRODUCT_FILE}
    res = registry.predict_columns(px)
    qc = res["qc"].astype(np.int64).astype(np.int32)
    masked = (qc & MASK_BITS) != 0
    return {"grid": px["grid"], **{k: np.asarray(px[k], dtype="i4") for k in ("tile_row", "tile_col", "row", "col")},
            "lon": np.asarray(px["lon"], dtype="f8"), "lat": np.asarray(px["lat"], dtype="f8"),
            **{c: res[c].astype("f4") for c in ESTIMATES}, "env": res["env"],
            "model_id": EnvKeys(np.where(masked, -1, res["unit"]), res["model_ids"]), "qc": qc}


def write_tile(rows: "pd.DataFrame | Mapping[str, Any]", tile_row: int, tile_col: int, job: DateJob) -> dict:
    """Write one tile's product rows (Parquet, and the COG when asked) into the staging folder (or prefix).

    ``rows``: a frame (:func:`predict_rows`) or column arrays (:func:`predict_tile`). Rows are put
    in (row, col) order first (a stable sort, skipped when they already are), so the bytes do not
    depend on how Spark split the work.

    Returns
    -------
    dict
        The tile's summary (:data:`~ssm_spark.product.schema.TILE_SUMMARY` fields; ``files``: the
        keys written, relative to the staging, and their sizes, as JSON).
    """
    tile_row, tile_col = int(tile_row), int(tile_col)
    if isinstance(rows, pd.DataFrame):
        rows = rows.sort_values(["row", "col"], kind="mergesort").reset_index(drop=True)
        n = len(rows)
        ssm = rows["ssm"].to_numpy("f8") if n else np.zeros(0)
        qc = rows["qc"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    else:
        rows = _in_cell_order(rows)
        n = len(rows["row"])
        ssm = np.asarray(rows["ssm"], dtype="f8")
        qc = np.asarray(rows["qc"], dtype=np.int64)
    ok = np.isfinite(ssm)
    masked = int(((qc & MASK_BITS) != 0).sum())
    wild = int((((qc & _OUT_OF_RANGE) != 0) & ((qc & MASK_BITS) == 0)).sum())
    summary = {"tile_row": tile_row, "tile_col": tile_col, "pixels": n, "retrieved": int(ok.sum()), "masked": masked,
               "out_of_range": wild, "ssm_sum": float(ssm[ok].sum()) if ok.any() else 0.0,
               "ssm_min": float(ssm[ok].min()) if ok.any() else None,
               "ssm_max": float(ssm[ok].max()) if ok.any() else None,
               "parquet_bytes": 0, "cog_bytes": 0, "rejected": None, "error": None, "empty": None, "files": None}
    if n == 0:
        return summary
    files = job.files.write(rows, tile_row, tile_col)
    sizes = list(files.values())
    summary["parquet_bytes"], summary["cog_bytes"] = sizes[0], sizes[1] if len(sizes) > 1 else 0
    summary["files"] = json.dumps(files)
    return summary


def _in_cell_order(cols: Mapping[str, Any]) -> Mapping[str, Any]:
    """Column arrays in (row, col) order: as they are when they already are (a stack file's rows),
    else taken in the order of a stable sort (the order ``sort_values(kind="mergesort")`` gives)."""
    r = np.asarray(cols["row"], dtype=np.int64)
    c = np.asarray(cols["col"], dtype=np.int64)
    if len(r) < 2:
        return cols
    key = r * (int(c.max()) + 1) + c
    if np.all(key[1:] > key[:-1]):
        return cols
    order = np.lexsort((c, r))
    return {k: v if isinstance(v, str) else (v.take(order) if hasattr(v, "uniques") else np.asarray(v)[order])
            for k, v in cols.items()}
