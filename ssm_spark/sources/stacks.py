"""Feature stacks on disk (per-date GeoTIFFs on the grid) to the pixel table, on Spark.

Layout (what the simulator writes, and what a user's exports should look like)::

    STACKS/<YYYY-MM-DD>/<name>.tif            float32 dynamic bands, named by band description:
                                              vv_db, vh_db, incidence_deg, ndvi, lst_k, precip_mm
    STATIC/<name>.tif                          float32 static bands: clay_pct, sand_pct, bulk_density,
                                              elevation_m, slope_deg
    STATIC/<name>_classes.tif                  uint8: landcover (WorldCover), climate (Koppen-Geiger)

Every file is checked on the driver before any Spark work: CRS equal to the grid's, cell size and
origin aligned to the grid (a whole number of cells from the grid's corner), required bands present.
A file that fails is recorded in the quarantine with its reason and the rest goes on; none is
dropped silently.

EASE-Grid 2.0 GeoTIFFs are read with rasterio on the executors, not with Sedona's raster reader:
GeoTools 33 cannot open EPSG:6933 (see README, "Known limitation").
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd
import rasterio
from pyproj import CRS

from ssm_spark.environments import environment, mask_bits
from ssm_spark.errors import GridMismatchError, InputError, InputIOError
from ssm_spark.grid import Grid

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DYNAMIC_BANDS = ("vv_db", "vh_db", "incidence_deg", "ndvi", "lst_k", "precip_mm")
STATIC_BANDS = ("clay_pct", "sand_pct", "bulk_density", "elevation_m", "slope_deg")
CLASS_BANDS = ("landcover", "climate")
REQUIRED_BANDS = ("vv_db", "ndvi")
FEATURE_BANDS = DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Physically possible values (inclusive); outside them a value is rejected (set missing, counted).
VALID_RANGES: dict[str, tuple[float, float]] = {
    "vv_db": (-40.0, 5.0), "vh_db": (-40.0, 5.0), "ndvi": (-1.0, 1.0), "ssm": (0.0, 1.0),
    "incidence_deg": (0.0, 90.0), "clay_pct": (0.0, 100.0), "sand_pct": (0.0, 100.0), "lst_k": (150.0, 360.0),
    "bulk_density": (0.1, 2.65), "slope_deg": (0.0, 90.0), "precip_mm": (0.0, 10_000.0),
}


@dataclass(frozen=True)
class StackFile:
    """One per-date stack file, checked, with where it sits on the grid and its companions."""

    date: str
    path: str
    row_off: int
    col_off: int
    height: int
    width: int
    bands: dict[str, int]  # band name -> 1-based index
    static_path: str | None = None
    static_bands: dict[str, int] = field(default_factory=dict)
    classes_path: str | None = None
    class_bands: dict[str, int] = field(default_factory=dict)


@dataclass
class StackInventory:
    files: list[StackFile]
    quarantine: list[dict]  # {"file", "reason"}: found bad on the driver
    read_errors: object = None  # Spark accumulator of {"file", "reason"}: found bad while reading
    value_rejections: object = None  # Spark accumulator of {"file", "band", "n", "range"}

    @property
    def dates(self) -> list[str]:
        return sorted({f.date for f in self.files})

    def all_quarantined(self) -> list[dict]:
        """Driver-side and read-time quarantine records (read-time ones once the data were read)."""
        seen, out = set(), []
        for q in list(self.quarantine) + list(self.read_errors.value if self.read_errors is not None else []):
            if q["file"] not in seen:
                seen.add(q["file"])
                out.append(q)
        return out


class ListParam:
    """AccumulatorParam for lists of records (a task retried twice adds twice: readers dedupe)."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        a.extend(b)
        return a


def check_raster(path: str | Path, grid: Grid) -> tuple[tuple[int, int, int, int], dict[str, int]]:
    """Check one raster against the grid; return its window (row_off, col_off, height, width) and bands.

    Raises
    ------
    InputIOError
        If the file cannot be opened (missing, truncated, not a GeoTIFF).
    GridMismatchError
        If its CRS, cell size or alignment differ from the grid's, naming both.
    """
    try:
        with rasterio.open(path) as src:
            crs, t, h, w = src.crs, src.transform, src.height, src.width
            names = [d or "" for d in src.descriptions]
    except rasterio.errors.RasterioIOError as exc:
        raise InputIOError(f"{path}: cannot open as a raster ({exc}); is it truncated or not a GeoTIFF?") from exc
    if crs is None or CRS.from_user_input(crs) != CRS.from_user_input(grid.crs):
        raise GridMismatchError(f"{path}: CRS {crs.to_string() if crs else 'none'} differs from grid {grid.name} "
                                f"({grid.crs}); reproject it onto the grid first")
    if t.b != 0 or t.d != 0 or not math.isclose(t.a, grid.cell, rel_tol=1e-9) or not math.isclose(-t.e, grid.cell, rel_tol=1e-9):
        raise GridMismatchError(f"{path}: cell size ({t.a}, {t.e}) differs from grid {grid.name} cell {grid.cell}")
    col_f, row_f = (t.c - grid.x0) / grid.cell, (grid.y0 - t.f) / grid.cell
    col_off, row_off = round(col_f), round(row_f)
    if abs(col_f - col_off) > 1e-6 or abs(row_f - row_off) > 1e-6:
        raise GridMismatchError(f"{path}: origin ({t.c}, {t.f}) is not on a cell corner of grid {grid.name} "
                                f"(off by {col_f - col_off:.4f}, {row_f - row_off:.4f} cells)")
    if row_off < 0 or col_off < 0 or row_off + h > grid.n_rows or col_off + w > grid.n_cols:
        raise GridMismatchError(f"{path}: extends outside grid {grid.name}")
    return (row_off, col_off, h, w), {n: i for i, n in enumerate(names, 1) if n}


def discover(stacks_dir: str | Path, grid: Grid, static_dir: str | Path | None = None,
             band_aliases: dict[str, str] | None = None, *, start: dt.date | None = None,
             end: dt.date | None = None, keep_window: Callable[[tuple[int, int, int, int]], bool] | None = None
             ) -> StackInventory:
    """Find and check every stack file (driver side).

    Parameters
    ----------
    stacks_dir : path
        Folder of ``<YYYY-MM-DD>/`` folders of GeoTIFFs.
    grid : Grid
    static_dir : path, optional
        Folder of static companions (``<name>.tif``, ``<name>_classes.tif``).
    band_aliases : dict, optional
        Other band names -> the names above (e.g. ``{"VV": "vv_db"}``).
    start, end : date, optional
        Only date folders in ``[start, end]``; the others are not opened (a product of a few days
        over a long archive checks only those days).
    keep_window : callable, optional
        ``(row_off, col_off, height, width) -> bool`` on a file's grid window, after its header
        check: files outside (e.g. off the product's region) are skipped before their band and
        static-layer checks.

    Returns
    -------
    StackInventory

    Raises
    ------
    InputError
        If ``stacks_dir`` holds no date folder at all.
    """
    stacks_dir = Path(stacks_dir)
    aliases = band_aliases or {}
    date_dirs = sorted(p for p in stacks_dir.iterdir() if p.is_dir() and _DATE_DIR.match(p.name)) if stacks_dir.is_dir() else []
    if not date_dirs:
        raise InputError(f"{stacks_dir}: no <YYYY-MM-DD>/ folders of GeoTIFF stacks found")
    files, quarantine = [], []
    static_cache: dict[str, tuple] = {}
    for d in date_dirs:
        day = dt.date.fromisoformat(d.name)
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        for path in sorted(d.glob("*.tif")):
            try:
                (r0, c0, h, w), bands = check_raster(path, grid)
                if keep_window is not None and not keep_window((r0, c0, h, w)):
                    continue
                bands = {aliases.get(k, k): v for k, v in bands.items()}
                missing = [b for b in REQUIRED_BANDS if b not in bands]
                if missing:
                    raise InputError(f"{path}: required band(s) {missing} missing (bands found: {sorted(bands)}); "
                                     "band descriptions must name them, or map other names with band aliases")
                extra = {}
                if static_dir is not None:
                    extra = static_cache.get(path.stem)
                    if extra is None:
                        extra = _static_companions(Path(static_dir), path.stem, grid, (r0, c0, h, w), aliases)
                        static_cache[path.stem] = extra
                files.append(StackFile(d.name, str(path), r0, c0, h, w, bands, **extra))
            except (InputError, InputIOError, GridMismatchError) as exc:
                log.warning("quarantined %s: %s", path, exc)
                quarantine.append({"file": str(path), "reason": str(exc)})
    return StackInventory(files, quarantine)


def _static_companions(static_dir: Path, stem: str, grid: Grid, window: tuple, aliases: dict) -> dict:
    out: dict = {}
    for key, suffix in (("static", ""), ("classes", "_classes")):
        p = static_dir / f"{stem}{suffix}.tif"
        if not p.exists():
            continue
        win, bands = check_raster(p, grid)
        if win != window:
            raise GridMismatchError(f"{p}: covers cells {win} but its stack covers {window}")
        out[f"{key}_path"] = str(p)
        out[f"{'static' if key == 'static' else 'class'}_bands"] = {aliases.get(k, k): v for k, v in bands.items()}
    return out


def pixel_schema(grid: Grid) -> str:
    """Spark DDL of the pixel table (DESIGN.md: grid, tile and cell address, lon/lat, date, features, env)."""
    cols = ["grid string", "tile_row int", "tile_col int", "row int", "col int", "lon double", "lat double", "date date"]
    cols += [f"{b} double" for b in DYNAMIC_BANDS + STATIC_BANDS]
    cols += ["landcover int", "climate int", "env string", "qc int"]
    return ", ".join(cols)


def read_file_cells(f: StackFile, grid: Grid, max_slope_deg: float | None = None,
                    cells: np.ndarray | None = None, rejected: list | None = None) -> pd.DataFrame:
    """Explode one stack file (and its static companions) into pixel rows (executor side).

    Cells whose backscatter is missing in every polarisation are not pixels of that date (no
    acquisition); every other cell is kept, masked classes included (their QC bits say so).
    ``cells`` (an (n, 2) array of global row, col) limits the rows to those cells. Values outside
    :data:`VALID_RANGES` are set missing and, when ``rejected`` is a list, recorded there as
    ``{"file", "band", "n", "range"}``.
    """
    h, w = f.height, f.width
    cols: dict[str, np.ndarray] = {}
    with rasterio.open(f.path) as src:
        for name in DYNAMIC_BANDS:
            cols[name] = src.read(f.bands[name]).astype("f8") if name in f.bands else np.full((h, w), np.nan)
    for path, bands, names in ((f.static_path, f.static_bands, STATIC_BANDS), (f.classes_path, f.class_bands, CLASS_BANDS)):
        src = rasterio.open(path) if path else None
        try:
            for name in names:
                cols[name] = src.read(bands[name]).astype("f8") if src is not None and name in bands else np.full((h, w), np.nan)
        finally:
            if src is not None:
                src.close()
    for name in CLASS_BANDS:
        cols[name] = np.where(np.isfinite(cols[name]), cols[name], 0)
    for name, (lo, hi) in VALID_RANGES.items():
        if name in cols:
            bad = np.isfinite(cols[name]) & ((cols[name] < lo) | (cols[name] > hi))
            n_bad = int(bad.sum())
            if n_bad:
                cols[name][bad] = np.nan
                if rejected is not None:
                    rejected.append({"file": f.path, "band": name, "n": n_bad, "range": [lo, hi]})
    valid = np.isfinite(cols["vv_db"]) | np.isfinite(cols["vh_db"])
    if cells is not None:
        wanted = np.zeros((h, w), dtype=bool)
        r, c = cells[:, 0] - f.row_off, cells[:, 1] - f.col_off
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        wanted[r[inside], c[inside]] = True
        valid &= wanted
    rr, cc = np.nonzero(valid)
    rows, colsg = rr + f.row_off, cc + f.col_off
    lon, lat = grid.to_lonlat(rows, colsg)
    out = {
        "grid": np.full(rows.size, grid.name, dtype=object),
        "tile_row": (rows // grid.tile_size).astype("i4"), "tile_col": (colsg // grid.tile_size).astype("i4"),
        "row": rows.astype("i4"), "col": colsg.astype("i4"),
        "lon": np.asarray(lon, dtype="f8"), "lat": np.asarray(lat, dtype="f8"),
        "date": np.full(rows.size, dt.date.fromisoformat(f.date), dtype=object),
    }
    for name in DYNAMIC_BANDS + STATIC_BANDS:
        out[name] = cols[name][rr, cc]
    lc, cl = cols["landcover"][rr, cc].astype("i4"), cols["climate"][rr, cc].astype("i4")
    out["landcover"], out["climate"] = lc, cl
    out["env"] = environment(lc, np.where(cl > 0, cl, np.nan) if np.any(cl > 0) else None)
    out["qc"] = mask_bits(lc, out["lst_k"], out["slope_deg"], max_slope_deg).astype("i4")
    return pd.DataFrame(out)


def read_pixels(spark: "SparkSession", inventory: StackInventory, grid: Grid, max_slope_deg: float | None = None,
                partitions: int | None = None, cells: np.ndarray | None = None,
                then: "Callable[[pd.DataFrame], pd.DataFrame] | None" = None, schema: str | None = None) -> "DataFrame":
    """The pixel table of every checked stack file, read in parallel on the executors.

    One Spark task reads one file (a tile on a date), so a file is opened once, its bands in one
    batch; the table's columns and order are :func:`pixel_schema`. With ``cells`` (an (n, 2) array
    of global row, col: e.g. the cells under stations) only files holding some of them are read and
    only those cells are exploded. ``then`` (with its output ``schema``) is applied to each file's
    rows in the same Python task, so a following pandas step (the physics, the models) costs no
    extra round trip through the JVM.
    """
    if not inventory.files:
        raise InputError("no readable stack file: every file was quarantined (see the quarantine records)")
    files = inventory.files
    if cells is not None:
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        files = [f for f in files if np.any((cells[:, 0] >= f.row_off) & (cells[:, 0] < f.row_off + f.height)
                                            & (cells[:, 1] >= f.col_off) & (cells[:, 1] < f.col_off + f.width))]
        if not files:
            return spark.createDataFrame([], pixel_schema(grid))
    payload = [(i, f.path) for i, f in enumerate(files)]
    if inventory.read_errors is None:
        inventory.read_errors = spark.sparkContext.accumulator([], ListParam())
    errors = inventory.read_errors
    if inventory.value_rejections is None:
        inventory.value_rejections = spark.sparkContext.accumulator([], ListParam())
    value_acc = inventory.value_rejections

    def _read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for i in batch["i"]:
                f = files[int(i)]
                try:
                    rejected: list = []
                    out = read_file_cells(f, grid, max_slope_deg, cells, rejected)
                    if rejected:
                        value_acc.add(rejected)
                    yield then(out) if then is not None else out
                except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
                    # a file whose header was fine on the driver but whose data are damaged
                    # (truncated, corrupt blocks): recorded, the other files go on
                    errors.add([{"file": f.path, "reason": f"{f.path}: cannot read its data ({exc}); truncated or corrupt?"}])

    n = partitions or min(len(payload), max(spark.sparkContext.defaultParallelism * 4, 1))
    tasks = spark.createDataFrame(payload, "i int, path string").repartition(n, "path")
    return tasks.mapInPandas(_read, schema or pixel_schema(grid))


def inventory_summary(inv: StackInventory) -> dict:
    """Files found good, dates, quarantine records (call after the pixels were read), cells covered."""
    bad = inv.all_quarantined()
    values: dict[str, int] = {}
    seen = set()
    for r in inv.value_rejections.value if inv.value_rejections is not None else []:
        key = (r["file"], r["band"])
        if key not in seen:  # a retried task reports twice
            seen.add(key)
            values[r["band"]] = values.get(r["band"], 0) + int(r["n"])
    return {"files": len(inv.files), "files_read": len(inv.files) - (len(bad) - len(inv.quarantine)),
            "dates": len(inv.dates), "quarantined": bad, "values_out_of_range_set_missing": values,
            "cells_in_files": int(sum(f.height * f.width for f in inv.files))}


__all__ = ["StackFile", "StackInventory", "check_raster", "discover", "read_pixels", "read_file_cells",
           "pixel_schema", "inventory_summary", "DYNAMIC_BANDS", "STATIC_BANDS", "CLASS_BANDS"]
