"""``ssm-spark produce``: a regional SSM product from feature stacks and a model registry, on Spark.

Per date (one Spark job per date, so memory is bounded by a date and a tile, never by the run)::

    stack files of the date touching the region's tiles
      -> Spark tasks over the files (mapInPandas; neighbouring files share a task, at most 4 tasks
         per core): read a file (rasterio) -> masks and environment -> clip to the region ->
         coupled physics with the registry's WCM parameters + the model selected for each
         environment (Registry.predict, Boosters built once per Python worker from the manifest +
         UBJ bytes broadcast once per run, nthread = the task's cores) -> product rows
      -> per tile (same task when stack files are grid tiles; else regrouped by tile, applyInPandas):
         Parquet file + Cloud-Optimized GeoTIFF, written by the executor into a staging folder
      -> driver: VRT mosaic, quicklook PNG (decimated read of the VRT)
      -> with ``produce.aggregate``: the staged tile Parquet files aggregated onto each coarser nested
         grid (Spark: one task per coarse tile reads the fine tiles under it and writes the coarse
         tile; :mod:`ssm_spark.product.aggregate`), a VRT per coarse grid on the driver
      -> the commit

Only small per-tile summaries come back to the driver; pixels never do. The physics runs inside
:meth:`Registry.predict` (``add_physics``: the same ``coupled_features`` kernel that
:func:`ssm_spark.transforms.add_coupled_features` wraps, with the manifest's WCM parameters), so it
is computed once per pixel, in the task that reads the pixel, with no extra pass through the JVM.

Output layout (``OUTPUT/``)::

    parquet/date=YYYY-MM-DD/<grid>_<tile_row>_<tile_col>.parquet   product rows, zstd, sorted by row, col
    parquet/date=YYYY-MM-DD/_SUCCESS.json                          the date's commit marker (below)
    cog/YYYY-MM-DD/<grid>_<tile_row>_<tile_col>.tif                tile COGs (float32: ssm, qc; NaN nodata)
    vrt/YYYY-MM-DD.vrt                                             mosaic of the date's COGs
    quicklook/YYYY-MM-DD.png                                       SSM, colour bar, region outline
    agg/<cgrid>/parquet/date=YYYY-MM-DD/<cgrid>_<tr>_<tc>.parquet  with produce.aggregate: coarse cells
    agg/<cgrid>/cog/YYYY-MM-DD/<cgrid>_<tr>_<tc>.tif               coarse tile COGs (cog_bands + frac_valid)
    agg/<cgrid>/vrt/YYYY-MM-DD.vrt                                 mosaic of the coarse COGs
    agg/<cgrid>/quicklook/YYYY-MM-DD.png                           its quicklook (with produce.quicklook)
    product.json                                                   grid, region, manifest, hashes, dates

``<cgrid>`` is each grid of ``produce.aggregate`` (e.g. ``ease2_9km``), tiled with the product's
``tile_size`` in its own cells. ``spark.read.parquet("OUTPUT/agg/ease2_9km/parquet")`` gives
``grid, tile_row, tile_col, row, col, lon, lat, date, ssm, ssm_p05, ssm_p95, n_cells, n_valid,
frac_valid, env, qc`` per coarse cell: block means of the fine cells with a retrieval (the exact
means of :meth:`ssm_spark.grid.Grid.aggregate`; null below ``produce.aggregate_min_fraction`` of the
cell), OR of the fine QC bits, the dominant environment (definitions in
:mod:`ssm_spark.product.aggregate`). No quicklook is drawn for the coarse grids.

The Parquet dataset reads back with ``spark.read.parquet("OUTPUT/parquet")`` (``date`` is the
partition column) in the product contract: ``grid, tile_row, tile_col, row, col, lon, lat, date,
ssm, ssm_p05, ssm_p95, env, model_id, qc``. Rows are the cells of the region with an acquisition
that date; masked cells (water, built-up, snow/ice, frozen, steep) are kept with a null ``ssm``,
their ``qc`` bits saying why, and a null ``model_id``.

Provenance: the registry's manifest id, the configuration hash (``Config.hash()``) and the product
hash are in the GeoTIFF tags, the Parquet key-value metadata (key ``ssm_spark``), the VRT metadata,
the PNG title and text chunks, and the marker; the aggregated files carry the same three, plus the
fine grid, the nest factor and the minimum of valid fine cells.

Commit and resume: a date is computed into ``OUTPUT/_staging/<date>.<random>/`` and then moved into
place component by component (the old marker removed first, the new one written last), so a date
is complete exactly when its marker exists. The aggregated outputs are components of the date like
the others: the marker lists their files, and a date whose aggregated grids changed is recomputed
(the setting is in the product hash) with the outputs of grids no longer configured removed. A
re-run skips a date whose marker has the same manifest id and product hash, the same input files
(names, sizes, modification times) and whose outputs are all present; any other date is recomputed and replaces the old one (a run that only skips
changes no file). A date's leftover staging folder (an interrupted run) is removed when the date is
next produced or found complete; a date computed but not committed when a run fails is removed by
that run.

Dates in flight (``produce.dates_in_flight``, default 2): up to that many dates' Spark jobs run at
once (Spark's FIFO scheduler gives the older date's tasks the cores first, so the next date only
fills cores the older one leaves idle at its end), and the driver finishes a date (VRT, quicklook,
aggregates, commit) in a finisher thread while the executors compute; one date finishes at a time,
in date order. On an error the run lets the running jobs end, removes the staging of dates computed
but not committed, and raises. ``1``: one date after the other, nothing overlapped. Files hold no timestamps and rows are sorted, so an interrupted run resumed gives
the same bytes as an uninterrupted one.

The product hash covers what decides the product's bytes: the package version, the ``grid``,
``ingest`` and ``produce`` sections (except ``nthread``, ``tile_grouping``, ``dates_in_flight`` and
``regions``; the
``aggregate*`` keys only when aggregation is on, so products made without it keep their hash) and
the resolved region, and with change detection the digest of the climatology stack the rows get
(:mod:`ssm_spark.product.climatology`: built or reused under ``produce.climatology_dir``, default
``OUTPUT/climatology/``, before the first date; a changed climatology recomputes every date). The full configuration hash is recorded beside it but does not force a recompute
(changing ``spark.master`` does not change the product).

Region clipping: the region's tiles come from :meth:`Grid.tiles_for_geometry` on the driver; on the
executors, cells of tiles the region only partly covers are kept when their centre (lon/lat)
intersects the region, with shapely's vectorised ``intersects_xy`` on a prepared geometry (GEOS,
the engine behind JTS/Sedona's ``ST_Intersects``): the rows are already in the Python task that
reads and predicts them, so the test costs no round trip through the JVM; tiles wholly inside the
region are not tested cell by cell.

Bad input is refused or recorded, never silent: the output folder is locked for the run
(``OUTPUT/_LOCK.json``; a second run is refused naming the holder; a killed run's lock is taken over once
its pid is gone or it was not refreshed for two minutes); a registry trained on other inputs is refused
before any Spark work (:meth:`Registry.check_inputs`); estimates outside the physical range are masked
with ``QC.PREDICTION_OUT_OF_RANGE`` and counted, and a tile where they are more than
:data:`MAX_OUT_OF_RANGE_FRACTION` of the unmasked cells fails the date (a broken model: nothing of the
date is committed); a date where a file could not be read is committed with ``"status": "incomplete"``
and recomputed by the next run (the error may be transient). The marker and the run summary keep the
ledger: files in = read + without acquisition + read failed + quarantined, pixels = retrieved + masked +
out of range + no estimate.

The output folder must be a filesystem the driver and the executors share (local mode, NFS, a
mounted bucket): executors write files there and the driver renames them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

import ssm_spark
from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import ConfigError, InputError
from ssm_spark.grid import Grid
from ssm_spark.physics.qc import QC
from ssm_spark.product.aggregate import AGG_COLUMNS, resolve_targets
from ssm_spark.product.aggregate import components as agg_components

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config
    from ssm_spark.models.registry import Registry
    from ssm_spark.sources.stacks import StackFile

log = logging.getLogger(__name__)

__all__ = ["PRODUCT_COLUMNS", "Region", "resolve_region", "produce", "product_hash", "read_clipped",
           "predict_rows", "write_tile", "add_arguments", "run"]

#: The product contract (DESIGN.md "Tables": product), in order.
PRODUCT_COLUMNS = ("grid", "tile_row", "tile_col", "row", "col", "lon", "lat", "date", "ssm", "ssm_p05", "ssm_p95",
                   "env", "model_id", "qc")
#: Columns inside the Parquet files (``date`` is the partition folder).
FILE_COLUMNS = tuple(c for c in PRODUCT_COLUMNS if c != "date")
_ROWS_DDL = ("grid string, tile_row int, tile_col int, row int, col int, lon double, lat double, ssm double, "
             "ssm_p05 double, ssm_p95 double, env string, model_id string, qc int")
_SUMMARY_DDL = ("tile_row int, tile_col int, pixels long, retrieved long, masked long, out_of_range long, "
                "ssm_sum double, ssm_min double, ssm_max double, parquet_bytes long, cog_bytes long, rejected string, "
                "error string, empty string")
#: A tile with more than this fraction of its unmasked cells out of the physical range fails the run
#: (a broken or misapplied model, not a few odd cells); below it they are masked and counted.
MAX_OUT_OF_RANGE_FRACTION = 0.2
_OUT_OF_RANGE = int(QC.PREDICTION_OUT_OF_RANGE)
MARKER = "_SUCCESS.json"
STAGING = "_staging"
_QC_LEGEND = ", ".join(f"{int(q)} {q.name}" for q in QC)


# ------------------------------------------------------------------------------------------ regions


@dataclass(frozen=True)
class Region:
    """The cells a product covers: tiles of the grid, then a geometry (lon/lat) or a cell window.

    ``geometry_wkb`` (a polygon or multipolygon in lon/lat) or ``window`` (``row_off, col_off,
    height, width`` in global cells) decides which cells of the tiles are kept; ``full_tiles`` are
    the tiles wholly inside it (kept without a per-cell test).
    """

    name: str
    kind: str  # "bbox" | "geojson" | "config"
    source: str
    tiles: tuple[tuple[int, int], ...]
    full_tiles: frozenset = field(default_factory=frozenset)
    geometry_wkb: bytes | None = None
    window: tuple[int, int, int, int] | None = None

    @property
    def geometry(self):
        """The region as a shapely geometry in lon/lat (None for a window region)."""
        import shapely

        return None if self.geometry_wkb is None else shapely.from_wkb(self.geometry_wkb)

    def key(self) -> str:
        """What identifies the region's cells (enters the product hash)."""
        if self.geometry_wkb is not None:
            return "wkb:" + hashlib.sha256(self.geometry_wkb).hexdigest()
        return f"window:{list(self.window)}"

    def describe(self, grid: Grid) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "source": self.source, "tiles": len(self.tiles),
                               "tiles_partly_covered": len(self.tiles) - len(self.full_tiles)}
        if self.geometry_wkb is not None:
            out["bounds_lonlat"] = [round(float(v), 6) for v in self.geometry.bounds]
        else:
            r0, c0, h, w = self.window
            out["window"] = {"row_off": r0, "col_off": c0, "height": h, "width": w}
        return out

    def outline_xy(self, grid: Grid) -> list[np.ndarray]:
        """Outline rings in the grid's CRS (for the quicklooks)."""
        if self.window is not None:
            r0, c0, h, w = self.window
            x0, y0 = grid.x0 + c0 * grid.cell, grid.y0 - r0 * grid.cell
            x1, y1 = x0 + w * grid.cell, y0 - h * grid.cell
            return [np.array([[x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]])]
        rings = []
        g = self.geometry
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                lon, lat = np.asarray(ring.segmentize(0.05).coords).T
                x, y = grid.to_xy(lon, lat)
                rings.append(np.vstack([x, y]))
        return rings


def _parse_bbox(spec: str) -> tuple[float, float, float, float] | None:
    parts = spec.split(",")
    if len(parts) != 4:
        return None
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        return None
    return vals  # type: ignore[return-value]


def _check_bbox(b: Sequence[float], where: str) -> tuple[float, float, float, float]:
    lon0, lat0, lon1, lat1 = (float(v) for v in b)
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise InputError(f"{where}: bbox must be lon_min,lat_min,lon_max,lat_max in degrees with min < max, "
                         f"got {list(b)}")
    return lon0, lat0, lon1, lat1


def _read_geojson(path: Path):
    import shapely
    from shapely.geometry import shape

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the region as GeoJSON ({exc})") from exc
    crs = (data.get("crs") or {}).get("properties", {}).get("name", "") if isinstance(data, dict) else ""
    if crs and not any(k in crs.upper() for k in ("CRS84", "4326")):
        raise InputError(f"{path}: GeoJSON CRS {crs!r}; regions must be in lon/lat (WGS84, RFC 7946)")
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features", [])]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    polys = []
    for g in geoms:
        if not g:
            continue
        try:
            s = shape(g)
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise InputError(f"{path}: not a GeoJSON geometry ({exc})") from exc
        if s.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: region geometries must be Polygon or MultiPolygon, found {s.geom_type}")
        polys.append(s if s.is_valid else shapely.make_valid(s))
    if not polys:
        raise InputError(f"{path}: no polygon in the GeoJSON")
    geom = shapely.union_all(polys)
    if geom.is_empty or geom.area == 0:
        raise InputError(f"{path}: the region's polygons are empty")
    if geom.geom_type == "GeometryCollection":  # make_valid can add stray lines: keep the areas
        geom = shapely.union_all([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    lon0, lat0, lon1, lat1 = geom.bounds
    if lon0 < -180 or lon1 > 180 or lat0 < -90 or lat1 > 90:
        raise InputError(f"{path}: coordinates beyond lon/lat limits {geom.bounds}: is the file in lon/lat (WGS84)?")
    return geom


def _geometry_region(name: str, kind: str, source: str, geom, grid: Grid) -> Region:
    import shapely

    geom = shapely.normalize(geom)
    tiles = tuple(sorted(grid.tiles_for_geometry(geom)))
    if not tiles:
        raise InputError(f"region {name!r} ({source}) covers no tile of grid {grid.name}")
    shapely.prepare(geom)
    full = frozenset(t for t in tiles if geom.contains(grid.tile_polygon(*t)))
    return Region(name, kind, source, tiles, full, shapely.to_wkb(geom), None)


def resolve_region(spec: str | None, cfg: "Config", grid: Grid) -> Region:
    """The region of a product run.

    Parameters
    ----------
    spec : str or None
        ``"lon_min,lat_min,lon_max,lat_max"``; a GeoJSON file (Polygon/MultiPolygon, Feature or
        FeatureCollection, lon/lat); a name in ``produce.regions`` (a bbox or a GeoJSON path); the
        name of the configured ``region`` section (its window, or its bbox); None: the configured
        region.
    cfg : Config
    grid : Grid

    Returns
    -------
    Region

    Raises
    ------
    InputError
        If ``spec`` is none of the above, or the geometry is unreadable, not a polygon or outside
        the grid.
    """
    from shapely.geometry import box

    from ssm_spark.errors import GridError

    try:
        if spec is None or spec == cfg.region.name:
            r = cfg.region
            if r.bbox is not None:
                return _geometry_region(r.name, "config", "region.bbox", box(*r.bbox), grid)
            w = r.window(grid)
            win = (int(w.row_off), int(w.col_off), int(w.height), int(w.width))
            tiles = tuple(sorted(grid.tiles_for_window(w)))
            full = frozenset(t for t in tiles if _window_contains(win, grid.tile_window(*t)))
            return Region(r.name, "config", "region (center + size_km)", tiles, full, None, win)
        bbox = _parse_bbox(spec)
        if bbox is not None:
            return _geometry_region("bbox", "bbox", spec, box(*_check_bbox(bbox, "--region")), grid)
        if spec in cfg.produce.regions:
            named = cfg.produce.regions[spec]
            if isinstance(named, str):
                return _geometry_region(spec, "geojson", named, _read_geojson(Path(named)), grid)
            return _geometry_region(spec, "bbox", str(list(named)), box(*_check_bbox(named, f"produce.regions.{spec}")),
                                    grid)
        path = Path(spec)
        if path.is_file():
            return _geometry_region(path.stem, "geojson", str(path), _read_geojson(path), grid)
    except GridError as exc:
        raise InputError(f"region {spec!r}: {exc}") from exc
    known = sorted([cfg.region.name, *cfg.produce.regions])
    raise InputError(f"region {spec!r} is not a bbox 'lon_min,lat_min,lon_max,lat_max', an existing GeoJSON file, "
                     f"or a named region (known: {known}; add names under produce.regions)")


def _window_contains(win: tuple[int, int, int, int], w) -> bool:
    r0, c0, h, wd = win
    return r0 <= w.row_off and c0 <= w.col_off and w.row_off + w.height <= r0 + h and w.col_off + w.width <= c0 + wd


# ------------------------------------------------------------------- executor side (also no-Spark)

_GEOM_CACHE: dict[str, Any] = {}


def _prepared(region: Region):
    import shapely

    key = region.key()
    g = _GEOM_CACHE.get(key)
    if g is None:
        g = region.geometry
        shapely.prepare(g)
        _GEOM_CACHE[key] = g
    return g


def clip_mask(px: pd.DataFrame, region: Region) -> np.ndarray:
    """Rows of a pixel frame inside the region (tile list, then geometry or window per cell)."""
    import shapely

    n = len(px)
    if n == 0:
        return np.zeros(0, dtype=bool)
    tr = px["tile_row"].to_numpy(np.int64)
    tc = px["tile_col"].to_numpy(np.int64)
    code = tr * 10_000_000 + tc
    tiles = np.array([a * 10_000_000 + b for a, b in region.tiles], dtype=np.int64)
    full = np.array([a * 10_000_000 + b for a, b in region.full_tiles], dtype=np.int64)
    keep = np.isin(code, tiles)
    test = keep & ~np.isin(code, full)
    if test.any():
        if region.window is not None:
            r0, c0, h, w = region.window
            r = px["row"].to_numpy(np.int64)[test]
            c = px["col"].to_numpy(np.int64)[test]
            keep[test] = (r >= r0) & (r < r0 + h) & (c >= c0) & (c < c0 + w)
        else:
            lon, lat = px["lon"].to_numpy()[test], px["lat"].to_numpy()[test]
            keep[test] = shapely.intersects_xy(_prepared(region), lon, lat)
    return keep


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
        return f"{self.grid.name}_{tile_row}_{tile_col}"


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


def _empty_rows() -> pd.DataFrame:
    ints = ("tile_row", "tile_col", "row", "col", "qc")
    return pd.DataFrame({c: pd.Series([], dtype=object) if c in ("grid", "env", "model_id")
                         else np.zeros(0, "i4") if c in ints else np.zeros(0) for c in FILE_COLUMNS})


def predict_rows(px: pd.DataFrame, registry: "Registry") -> pd.DataFrame:
    """Product rows (:data:`FILE_COLUMNS`) of pixel rows: coupled physics with the registry's WCM
    parameters and the model selected for each environment (:meth:`Registry.predict`), QC bits of
    the masks and the physics. Masked cells keep their row, with NaN estimates and no model id."""
    if len(px) == 0:
        return _empty_rows()
    pred = registry.predict(px, with_features=True)
    qc = pred["qc"].to_numpy().astype(np.int64).astype(np.int32)
    masked = (qc & MASK_BITS) != 0
    model_id = pred["model_id"].to_numpy(dtype=object).copy()
    model_id[masked] = None
    return pd.DataFrame({
        "grid": px["grid"].to_numpy(dtype=object), "tile_row": px["tile_row"].to_numpy("i4"),
        "tile_col": px["tile_col"].to_numpy("i4"), "row": px["row"].to_numpy("i4"), "col": px["col"].to_numpy("i4"),
        "lon": px["lon"].to_numpy("f8"), "lat": px["lat"].to_numpy("f8"),
        "ssm": pred["ssm"].to_numpy("f8"), "ssm_p05": pred["ssm_p05"].to_numpy("f8"),
        "ssm_p95": pred["ssm_p95"].to_numpy("f8"), "env": pred["env"].to_numpy(dtype=object),
        "model_id": model_id, "qc": qc,
    })


def _arrow_table(rows: pd.DataFrame, metadata: dict):
    import pyarrow as pa

    types = {"grid": pa.string(), "tile_row": pa.int32(), "tile_col": pa.int32(), "row": pa.int32(), "col": pa.int32(),
             "lon": pa.float64(), "lat": pa.float64(), "ssm": pa.float64(), "ssm_p05": pa.float64(),
             "ssm_p95": pa.float64(), "env": pa.string(), "model_id": pa.string(), "qc": pa.int32()}
    schema = pa.schema([(c, types[c]) for c in FILE_COLUMNS]).with_metadata(
        {"ssm_spark": json.dumps(metadata, sort_keys=True)})
    arrays = []
    for c in FILE_COLUMNS:
        v = rows[c].to_numpy()
        # NaN estimates become nulls: Spark and SQL aggregates then skip them
        arrays.append(pa.array(v, type=types[c], from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_tile(rows: pd.DataFrame, tile_row: int, tile_col: int, job: DateJob) -> dict:
    """Write one tile's product rows (Parquet, and the COG when asked) into the staging folder.

    Rows are sorted by (row, col) first, so the bytes do not depend on how Spark split the work.
    Every file goes through a temporary name and a rename (a retried task rewrites it whole).

    Returns
    -------
    dict
        The tile's summary (:data:`_SUMMARY_DDL` fields).
    """
    from ssm_spark.product.cog import tile_arrays, write_tile_cog
    from ssm_spark.product.files import write_parquet_file

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
    name = job.tile_name(tile_row, tile_col)
    meta = {**job.tags, "tile_row": tile_row, "tile_col": tile_col}
    pq_path = Path(job.staging) / "parquet" / f"date={job.date}" / f"{name}.parquet"
    summary["parquet_bytes"] = write_parquet_file(_arrow_table(rows, meta), pq_path)
    if job.bands:
        data = tile_arrays(rows, job.grid, tile_row, tile_col, job.bands)
        summary["cog_bytes"] = write_tile_cog(
            Path(job.staging) / "cog" / job.date / f"{name}.tif", data, job.grid, tile_row, tile_col, job.bands,
            {k: str(v) for k, v in meta.items()}, blocksize=job.blocksize, compress=job.compress,
            overview_resampling=job.overview_resampling)
    return summary


_READ_ERRORS: tuple = ()


def _read_errors() -> tuple:
    global _READ_ERRORS
    if not _READ_ERRORS:
        import rasterio

        _READ_ERRORS = (rasterio.errors.RasterioError, OSError, ValueError)
    return _READ_ERRORS


def _worker_registry(bc, nthread: int) -> "Registry":
    """The Registry of this Python worker (built once from the broadcast), nthread = task cores."""
    from pyspark import TaskContext

    from ssm_spark.models.registry import cached_registry

    if not nthread:
        ctx = TaskContext.get()
        nthread = ctx.cpus() if ctx is not None else 1
    manifest, blobs = bc.value
    return cached_registry(manifest, blobs, nthread=nthread)


def _tile_of_file(f: "StackFile", grid: Grid) -> tuple[int, int] | None:
    ts = grid.tile_size
    tr0, tc0 = f.row_off // ts, f.col_off // ts
    if (f.row_off + f.height - 1) // ts != tr0 or (f.col_off + f.width - 1) // ts != tc0:
        return None
    return int(tr0), int(tc0)


def _fusable(files: Sequence["StackFile"], grid: Grid) -> bool:
    """True when every file lies inside one grid tile and no two files share a tile."""
    seen = set()
    for f in files:
        t = _tile_of_file(f, grid)
        if t is None or t in seen:
            return False
        seen.add(t)
    return True


def _file_ids(spark: "SparkSession", n: int):
    """File indices 0..n-1 as a DataFrame (``id``) in contiguous slices, at most 4 per core: the task
    list of a date (neighbouring tiles share a task; no Python stage to build it)."""
    parts = max(1, min(n, 4 * spark.sparkContext.defaultParallelism))
    return spark.range(0, n, 1, parts)


def _task_files(batches: Iterator[pd.DataFrame], bfiles) -> Iterator["StackFile"]:
    """The stack files a task's ``id`` batches name, from the date's broadcast file list."""
    files = bfiles.value
    for batch in batches:
        for i in batch["id"]:
            yield files[int(i)]


def _read_failure(f: "StackFile", exc: Exception) -> dict:
    from ssm_spark.sources.stacks import read_failure

    return read_failure(f.path, exc)  # GDAL's own cause included


def _run_fused(spark: "SparkSession", job: DateJob, n_files: int, bfiles, bc, nthread: int) -> list[dict]:
    """One task per stack file: read, clip, predict and write its tile; returns the tile summaries."""
    read_errors = _read_errors()
    grid = job.grid

    def _task(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        reg = _worker_registry(bc, nthread)
        for f in _task_files(batches, bfiles):
            tr, tc = _tile_of_file(f, grid)
            empty: list = []
            try:
                px, rejected = read_clipped(f, job, empty)
            except read_errors as exc:
                s = write_tile(_empty_rows(), tr, tc, job)
                s["error"] = json.dumps(_read_failure(f, exc))
                yield pd.DataFrame([s])
                continue
            s = write_tile(predict_rows(px, reg), tr, tc, job)
            s["rejected"] = json.dumps(rejected) if rejected else None
            s["empty"] = json.dumps(empty) if empty else None
            yield pd.DataFrame([s])

    return [r.asDict() for r in _file_ids(spark, n_files).mapInPandas(_task, _SUMMARY_DDL).collect()]


def _run_shuffled(spark: "SparkSession", job: DateJob, n_files: int, bfiles, bc, nthread: int,
                  chunk_rows: int = 200_000) -> list[dict]:
    """Files of any shape: read, clip and predict per file, regroup the rows by tile, write per tile."""
    read_errors = _read_errors()
    sc = spark.sparkContext
    from ssm_spark.sources.stacks import ListParam

    errors = sc.accumulator([], ListParam())
    rejections = sc.accumulator([], ListParam())
    empties = sc.accumulator([], ListParam())

    def _rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        reg = _worker_registry(bc, nthread)
        for f in _task_files(batches, bfiles):
            empty: list = []
            try:
                px, rejected = read_clipped(f, job, empty)
            except read_errors as exc:
                errors.add([_read_failure(f, exc)])
                continue
            if rejected:
                rejections.add(rejected)
            if empty:
                empties.add(empty)
            for s in range(0, len(px), chunk_rows):
                yield predict_rows(px.iloc[s:s + chunk_rows], reg)

    def _write(key, pdf: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([write_tile(pdf, int(key[0]), int(key[1]), job)])

    rows = _file_ids(spark, n_files).mapInPandas(_rows, _ROWS_DDL)
    out = [r.asDict() for r in rows.groupBy("tile_row", "tile_col").applyInPandas(_write, _SUMMARY_DDL).collect()]
    seen = set()
    blank = {"tile_row": None, "tile_col": None, "pixels": 0, "retrieved": 0, "masked": 0, "out_of_range": 0,
             "ssm_sum": 0.0, "ssm_min": None, "ssm_max": None, "parquet_bytes": 0, "cog_bytes": 0, "rejected": None,
             "error": None, "empty": None}
    for e in errors.value:
        if e["file"] not in seen:  # a retried task reports twice
            seen.add(e["file"])
            out.append({**blank, "error": json.dumps(e)})
    if rejections.value:
        dedup = {(r["file"], r["band"]): r for r in rejections.value}
        out.append({**blank, "rejected": json.dumps([dedup[k] for k in sorted(dedup)])})
    if empties.value:
        dedup = {e["file"]: e for e in empties.value}
        out.append({**blank, "empty": json.dumps([dedup[k] for k in sorted(dedup)])})
    return out


# ------------------------------------------------------------------------------------- driver side


def product_hash(cfg: "Config", region: Region, manifest_id: str, climatology: str | None = None) -> str:
    """16-hex-digit hash of what decides a product's bytes (see the module docstring); ``climatology``:
    the digest of the change-detection climatology stack the rows get (None: none)."""
    blob = {"package": ssm_spark.__version__, "grid": cfg.grid.model_dump(mode="json"),
            "ingest": cfg.ingest.model_dump(mode="json"),
            "produce": cfg.produce.model_dump(mode="json", exclude={"nthread", "tile_grouping", "regions",
                                                                      "dates_in_flight", "climatology_dir"}),
            "region": region.key(), "manifest_id": manifest_id}
    if climatology is not None:
        blob["climatology"] = climatology
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _parse_date(value: Any, what: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"--{what} {value!r}: expected a date YYYY-MM-DD") from exc


def _inputs(files: Sequence["StackFile"], stacks: Path, quarantined: Sequence[dict] = ()) -> list[dict]:
    """Names, sizes and modification times of a date's inputs (quarantined files included, so that
    replacing a bad file makes the date recompute)."""
    paths = {q["file"] for q in quarantined if os.path.exists(q["file"])}
    for f in files:
        paths.update(p for p in (f.path, f.static_path, f.classes_path) if p)
    out = []
    for p in sorted(paths):
        st = os.stat(p)
        try:
            rel = os.path.relpath(p, stacks.parent)
        except ValueError:
            rel = p
        out.append({"file": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _components(date: str, aggregates: Sequence[str] = ()) -> list[Path]:
    """A date's outputs (folders and files, relative to the product folder), the Parquet partition
    first; ``aggregates``: the target grid names of ``produce.aggregate``."""
    return [Path("parquet") / f"date={date}", Path("cog") / date, Path("vrt") / f"{date}.vrt",
            Path("quicklook") / f"{date}.png", *agg_components(date, aggregates)]


def _stale_components(output: Path, date: str, aggregates: Sequence[str]) -> list[Path]:
    """Aggregated outputs of a date for grids no longer configured (removed when the date is replaced)."""
    agg = output / "agg"
    old = sorted(p.name for p in agg.iterdir() if p.is_dir() and p.name not in aggregates) if agg.is_dir() else []
    return [rel for rel in agg_components(date, old) if (output / rel).exists()]


def _marker_path(output: Path, date: str) -> Path:
    return output / "parquet" / f"date={date}" / MARKER


def _read_marker(output: Path, date: str) -> dict | None:
    p = _marker_path(output, date)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(marker: dict | None, output: Path, manifest_id: str, phash: str, inputs: list) -> tuple[bool, str]:
    if marker is None:
        return False, "no marker"
    if marker.get("status") != "complete":
        return False, f"{marker.get('status', 'not complete')} (files failed to read: " + "; ".join(
            f.get("reason", "?") for f in marker.get("failed_files", []))[:500] + ")"
    if marker.get("manifest_id") != manifest_id:
        return False, f"models changed (manifest {marker.get('manifest_id')} -> {manifest_id})"
    if marker.get("product_hash") != phash:
        return False, f"settings or region changed (product hash {marker.get('product_hash')} -> {phash})"
    if marker.get("inputs") != inputs:
        return False, "input files changed"
    for rel, size in marker.get("outputs", {}).items():
        p = output / rel
        if not p.is_file() or p.stat().st_size != size:
            return False, f"output {rel} missing or changed"
    return True, ""


def _clean_staging(output: Path, date: str | None = None) -> None:
    st = output / STAGING
    if not st.is_dir():
        return
    for p in st.iterdir():
        if date is None or p.name.split(".")[0] == date:
            shutil.rmtree(p, ignore_errors=True)


def _commit(staging: Path, output: Path, date: str, marker: dict, hook: Callable | None,
            aggregates: Sequence[str] = ()) -> None:
    """Move a staged date into place; the marker goes last (see the module docstring)."""
    from ssm_spark.product.files import write_json_atomic

    _marker_path(output, date).unlink(missing_ok=True)
    trash = staging / "_replaced"
    trash.mkdir(exist_ok=True)
    for i, rel in enumerate(_components(date, aggregates) + _stale_components(output, date, aggregates)):
        src, dst = staging / rel, output / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            os.replace(src, dst)  # atomic for a file
        else:
            if dst.exists() or dst.is_symlink():
                os.replace(dst, trash / str(i))
            if src.exists():
                os.replace(src, dst)
        if i == 0 and hook is not None:
            hook("partial", date)
    write_json_atomic(_marker_path(output, date), marker)
    shutil.rmtree(staging, ignore_errors=True)


def _write_product_json(output: Path, info: dict) -> None:
    from ssm_spark.product.files import write_json_atomic

    done = sorted(p.parent.name.split("=", 1)[1] for p in (output / "parquet").glob(f"date=*/{MARKER}"))
    write_json_atomic(output / "product.json", {**info, "dates": done})


def _compute_tiles(spark: "SparkSession", cfg: "Config", job: DateJob, files: list, bc, staging: Path
                   ) -> tuple[list[dict], bool]:
    """The Spark part of a date: every tile read, predicted and written to staging by the executors."""
    pc = cfg.produce
    date = job.date
    (staging / "parquet" / f"date={date}").mkdir(parents=True)
    if job.bands:
        (staging / "cog" / date).mkdir(parents=True)
    fused = pc.tile_grouping == "auto" and _fusable(files, job.grid)
    spark.sparkContext.setJobDescription(f"ssm-spark produce {date} ({len(files)} files, "
                                         f"{'one task per tile' if fused else 'regrouped by tile'})")
    bfiles = spark.sparkContext.broadcast(files)  # once per executor, not in every task's closure
    try:
        tiles = (_run_fused if fused else _run_shuffled)(spark, job, len(files), bfiles, bc, pc.nthread)
    finally:
        bfiles.destroy()
        spark.sparkContext.setJobDescription(None)
    return tiles, fused


def _finish_date(spark: "SparkSession", cfg: "Config", job: DateJob, files: list, tiles: list[dict], fused: bool,
                 staging: Path, region: Region, title_ids: str, targets: tuple = ()) -> dict:
    """The driver's part of a date once its tiles are staged: VRT, quicklook, aggregates, summary."""
    from ssm_spark.product.cog import write_vrt
    from ssm_spark.product.quicklook import render_quicklook

    pc = cfg.produce
    date = job.date
    written = sorted((t["tile_row"], t["tile_col"]) for t in tiles if t["tile_row"] is not None and t["pixels"] > 0)
    failed = [json.loads(t["error"]) for t in tiles if t.get("error")]
    rejected: dict[str, int] = {}
    by_file: list[dict] = []
    for t in tiles:
        for r in json.loads(t["rejected"]) if t.get("rejected") else []:
            rejected[r["band"]] = rejected.get(r["band"], 0) + int(r["n"])
            by_file.append({k: r[k] for k in ("file", "band", "n", "n_infinite", "range") if k in r})
    empty = sorted((e for t in tiles for e in (json.loads(t["empty"]) if t.get("empty") else [])),
                   key=lambda e: e["file"])
    for t in tiles:  # a tile mostly out of the physical range: a broken model, not odd cells
        base = int(t["pixels"]) - int(t["masked"])
        wild = int(t.get("out_of_range") or 0)
        if wild >= 10 and base and wild > MAX_OUT_OF_RANGE_FRACTION * base:
            from ssm_spark.errors import ModelRegistryError

            shutil.rmtree(staging, ignore_errors=True)  # nothing of the date is kept
            raise ModelRegistryError(
                f"produce {date}: tile {job.tile_name(t['tile_row'], t['tile_col'])}: {wild} of {base} unmasked cells "
                f"({wild / base:.0%}) got estimates outside the physical range [0, porosity]: the registry's models "
                f"are broken or do not fit these inputs (manifest {job.tags.get('manifest_id')}); the date is not "
                "committed")
    counts = {k: int(sum(t[k] for t in tiles)) for k in ("pixels", "retrieved", "masked", "out_of_range")}
    counts["no_estimate"] = counts["pixels"] - counts["retrieved"] - counts["masked"] - counts["out_of_range"]
    ssm_sum = float(sum(t["ssm_sum"] for t in tiles))
    mins = [t["ssm_min"] for t in tiles if t["ssm_min"] is not None]
    maxs = [t["ssm_max"] for t in tiles if t["ssm_max"] is not None]
    if job.bands and written:
        (staging / "vrt").mkdir()
        vrt = staging / "vrt" / f"{date}.vrt"
        write_vrt(vrt, job.grid, [(tr, tc, f"../cog/{date}/{job.tile_name(tr, tc)}.tif") for tr, tc in written],
                  region.tiles, job.bands, job.tags, blocksize=job.blocksize)
        if pc.quicklook and "ssm" in job.bands:
            (staging / "quicklook").mkdir()
            render_quicklook(vrt, staging / "quicklook" / f"{date}.png", band=job.bands.index("ssm") + 1,
                             title=f"SSM {date}, {job.grid.name}, region {region.name}\n{title_ids}",
                             outline_xy=region.outline_xy(job.grid), max_px=pc.quicklook_max_px,
                             vrange=tuple(pc.quicklook_range),
                             metadata={k: str(job.tags[k]) for k in ("manifest_id", "config_hash", "product_hash")})
    t_agg = time.perf_counter()
    aggregates = (_aggregate_date(spark, job, targets, written, staging, region,
                                  pc if pc.quicklook else None, title_ids) if targets and written else {})
    t_agg = time.perf_counter() - t_agg
    outputs = {}
    for rel in _components(date, [t.name for t in targets]):
        p = staging / rel
        for q in sorted([p] if p.is_file() else p.rglob("*") if p.is_dir() else []):
            if q.is_file():
                outputs[str(Path(rel.parts[0]) / q.relative_to(staging / rel.parts[0]))] = q.stat().st_size
    result = {"tiles": len(written), "files": len(files), "files_failed": len(failed),
              "files_without_acquisition": len(empty), **counts,
              "ssm_mean": round(ssm_sum / counts["retrieved"], 6) if counts["retrieved"] else None,
              "ssm_min": round(min(mins), 6) if mins else None, "ssm_max": round(max(maxs), 6) if maxs else None,
              "grouping": "per tile task" if fused else "shuffle by tile"}
    if targets:
        result["aggregates"] = aggregates
    return {"result": result, "failed": failed, "rejected": rejected, "rejected_by_file": by_file, "empty": empty,
            "outputs": outputs,
            "aggregate_seconds": round(t_agg, 2) if targets else None}


def _aggregate_date(spark: "SparkSession", job: DateJob, targets: tuple, written: list, staging: Path,
                    region: Region, quicklook=None, title_ids: str = "") -> dict:
    """Aggregate the date's staged fine tiles onto the coarser grids (Spark), then write a VRT per grid.

    Returns per grid: coarse tiles written, coarse cells, cells with an ssm value.
    """
    from ssm_spark.product.aggregate import AggJob, coarse_tiles, run_aggregates
    from ssm_spark.product.cog import write_vrt

    date = job.date
    bands = (*job.bands, "frac_valid") if job.bands else None
    for t in targets:
        (staging / "agg" / t.name / "parquet" / f"date={date}").mkdir(parents=True)
        if bands:
            (staging / "agg" / t.name / "cog" / date).mkdir(parents=True)
    ajob = AggJob(date, str(staging), job.tags, targets, bands, job.blocksize, job.compress, job.overview_resampling,
                  job.grid)
    fine = [(tr, tc, str(staging / "parquet" / f"date={date}" / f"{job.tile_name(tr, tc)}.parquet"))
            for tr, tc in written]
    spark.sparkContext.setJobDescription(f"ssm-spark produce {date}: aggregate to {', '.join(t.name for t in targets)}")
    try:
        tiles = run_aggregates(spark, ajob, fine)
    finally:
        spark.sparkContext.setJobDescription(None)
    out = {}
    for t in targets:
        mine = [d for d in tiles if d["target"] == t.name and d["cells"] > 0]
        if bands and mine:
            (staging / "agg" / t.name / "vrt").mkdir()
            write_vrt(staging / "agg" / t.name / "vrt" / f"{date}.vrt", t.grid,
                      [(d["tile_row"], d["tile_col"], f"../cog/{date}/{t.tile_name(d['tile_row'], d['tile_col'])}.tif")
                       for d in mine], coarse_tiles(job.grid, region.tiles, t), bands,
                      {k: str(v) for k, v in ajob.file_tags(t).items()}, blocksize=job.blocksize)
            if quicklook is not None and "ssm" in bands:  # produce.quicklook: one per grid
                from ssm_spark.product.quicklook import render_quicklook

                (staging / "agg" / t.name / "quicklook").mkdir()
                render_quicklook(staging / "agg" / t.name / "vrt" / f"{date}.vrt",
                                 staging / "agg" / t.name / "quicklook" / f"{date}.png", band=bands.index("ssm") + 1,
                                 title=f"SSM {date}, {t.name} (mean of {job.grid.name}), region {region.name}\n"
                                       f"{title_ids}", outline_xy=region.outline_xy(t.grid),
                                 max_px=quicklook.quicklook_max_px, vrange=tuple(quicklook.quicklook_range),
                                 metadata={"grid": t.name, **{k: str(job.tags[k])
                                                              for k in ("manifest_id", "config_hash", "product_hash")}})
        out[t.name] = {"tiles": len(mine), "cells": int(sum(d["cells"] for d in mine)),
                       "valid": int(sum(d["valid"] for d in mine))}
    return out


def produce(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
            region: str | None, start: Any, end: Any, output: str | os.PathLike,
            static: str | os.PathLike | None = None, *, force: bool = False,
            hook: Callable[[str, str], None] | None = None) -> dict:
    """Produce the SSM product of a region and a date range (see the module docstring).

    Parameters
    ----------
    spark : SparkSession
    cfg : Config
        ``grid``, ``ingest`` and ``produce`` sections are used (and ``region`` for named regions).
    models : path-like
        Model registry folder (``ssm-spark train``).
    stacks : path-like
        Folder of ``<YYYY-MM-DD>/`` feature-stack GeoTIFFs.
    region : str or None
        Bbox, GeoJSON file, or region name (:func:`resolve_region`).
    start, end : str or date or None
        Inclusive date range of the stack folders (None: open-ended).
    output : path-like
        Product folder (layout in the module docstring).
    static : path-like, optional
        Static layers (default: a ``static/`` folder beside ``stacks``).
    force : bool
        Recompute dates even when their marker says complete.
    hook : callable(stage, date), optional
        Called at ``"staged"`` (date written to staging, nothing moved), ``"partial"`` (Parquet
        partition moved, other outputs not) and ``"committed"``; for tests of interruptions.

    Returns
    -------
    dict
        Run summary: per-date status and counts, totals, pixels/s, failures.

    Raises
    ------
    InputError
        No stack date in range over the region, a bad region, an empty stacks folder.
    ModelRegistryError
        An unreadable or incompatible registry.
    ConfigError
        A bad date, or a ``produce.aggregate`` grid that does not nest in the product grid (checked
        first, before any work).
    InputIOError
        An output folder that cannot be written (before any work).
    """
    from ssm_spark.product.files import OutputLock, ensure_writable

    # the configuration's own checks first: a refused run writes nothing
    resolve_targets(cfg.produce.aggregate, cfg.grid.build(), cfg.produce.aggregate_min_fraction)  # ConfigError
    d0, d1 = _parse_date(start, "start"), _parse_date(end, "end")
    if d0 and d1 and d1 < d0:
        raise ConfigError(f"--end {d1} is before --start {d0}")
    output = ensure_writable(Path(output).resolve())  # permission, read-only, a file in the way
    with OutputLock(output, "ssm-spark produce"):  # refused while another run writes here (names the holder)
        return _produce(spark, cfg, models, stacks, region, start, end, output, static, force=force, hook=hook)


def _produce(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
             region: str | None, start: Any, end: Any, output: Path, static: str | os.PathLike | None = None, *,
             force: bool = False, hook: Callable[[str, str], None] | None = None) -> dict:
    """:func:`produce` while holding the output folder's lock."""
    from rasterio.windows import Window

    from ssm_spark.models.registry import load_registry
    from ssm_spark.sources.stacks import discover

    t_run = time.perf_counter()
    grid = cfg.grid.build()
    targets = resolve_targets(cfg.produce.aggregate, grid, cfg.produce.aggregate_min_fraction)  # ConfigError
    agg_names = [t.name for t in targets]
    models, stacks, output = Path(models), Path(stacks), Path(output).resolve()
    d0, d1 = _parse_date(start, "start"), _parse_date(end, "end")
    if d0 and d1 and d1 < d0:
        raise ConfigError(f"--end {d1} is before --start {d0}")
    registry = load_registry(models)
    rgn = resolve_region(region, cfg, grid)
    if static is None:
        cand = stacks.parent / "static"
        static = cand if cand.is_dir() else None
    wanted = set(rgn.tiles)

    def in_region(win: tuple[int, int, int, int]) -> bool:
        r0, c0, h, w = win
        return bool(wanted.intersection(grid.tiles_for_window(Window(c0, r0, w, h))))

    # only the date folders in range are opened, and only the region's files are fully checked
    inv = discover(stacks, grid, static, cfg.ingest.band_aliases, start=d0, end=d1, keep_window=in_region)
    if inv.files:  # a registry of another feature set: refused by name before any Spark work
        registry.check_inputs(set().union(*({*f.bands, *f.static_bands, *f.class_bands} for f in inv.files)),
                              f"the stack files under {stacks} have")
    by_date: dict[str, list] = {}
    for f in inv.files:
        by_date.setdefault(f.date, []).append(f)
    quarantined: dict[str, list] = {}
    for q in inv.quarantine:  # files that failed the driver's checks (CRS, alignment, bands, static layers)
        quarantined.setdefault(Path(q["file"]).parent.name, []).append(q)
    dates = sorted(by_date)
    unusable = sorted(set(quarantined) - set(by_date))
    if not dates:
        folders = sorted(p.name for p in stacks.iterdir() if p.is_dir()) if stacks.is_dir() else []
        why = (f"; every file of {len(unusable)} date(s) in range was quarantined, e.g. {quarantined[unusable[0]][0]['reason']}"
               if unusable else "")
        raise InputError(f"{stacks}: no usable stack file dated {d0 or 'any'}..{d1 or 'any'} covers region "
                         f"{rgn.name!r} (tiles {list(rgn.tiles)[:6]}{'...' if len(rgn.tiles) > 6 else ''}); date "
                         f"folders found: {folders[0] if folders else '-'}..{folders[-1] if folders else '-'}{why}")
    mid, chash = registry.manifest_id, cfg.hash()
    from ssm_spark.product.climatology import climatology_for_produce

    # change detection: every date's rows get their cells' climatology, built once over the window
    clim = climatology_for_produce(spark, cfg, registry.wcm_params, stacks, static, rgn.tiles, output, inv, d0, d1)
    phash = product_hash(cfg, rgn, mid, clim[0].digest if clim else None)
    pc = cfg.produce
    bands = tuple(pc.cog_bands) if pc.cog else None
    info = {"product": "surface soil moisture (m3/m3), ssm_spark", "software": f"ssm_spark {ssm_spark.__version__}",
            "grid": grid.describe(), "region": rgn.describe(grid), "manifest_id": mid, "config_hash": chash,
            "product_hash": phash, "registry": str(models.resolve()), "columns": list(PRODUCT_COLUMNS),
            "cog_bands": list(bands or []), "qc_bits": {q.name: int(q) for q in QC}}
    if clim:
        info["climatology"] = {k: clim[1][k] for k in ("key", "digest", "settings", "window_dates")}
    if targets:
        info["aggregates"] = {"grids": [t.describe() for t in targets], "columns": list(AGG_COLUMNS),
                              "cog_bands": [*(bands or []), "frac_valid"] if bands else []}
    log.info("produce: %d date(s) %s..%s over region %s (%d tiles) with manifest %s, config %s, product hash %s -> %s",
             len(dates), dates[0], dates[-1], rgn.name, len(rgn.tiles), mid, chash, phash, output)
    bc = spark.sparkContext.broadcast((registry.manifest, registry.model_bytes()))
    per_date: dict[str, dict] = {}
    failed_all: list = []
    done = {"pixels": 0, "t_first": None, "t_last": None}
    title_ids = f"manifest {mid}, config {chash}, product {phash}"

    def finish(k: int, job: DateJob, files: list, tiles: list, fused: bool, staging: Path, inputs: list,
               t0: float, t_tiles: float) -> None:
        """The date's driver work and commit (in the finisher thread while the next date computes)."""
        date = job.date
        t1 = time.perf_counter()
        res = _finish_date(spark, cfg, job, files, tiles, fused, staging, rgn, title_ids, targets)
        failed = quarantined.get(date, []) + res["failed"]
        if hook is not None:
            hook("staged", date)
        # the date's file ledger: every input file in exactly one place
        q_date, r = quarantined.get(date, []), res["result"]
        ledger = {"files_in": len(files) + len(q_date), "files_read": len(files) - r["files_failed"] -
                  r["files_without_acquisition"], "files_without_acquisition": r["files_without_acquisition"],
                  "files_read_failed": r["files_failed"], "files_quarantined": len(q_date)}
        assert ledger["files_in"] == sum(v for k, v in ledger.items() if k != "files_in")
        r.update(ledger)
        # a read failure may be transient: the date is committed as incomplete and re-tried next run
        status = "incomplete" if res["failed"] else "complete"
        marker = {"date": date, "status": status, "manifest_id": mid, "config_hash": chash,
                  "product_hash": phash, "software": f"ssm_spark {ssm_spark.__version__}", "grid": grid.name,
                  "region": rgn.describe(grid), "counts": r,
                  "failed_files": failed, "files_without_acquisition": res["empty"],
                  "bands_absent": {b: sorted(p for p in v if p in {f.path for f in files})
                                   for b, v in sorted(inv.absent_bands.items())
                                   if any(p in {f.path for f in files} for p in v)},
                  "values_out_of_range_set_missing": res["rejected"],
                  "values_set_missing_by_file": res["rejected_by_file"], "inputs": inputs, "outputs": res["outputs"]}
        _commit(staging, output, date, marker, hook, agg_names)
        _write_product_json(output, info)
        now = time.perf_counter()
        r = res["result"]
        done["pixels"] += r["pixels"]
        done["t_last"] = now
        failed_all.extend(failed)
        per_date[date] = {"status": "produced" if status == "complete" else "incomplete", **r,
                          "seconds": round(now - t0, 2),
                          "tiles_seconds": round(t_tiles, 2), "finish_seconds": round(now - t1, 2)}
        if targets:
            per_date[date]["aggregate_seconds"] = res["aggregate_seconds"]
        run_secs = now - done["t_first"]
        log.info("produce %d/%d %s: %s pixels (%s with ssm, %s masked) in %d tiles; tiles %.1f s, outputs and "
                 "commit %.1f s; run so far %s px in %.1f s, %s px/s%s", k, len(dates), date, f"{r['pixels']:,}",
                 f"{r['retrieved']:,}", f"{r['masked']:,}", r["tiles"], t_tiles, now - t1, f"{done['pixels']:,}",
                 run_secs, f"{done['pixels'] / run_secs:,.0f}" if run_secs else "-",
                 f"; {len(res['failed'])} file(s) FAILED: " + "; ".join(e["reason"] for e in res["failed"])
                 if res["failed"] else "")
        if targets:
            log.info("produce %d/%d %s: aggregated to %s in %.1f s", k, len(dates), date,
                     ", ".join(f"{n} ({a['cells']} cells, {a['tiles']} tiles)" for n, a in r["aggregates"].items()),
                     res["aggregate_seconds"])
        if hook is not None:
            hook("committed", date)

    in_flight = pc.dates_in_flight
    computers = ThreadPoolExecutor(in_flight, thread_name_prefix="produce-tiles") if in_flight > 1 else None
    finisher = ThreadPoolExecutor(1, thread_name_prefix="produce-finish") if in_flight > 1 else None
    queue: deque[dict] = deque()  # dates computing or computed, not yet handed to the finisher (date order)
    pending: Future | None = None  # the date finishing

    def hand_over() -> None:
        """The oldest computing date, once computed, to the finisher (after the previous one finished)."""
        nonlocal pending
        item = queue[0]
        tiles, fused = item["tiles"].result() if computers is not None else item["tiles"]
        t_tiles = time.perf_counter() - item["t0"]
        if pending is not None:  # one date finishing at a time, in date order
            pending.result()
            pending = None
        queue.popleft()
        args = (item["k"], item["job"], item["files"], tiles, fused, item["staging"], item["inputs"], item["t0"],
                t_tiles)
        if finisher is None:
            finish(*args)
        else:
            pending = finisher.submit(finish, *args)

    try:
        for k, date in enumerate(dates, 1):
            files = sorted(by_date[date], key=lambda f: f.path)
            q_date = quarantined.get(date, [])
            inputs = _inputs(files, stacks, q_date)
            if q_date:
                log.warning("produce %d/%d %s: %d file(s) quarantined, their cells stay empty: %s", k, len(dates),
                            date, len(q_date), "; ".join(q["reason"] for q in q_date))
            ok, why = _is_complete(_read_marker(output, date), output, mid, phash, inputs)
            if ok and not force:
                log.info("produce %d/%d %s: skipping, complete (manifest %s, product hash %s)", k, len(dates), date,
                         mid, phash)
                per_date[date] = {"status": "skipped"}
                _clean_staging(output, date)
                continue
            if not ok and why != "no marker":
                log.info("produce %d/%d %s: recomputing (%s)", k, len(dates), date, why)
            t0 = time.perf_counter()
            if done["t_first"] is None:
                done["t_first"] = t0
            _clean_staging(output, date)
            staging = output / STAGING / f"{date}.{uuid.uuid4().hex[:8]}"
            tags = {"product": "ssm", "date": date, "grid": grid.name, "manifest_id": mid, "config_hash": chash,
                    "product_hash": phash, "software": f"ssm_spark {ssm_spark.__version__}", "qc_bits": _QC_LEGEND}
            job = DateJob(date, grid, rgn, str(staging), cfg.ingest.max_slope_deg, tags, bands,
                          pc.cog_blocksize, pc.cog_compress, pc.overview_resampling, clim[0] if clim else None)
            item = {"k": k, "job": job, "files": files, "staging": staging, "inputs": inputs, "t0": t0}
            queue.append(item)
            if computers is None:
                item["tiles"] = _compute_tiles(spark, cfg, job, files, bc, staging)
            else:  # Spark's FIFO scheduler runs the older date's tasks first; the next fills idle cores
                item["tiles"] = computers.submit(_compute_tiles, spark, cfg, job, files, bc, staging)
            while len(queue) >= in_flight:
                hand_over()
        while queue:
            hand_over()
        if pending is not None:
            pending.result()
            pending = None
    finally:
        # a failure: let what runs end (a commit is atomic), then drop what was computed but not committed
        for item in queue:
            fut = item.get("tiles")
            if isinstance(fut, Future):
                try:
                    fut.result()
                except BaseException:  # noqa: BLE001 - the loop's own error is the one raised
                    pass
            shutil.rmtree(item["staging"], ignore_errors=True)
        if pending is not None:
            try:
                pending.result()
            except BaseException:  # noqa: BLE001
                pass
        for pool in (computers, finisher):
            if pool is not None:
                pool.shutdown(wait=True)
        bc.destroy()
        st = output / STAGING
        if st.is_dir() and not any(st.iterdir()):
            st.rmdir()
    for date in unusable:  # nothing to produce: said in the summary, nothing written
        log.warning("produce %s: every file quarantined, no product: %s", date,
                    "; ".join(q["reason"] for q in quarantined[date]))
        per_date[date] = {"status": "failed", "reason": "every stack file quarantined"}
        failed_all.extend(quarantined[date])
    px_done = done["pixels"]
    secs_done = (done["t_last"] - done["t_first"]) if done["t_last"] is not None else 0.0
    if not (output / "product.json").exists():  # a run that only skipped leaves every file as it was
        _write_product_json(output, info)
    total = time.perf_counter() - t_run
    summary = {"output": str(output), "manifest_id": mid, "config_hash": chash, "product_hash": phash,
               "region": rgn.describe(grid), "dates": per_date,
               "produced": sum(1 for v in per_date.values() if v["status"] == "produced"),
               "skipped": sum(1 for v in per_date.values() if v["status"] == "skipped"),
               "failed": sum(1 for v in per_date.values() if v["status"] == "failed"),
               "incomplete": sum(1 for v in per_date.values() if v["status"] == "incomplete"),
               "pixels": px_done, "seconds": round(total, 1),
               "pixels_per_s": round(px_done / secs_done) if secs_done else None, "failed_files": failed_all}
    if clim:
        summary["climatology"] = clim[1]
    # the run's ledger over the dates computed (skipped dates keep theirs in their markers)
    keys = ("files_in", "files_read", "files_without_acquisition", "files_read_failed", "files_quarantined",
            "pixels", "retrieved", "masked", "out_of_range", "no_estimate")
    ledger = {k: int(sum(v.get(k, 0) for v in per_date.values() if v["status"] in ("produced", "incomplete")))
              for k in keys}
    for date in unusable:
        ledger["files_in"] += len(quarantined[date])
        ledger["files_quarantined"] += len(quarantined[date])
    summary["ledger"] = ledger
    log.info("produce: %d date(s) produced, %d incomplete, %d skipped, %s pixels in %.1f s -> %s; files: %d in = %d "
             "read + %d without acquisition + %d unreadable + %d quarantined; pixels: %s = %s with ssm + %s masked + "
             "%s out of range + %s without estimate", summary["produced"], summary["incomplete"], summary["skipped"],
             f"{px_done:,}", total, output, *(ledger[k] for k in keys[:5]),
             *(f"{ledger[k]:,}" for k in keys[5:]))
    return summary


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ssm-spark produce`` (and ``spark-submit jobs/produce.py``)."""
    parser.add_argument("--models", required=True, help="model registry folder (from ssm-spark train)")
    parser.add_argument("--stacks", required=True, help="folder of <YYYY-MM-DD>/ folders of feature-stack GeoTIFFs")
    parser.add_argument("--static", default=None,
                        help="folder of static layers (default: a static/ folder beside --stacks)")
    parser.add_argument("--region", default=None,
                        help="bbox lon_min,lat_min,lon_max,lat_max (write --region=-5,40,3,45 when it starts with "
                             "'-'), a GeoJSON file (lon/lat polygons), or a region name (produce.regions, or the "
                             "configured region's name); default: the configured region")
    parser.add_argument("--start", default=None, help="first date YYYY-MM-DD (default: the first stack date)")
    parser.add_argument("--end", default=None, help="last date YYYY-MM-DD, inclusive (default: the last stack date)")
    parser.add_argument("--output", required=True,
                        help="product folder (parquet/, cog/, vrt/, quicklook/, product.json)")
    parser.add_argument("--force", action="store_true", help="recompute dates that are already complete")


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """Run ``ssm-spark produce``: prints the run summary as JSON; 0 on success (files that could
    not be read are listed in the summary and the markers, and logged)."""
    from ssm_spark.spark import session

    summary = produce(session(cfg.spark), cfg, Path(args.models), Path(args.stacks), args.region, args.start,
                      args.end, Path(args.output), Path(args.static) if args.static else None, force=args.force)
    print(json.dumps(summary, indent=2, default=str))
    return 0
