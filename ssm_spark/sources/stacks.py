"""Feature stacks on disk (per-date GeoTIFFs on the grid) to the pixel table, on Spark.

Layout (what the simulator writes, and what a user's exports should look like)::

    STACKS/<YYYY-MM-DD>/<name>.tif            float32 dynamic bands, named by band description:
                                              vv_db, vh_db, incidence_deg, ndvi, lst_k, precip_mm
    STATIC/<name>.tif                          float32 static bands: clay_pct, sand_pct, bulk_density,
                                              elevation_m, slope_deg
    STATIC/<name>_classes.tif                  uint8: landcover (WorldCover), climate (Koppen-Geiger)

Every file is checked on the driver before any Spark work: CRS equal to the grid's, cell size and
origin aligned to the grid (a whole number of cells from the grid's corner), required bands present,
a land-cover layer (its static companions, or a ``landcover`` band in the file itself: without it
water and built-up cells would get an estimate and no environment), and no other file of the same
date covering any of its cells (a copy such as ``tile (copy).tif`` would put every cell in twice;
which one is right cannot be told, so every file of such a group is quarantined). A file that fails
is recorded in the quarantine with its reason and the rest goes on; none is dropped silently.
Optional bands a file lacks are recorded (``StackInventory.absent_bands``) and logged once per band
with what is lost (no ``lst_k``: no frozen-soil mask). While reading, values outside
:data:`VALID_RANGES` and non-finite values (``+-inf``) are set missing and counted by file and band,
a file with no acquisition cell is recorded, and a file whose data cannot be read is recorded with
GDAL's own cause.

EASE-Grid 2.0 GeoTIFFs are read with rasterio on the executors, not with Sedona's raster reader:
GeoTools 33 cannot open EPSG:6933 (see README, "Known limitation").

Reading a file (:func:`read_file_cells`: a pixel frame; :func:`read_file_columns`: the same rows as
column arrays, for the product's per-tile path): the bands of each file in one ``read`` call, the
lon/lat of a window's cells computed once and kept for the last few windows (a tile's cells are the
same on every date), the rows in (row, col) order.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

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
#: What a file loses without an optional band (said in the log and the summaries).
ABSENT_BAND_EFFECT = {"vh_db": "no VH features", "incidence_deg": "the nominal incidence angle is used",
                      "lst_k": "no frozen-soil mask (FROZEN)", "precip_mm": "no antecedent-precipitation feature",
                      "slope_deg": "no steep-slope mask (STEEP_SLOPE)", "climate": "environments by land cover alone",
                      "clay_pct": "no texture features", "sand_pct": "no texture features",
                      "bulk_density": "default bulk density", "elevation_m": "no elevation feature"}
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
    empty_files: object = None  # Spark accumulator of {"file", "reason"}: no acquisition cell
    absent_bands: dict = field(default_factory=dict)  # optional band -> files without it
    ignored_folders: list = field(default_factory=list)  # folders not named as a date: not read

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


NO_ACQUISITION = "no acquisition cell: vv_db and vh_db are missing (NaN) everywhere in the file"


def exception_chain(exc: BaseException) -> str:
    """The messages of an exception and of its causes, outermost first (rasterio's "Read failed.
    See previous exception for details." hides GDAL's own message in ``__cause__``)."""
    seen, parts, e = set(), [], exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        msg = str(e).strip() or type(e).__name__
        if msg not in parts:
            parts.append(msg)
        e = e.__cause__ or e.__context__
    return ": ".join(parts)


def read_failure(path: str, exc: BaseException) -> dict:
    """The quarantine record of a file whose data could not be read (GDAL's cause included)."""
    return {"file": path, "reason": f"{path}: cannot read its data ({exception_chain(exc)}); truncated or corrupt?"}


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
    if crs is None or not _same_crs(crs.to_wkt(), str(grid.crs)):
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
    return (row_off, col_off, h, w), _band_index(path, names)


@functools.lru_cache(maxsize=64)
def _same_crs(wkt: str, grid_crs: str) -> bool:
    """pyproj's equality of a file's CRS (its WKT) and the grid's, kept per pair: parsing both costs
    ~1.5 ms a file, a third of a stack file's check, and a folder's files share one CRS."""
    return CRS.from_user_input(wkt) == CRS.from_user_input(grid_crs)


def _band_index(path, names: list[str]) -> dict[str, int]:
    """Band name -> 1-based index; a name given to two bands cannot be told apart."""
    out: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if not n:
            continue
        if n in out:
            raise InputError(f"{path}: bands {out[n]} and {i} are both named {n!r}; which one is meant cannot be told")
        out[n] = i
    return out


def _aliased(path, bands: dict[str, int], aliases: dict[str, str]) -> dict[str, int]:
    """Band names after ``ingest.band_aliases``; two bands landing on one name are refused."""
    out: dict[str, int] = {}
    for k, i in sorted(bands.items(), key=lambda kv: kv[1]):
        n = aliases.get(k, k)
        if n in out:
            raise InputError(f"{path}: bands {out[n]} and {i} both mean {n!r} (after ingest.band_aliases); which one "
                             "is meant cannot be told")
        out[n] = i
    return out


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
    from ssm_spark import storage

    if storage.is_remote(stacks_dir):  # s3://b/stacks -> /vsis3/b/stacks: rasterio opens its files as they are
        storage.apply_gdal_env()
        stacks_dir = storage.gdal_path(stacks_dir)
        static_dir = storage.gdal_path(static_dir) if static_dir is not None else None
    stacks_dir = Path(stacks_dir)
    aliases = band_aliases or {}
    entries = [p for p, is_dir in storage.listdir(stacks_dir) if is_dir]
    date_dirs, ignored = [], []
    for p in entries:
        try:
            if _DATE_DIR.match(p.name):
                dt.date.fromisoformat(p.name)
                date_dirs.append(p)
                continue
        except ValueError:
            pass
        ignored.append(str(p))
    if ignored:
        log.warning("%s: %d folder(s) not named as a date YYYY-MM-DD are not read: %s", stacks_dir, len(ignored),
                    ", ".join(Path(p).name for p in ignored[:8]) + (" ..." if len(ignored) > 8 else ""))
    if not date_dirs:
        raise InputError(f"{stacks_dir}: no <YYYY-MM-DD>/ folders of GeoTIFF stacks found"
                         + (f" (folders found: {[Path(p).name for p in ignored[:5]]}; rename them YYYY-MM-DD)"
                            if ignored else ""))
    files, quarantine = [], []
    static_cache: dict[str, tuple] = {}
    for d in date_dirs:
        day = dt.date.fromisoformat(d.name)
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        day_files: list[StackFile] = []
        for path in sorted(p for p, is_dir in storage.listdir(d) if not is_dir and p.suffix.lower() in (".tif", ".tiff")):
            try:
                (r0, c0, h, w), bands = check_raster(path, grid)
                if keep_window is not None and not keep_window((r0, c0, h, w)):
                    continue
                bands = _aliased(path, bands, aliases)
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
                f = StackFile(d.name, str(path), r0, c0, h, w, bands, **extra)
                _check_static(f, static_dir)
                day_files.append(f)
            except (InputError, InputIOError, GridMismatchError) as exc:
                log.warning("quarantined %s: %s", path, exc)
                quarantine.append({"file": str(path), "reason": str(exc)})
        overlapping = _overlaps(day_files)
        for f in day_files:
            if f.path in overlapping:
                log.warning("quarantined %s: %s", f.path, overlapping[f.path])
                quarantine.append({"file": f.path, "reason": overlapping[f.path]})
            else:
                files.append(f)
    absent: dict[str, list[str]] = {}
    for f in files:
        have = set(f.bands) | set(f.static_bands) | set(f.class_bands)
        for b in ABSENT_BAND_EFFECT:
            if b not in have:
                absent.setdefault(b, []).append(f.path)
    for b, paths in sorted(absent.items()):
        log.warning("band %s absent from %d of %d file(s) (e.g. %s): %s there", b, len(paths), len(files), paths[0],
                    ABSENT_BAND_EFFECT[b])
    return StackInventory(files, quarantine, absent_bands=absent, ignored_folders=ignored)


def _check_static(f: StackFile, static_dir) -> None:
    """A file must come with a land-cover layer: its own ``landcover`` band, or both static
    companions when a static folder is in use (else its masks, environment and texture would
    silently be missing)."""
    stem = Path(f.path).stem
    if "landcover" in f.bands:  # the stack carries its own land cover: companions optional (absent bands recorded)
        return
    if static_dir is None:
        if "landcover" not in f.bands:
            raise InputError(f"{f.path}: no land-cover layer: no static folder (--static, or static/ beside the "
                             "stacks) and no landcover band in the file; without it water and built-up cells would "
                             "get an estimate and no environment")
        return
    missing = [f"{stem}{sfx}.tif" for sfx, p in (("", f.static_path), ("_classes", f.classes_path)) if p is None]
    if missing:
        raise InputError(f"{f.path}: static layer(s) {missing} not found in {static_dir} (a renamed or copied stack "
                         "file?); without them its water/built-up/slope masks, environment and texture would be "
                         "lost")
    if "landcover" not in f.class_bands and "landcover" not in f.bands:
        raise InputError(f"{f.classes_path}: no 'landcover' band (bands: {sorted(f.class_bands)})")


def _overlaps(files: list[StackFile]) -> dict[str, str]:
    """Files of one date that share cells with another: path -> reason (all of them quarantined)."""
    out: dict[str, str] = {}
    order = sorted(files, key=lambda f: (f.row_off, f.col_off))
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b.row_off >= a.row_off + a.height:
                break
            if b.col_off < a.col_off + a.width and a.col_off < b.col_off + b.width:
                for x, y in ((a, b), (b, a)):
                    out.setdefault(x.path, f"{x.path}: covers cells that {y.path} also covers on {x.date} (a copy or a "
                                           "re-export?); which file is right cannot be told, so neither is used: "
                                           "remove one")
    return out


def _static_companions(static_dir: Path, stem: str, grid: Grid, window: tuple, aliases: dict) -> dict:
    from ssm_spark import storage

    out: dict = {}
    for key, suffix in (("static", ""), ("classes", "_classes")):
        p = static_dir / f"{stem}{suffix}.tif"
        if not storage.exists(p):
            continue
        win, bands = check_raster(p, grid)
        if win != window:
            raise GridMismatchError(f"{p}: covers cells {win} but its stack covers {window}")
        out[f"{key}_path"] = str(p)
        out[f"{'static' if key == 'static' else 'class'}_bands"] = _aliased(p, bands, aliases)
    return out


def pixel_schema(grid: Grid) -> str:
    """Spark DDL of the pixel table (docs/contracts.md, "Tables": grid, tile and cell address, lon/lat, date, features, env)."""
    cols = ["grid string", "tile_row int", "tile_col int", "row int", "col int", "lon double", "lat double", "date date"]
    cols += [f"{b} double" for b in DYNAMIC_BANDS + STATIC_BANDS]
    cols += ["landcover int", "climate int", "env string", "qc int"]
    return ", ".join(cols)


def _read_band(src, index: int) -> np.ndarray:
    """A band as float64 with its declared nodata value (if not NaN) as NaN: missing, not a value."""
    return _read_bands(src, [index])[0]


def _read_bands(src, indexes: list[int]) -> np.ndarray:
    """Bands ``indexes`` as float64 ``(len(indexes), h, w)`` in one read, each band's declared nodata
    value (if not NaN) as NaN: missing, not a value."""
    a = src.read(indexes).astype("f8")
    for k, index in enumerate(indexes):
        nd = src.nodatavals[index - 1]
        if nd is not None and np.isfinite(nd):
            a[k][a[k] == nd] = np.nan
    return a


def _lonlat(grid: Grid, row_off: int, col_off: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat of every cell of a window (row-major, flat), kept for the last few windows: a tile's
    cells are the same on every date (:meth:`Grid.window_lonlat`: the same values as projecting only
    the cells wanted; one row and one column projected on a cylindrical grid)."""
    key = (grid, row_off, col_off, h, w)
    hit = _LONLAT.get(key)
    if hit is None:
        hit = grid.window_lonlat(row_off, col_off, h, w)
        if len(_LONLAT) >= _LONLAT_MAX:  # bounded: memory does not grow with the region
            _LONLAT.pop(next(iter(_LONLAT)))
        _LONLAT[key] = hit
    return hit


_LONLAT: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_LONLAT_MAX = 16


def _read_cells(f: StackFile, grid: Grid, max_slope_deg: float | None, cells: np.ndarray | None,
                rejected: list | None) -> tuple[dict[str, np.ndarray], bool]:
    """The numeric columns of one stack file's pixel rows (cell address, lon/lat, bands, classes,
    mask bits) and whether any cell has a climate class; shared by :func:`read_file_cells` and
    :func:`read_file_columns`. Rows are in (row, col) order."""
    h, w = f.height, f.width
    cols: dict[str, np.ndarray] = {}
    with rasterio.open(f.path) as src:
        names = [name for name in FEATURE_BANDS if name in f.bands]  # static bands may also sit in the stack file
        if names:
            for name, a in zip(names, _read_bands(src, [f.bands[name] for name in names])):
                cols[name] = a
    for name in DYNAMIC_BANDS:
        if name not in cols:
            cols[name] = np.full((h, w), np.nan)
    for path, bands, group in ((f.static_path, f.static_bands, STATIC_BANDS), (f.classes_path, f.class_bands, CLASS_BANDS)):
        names = [name for name in group if name in bands] if path else []
        if names:
            with rasterio.open(path) as src:
                for name, a in zip(names, _read_bands(src, [bands[name] for name in names])):
                    cols[name] = a
        for name in group:
            if name not in cols:
                cols[name] = np.full((h, w), np.nan)
    for name in CLASS_BANDS:
        cols[name] = np.where(np.isfinite(cols[name]), cols[name], 0)
    for name in DYNAMIC_BANDS + STATIC_BANDS:
        lo, hi = VALID_RANGES.get(name, (-np.inf, np.inf))
        a = cols[name]
        if math.isfinite(lo) and math.isfinite(hi):
            # with finite bounds, (a < lo) | (a > hi) holds for +-inf as well and never for NaN: the
            # values out of range and the infinite ones, in two comparisons
            bad = (a < lo) | (a > hi)
        else:
            bad = np.isinf(a) | (np.isfinite(a) & ((a < lo) | (a > hi)))
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            n_inf = int(np.count_nonzero(np.isinf(a)))
            a[bad] = np.nan
            if rejected is not None:
                rejected.append({"file": f.path, "band": name, "n": n_bad, "n_infinite": n_inf,
                                 "range": [lo, hi] if name in VALID_RANGES else None})
    valid = np.isfinite(cols["vv_db"]) | np.isfinite(cols["vh_db"])
    if cells is not None:
        wanted = np.zeros((h, w), dtype=bool)
        r, c = cells[:, 0] - f.row_off, cells[:, 1] - f.col_off
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        wanted[r[inside], c[inside]] = True
        valid &= wanted
    flat = np.flatnonzero(valid)  # row-major: the (row, col) order
    lon, lat = _lonlat(grid, f.row_off, f.col_off, h, w)
    ts = grid.tile_size
    if len(flat) == h * w:
        # every cell of the window (a file inside the swath): the rows are the window in row-major
        # order, so the address columns repeat the window's rows and columns and each band is its
        # array as read (owned here), without a gather
        r1 = np.arange(h, dtype=np.int64) + f.row_off
        c1 = np.arange(w, dtype=np.int64) + f.col_off
        out = {"tile_row": np.repeat((r1 // ts).astype("i4"), w), "tile_col": np.tile((c1 // ts).astype("i4"), h),
               "row": np.repeat(r1.astype("i4"), w), "col": np.tile(c1.astype("i4"), h),
               "lon": lon.copy(), "lat": lat.copy()}   # copies: the lon/lat cache is shared

        def take(a: np.ndarray) -> np.ndarray:
            return a.ravel()
    else:
        rr, cc = np.divmod(flat, w)
        rows, colsg = rr + f.row_off, cc + f.col_off
        out = {"tile_row": (rows // ts).astype("i4"), "tile_col": (colsg // ts).astype("i4"),
               "row": rows.astype("i4"), "col": colsg.astype("i4"), "lon": lon[flat], "lat": lat[flat]}

        def take(a: np.ndarray) -> np.ndarray:
            return a.ravel()[flat]
    for name in DYNAMIC_BANDS + STATIC_BANDS:
        out[name] = take(cols[name])
    lc, cl = take(cols["landcover"]).astype("i4"), take(cols["climate"]).astype("i4")
    out["landcover"], out["climate"] = lc, cl
    out["qc"] = mask_bits(lc, out["lst_k"], out["slope_deg"], max_slope_deg).astype("i4")
    return out, bool(np.any(cl > 0))


def read_file_cells(f: StackFile, grid: Grid, max_slope_deg: float | None = None,
                    cells: np.ndarray | None = None, rejected: list | None = None) -> pd.DataFrame:
    """Explode one stack file (and its static companions) into pixel rows (executor side).

    Cells whose backscatter is missing in every polarisation are not pixels of that date (no
    acquisition); every other cell is kept, masked classes included (their QC bits say so).
    ``cells`` (an (n, 2) array of global row, col) limits the rows to those cells. Values outside
    :data:`VALID_RANGES` are set missing and, when ``rejected`` is a list, recorded there as
    ``{"file", "band", "n", "range"}``. Rows are in (row, col) order. The columns are those of
    :func:`pixel_schema`; :func:`read_file_columns` gives the same rows as arrays.
    """
    num, has_climate = _read_cells(f, grid, max_slope_deg, cells, rejected)
    n = len(num["row"])
    lc, cl = num["landcover"], num["climate"]
    out = {"grid": np.full(n, grid.name, dtype=object), **{k: num[k] for k in _ADDRESS},
           "date": np.full(n, dt.date.fromisoformat(f.date), dtype=object),
           **{name: num[name] for name in DYNAMIC_BANDS + STATIC_BANDS}, "landcover": lc, "climate": cl,
           "env": environment(lc, np.where(cl > 0, cl, np.nan) if has_climate else None), "qc": num["qc"]}
    return pd.DataFrame(out)


_ADDRESS = ("tile_row", "tile_col", "row", "col", "lon", "lat")


def read_file_columns(f: StackFile, grid: Grid, max_slope_deg: float | None = None,
                      cells: np.ndarray | None = None, rejected: list | None = None) -> dict[str, Any]:
    """The rows of :func:`read_file_cells` as column arrays (the product's per-tile path): no frame,
    no ``grid`` or ``date`` column (the same for every row: the caller knows them), and ``env`` as
    an :class:`~ssm_spark.physics.wcm_params.EnvKeys`, the keys computed once per distinct
    (land cover, climate) pair instead of per row (the same keys as :func:`environment`)."""
    from ssm_spark.physics.wcm_params import EnvKeys

    num, has_climate = _read_cells(f, grid, max_slope_deg, cells, rejected)
    lc, cl = num["landcover"], num["climate"]
    n = len(lc)
    pair, uniq_pairs = pd.factorize(lc.astype(np.int64) * (1 << 32) + cl.astype(np.int64), sort=False)
    first = np.zeros(len(uniq_pairs), dtype=np.int64)  # a row of each (land cover, climate) pair
    first[pair[::-1]] = np.arange(n - 1, -1, -1)
    lc_u, cl_u = lc[first], cl[first]
    keys = environment(lc_u, np.where(cl_u > 0, cl_u, np.nan) if has_climate else None)
    codes, uniq = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=True)
    num["env"] = EnvKeys(np.asarray(codes, dtype=np.intp)[pair] if n else np.zeros(0, np.intp), list(uniq))
    return num


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
    if inventory.empty_files is None:
        inventory.empty_files = spark.sparkContext.accumulator([], ListParam())
    empty_acc = inventory.empty_files

    def _read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for i in batch["i"]:
                f = files[int(i)]
                try:
                    rejected: list = []
                    out = read_file_cells(f, grid, max_slope_deg, cells, rejected)
                except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
                    # a file whose header was fine on the driver but whose data are damaged
                    # (truncated, corrupt blocks): recorded, the other files go on
                    errors.add([read_failure(f.path, exc)])
                    continue
                if rejected:
                    value_acc.add(rejected)
                if cells is None and len(out) == 0:
                    empty_acc.add([{"file": f.path, "reason": NO_ACQUISITION}])
                yield then(out) if then is not None else out

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
    failed = {q["file"] for q in bad} - {q["file"] for q in inv.quarantine}
    empty = sorted({e["file"] for e in (inv.empty_files.value if inv.empty_files is not None else [])} - failed)
    return {"files": len(inv.files) + len(inv.quarantine), "files_read": len(inv.files) - len(failed),
            "files_quarantined": len(inv.quarantine), "files_read_failed": len(failed),
            "dates": len(inv.dates), "quarantined": bad, "values_out_of_range_set_missing": values,
            "values_by_file": sorted(({"file": r["file"], "band": r["band"], "n": int(r["n"])} for r in
                                      {(r["file"], r["band"]): r for r in (inv.value_rejections.value if
                                       inv.value_rejections is not None else [])}.values()),
                                     key=lambda r: (r["file"], r["band"])),
            "files_without_acquisition": empty,
            "bands_absent": {b: len(v) for b, v in sorted(inv.absent_bands.items())},
            "folders_not_read": list(inv.ignored_folders),
            "cells_in_files": int(sum(f.height * f.width for f in inv.files if f.path not in failed))}


__all__ = ["StackFile", "StackInventory", "check_raster", "discover", "read_pixels", "read_file_cells",
           "read_file_columns",
           "exception_chain", "read_failure", "NO_ACQUISITION",
           "pixel_schema", "inventory_summary", "DYNAMIC_BANDS", "STATIC_BANDS", "CLASS_BANDS"]
