"""One cell's values from the stack files, fast: datasets kept open, 1 x 1 windows, one frame.

Why this and not :func:`ssm_spark.sources.stacks.read_file_cells` per query: that reader (a Spark
task's) opens the stack file and its two static companions and reads every band whole, then keeps
the asked cells: about 40 ms of CPU for one cell of a 256 x 256 tile, most of it opening files and
decompressing blocks it then throws away. Here

- datasets stay open (:class:`OpenFiles`, least recently used out, re-opened when a file's
  ``(mtime, size)`` changed), so GDAL's block cache keeps each file's decoded blocks: a cell of a
  file read before costs a lookup, a new file one decode of the blocks holding the cell;
- a read is the 1 x 1 window of the cell, all bands in one call;
- the values go through :func:`pixel_frame`, the value rules of ``read_file_cells`` (declared
  nodata and out-of-range values missing, classes 0 when missing, environment, mask bits) on 1-D
  arrays: one row per cell and date, many dates at once for a series.

``tests/test_point_cells.py`` holds :func:`pixel_frame` equal, column by column, to
``read_file_cells`` on every cell of real files (with nodata, out-of-range values, absent bands);
the product tests hold the answers equal to produce's.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import threading
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ssm_spark.environments import environment, mask_bits
from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, FEATURE_BANDS, STATIC_BANDS, VALID_RANGES

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.grid import Grid
    from ssm_spark.sources.stacks import StackFile

__all__ = ["OpenFiles", "cell_values", "pixel_frame"]


class _Handle:
    __slots__ = ("src", "stamp", "lock", "nodata")

    def __init__(self, src, stamp: tuple) -> None:
        self.src, self.stamp, self.lock = src, stamp, threading.Lock()
        self.nodata = np.array([np.nan if v is None else float(v) for v in src.nodatavals])


class OpenFiles:
    """Open rasterio datasets by path, at most ``size`` (least recently used closed first).

    A dataset is re-opened when its file's stamp changed since it was opened (a re-exported tile):
    ``stamp(path)``, by default ``(mtime_ns, size)`` of a local file; on a store the object's
    (size, ETag) from its folder's kept listing (:class:`~ssm_spark.point.store.Listings`), so a
    kept dataset costs no request to be known current. Reads of one dataset are serialised by its
    lock (a GDAL dataset is not safe for concurrent reads); different files are read concurrently.
    ``size=0``: every read opens and closes its file (nothing kept).
    """

    def __init__(self, size: int = 128, stamp: Callable[[str], tuple] | None = None) -> None:
        self.size = max(0, int(size))
        self.stamp = stamp or _file_stamp
        self._open: "collections.OrderedDict[str, _Handle]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # datasets opened so far (tests, benchmarks)

    def _handle(self, path: str) -> _Handle:
        import rasterio

        stamp = self.stamp(path)
        with self._lock:
            h = self._open.get(path)
            if h is not None and h.stamp == stamp:
                self._open.move_to_end(path)
                return h
        h = _Handle(rasterio.open(path), stamp)
        self.opened += 1
        if not self.size:
            return h
        gone = []
        with self._lock:
            other = self._open.get(path)
            if other is not None and other.stamp == stamp:  # another thread opened it meanwhile: use that one
                gone.append(h)
                h = other
            else:
                if other is not None:
                    gone.append(self._open.pop(path))
                self._open[path] = h
                while len(self._open) > self.size:
                    gone.append(self._open.popitem(last=False)[1])
        for g in gone:
            _close(g)
        return h

    def read(self, path: str, row: int, col: int, indexes: Sequence[int]) -> np.ndarray:
        """float64 values of bands ``indexes`` (1-based) at pixel (``row``, ``col``) of the file, its
        declared nodata value (when not NaN) as NaN, as the stack reader's ``_read_band``."""
        from rasterio.windows import Window

        idx = list(indexes)
        if not idx:
            return np.empty(0)
        for _ in range(3):  # a handle closed by another thread (evicted, re-opened) between lookup and read
            h = self._handle(path)
            try:
                with h.lock:
                    if h.src.closed:
                        continue
                    a = h.src.read(idx, window=Window(int(col), int(row), 1, 1))[:, 0, 0].astype("f8")
                    break
            finally:
                if not self.size:
                    _close(h)
        else:  # evicted three times in a row (more concurrent files than places): a dataset of its own
            import rasterio

            with rasterio.open(path) as src:
                a = src.read(idx, window=Window(int(col), int(row), 1, 1))[:, 0, 0].astype("f8")
        nd = h.nodata[np.asarray(idx) - 1]
        a[np.isfinite(nd) & (a == nd)] = np.nan
        return a

    def close(self) -> None:
        with self._lock:
            for h in self._open.values():
                _close(h)
            self._open.clear()


def _file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _close(h: _Handle) -> None:
    with h.lock:
        if not h.src.closed:
            h.src.close()


def cell_values(files: OpenFiles, f: "StackFile", row: int, col: int) -> dict[str, float]:
    """The raw band values of global cell (``row``, ``col``) in stack file ``f`` and its static
    companions, as ``read_file_cells`` assembles them: bands of the stack file (static or class
    bands it holds included), those of the static files taking precedence; an absent band NaN."""
    r, c = int(row) - f.row_off, int(col) - f.col_off
    if not (0 <= r < f.height and 0 <= c < f.width):
        raise ValueError(f"cell (row {row}, col {col}) is outside {f.path}")
    out: dict[str, float] = {}
    have = [n for n in FEATURE_BANDS if n in f.bands]
    for n, v in zip(have, files.read(f.path, r, c, [f.bands[n] for n in have])):
        out[n] = float(v)
    for path, bands, names in ((f.static_path, f.static_bands, STATIC_BANDS),
                               (f.classes_path, f.class_bands, CLASS_BANDS)):
        got = [n for n in names if path and n in bands]
        for n, v in zip(got, files.read(path, r, c, [bands[n] for n in got]) if got else ()):
            out[n] = float(v)
    return out


def pixel_frame(values: Sequence[Mapping[str, float]], grid: "Grid", rows: Sequence[int], cols: Sequence[int],
                dates: Sequence[str], max_slope_deg: float | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Pixel rows (the stack reader's columns, :func:`~ssm_spark.sources.stacks.pixel_schema`) of
    cells' raw values, and which inputs became a row.

    Parameters
    ----------
    values : sequence of dict
        Per cell and date: band -> raw value (NaN or absent: missing).
    grid : Grid
    rows, cols, dates : sequences
        Global cell and ``YYYY-MM-DD`` date of each entry of ``values``.
    max_slope_deg : float, optional
        ``ingest.max_slope_deg``.

    Returns
    -------
    frame : pandas.DataFrame
        One row per entry with backscatter (VV or VH), in input order; as ``read_file_cells``:
        values outside :data:`~ssm_spark.sources.stacks.VALID_RANGES` and infinities missing,
        class bands 0 when missing, ``env`` and the mask bits in ``qc``.
    kept : ndarray of bool
        Which entries have a row (the others had no backscatter: no acquisition there).
    """
    n = len(values)
    cols_: dict[str, np.ndarray] = {}
    for name in FEATURE_BANDS:
        a = np.array([v.get(name, np.nan) for v in values], dtype="f8") if n else np.empty(0)
        cols_[name] = a
    for name in CLASS_BANDS:
        cols_[name] = np.where(np.isfinite(cols_[name]), cols_[name], 0)
    for name in DYNAMIC_BANDS + STATIC_BANDS:
        lo, hi = VALID_RANGES.get(name, (-np.inf, np.inf))
        a = cols_[name]
        bad = np.isinf(a) | (np.isfinite(a) & ((a < lo) | (a > hi)))
        a[bad] = np.nan
    kept = np.isfinite(cols_["vv_db"]) | np.isfinite(cols_["vh_db"])
    k = np.flatnonzero(kept)
    r = np.asarray(rows, dtype=np.int64)[k] if n else np.empty(0, np.int64)
    c = np.asarray(cols, dtype=np.int64)[k] if n else np.empty(0, np.int64)
    lon, lat = grid.to_lonlat(r, c)
    day = [dt.date.fromisoformat(dates[i]) for i in k]
    out = {
        "grid": np.full(k.size, grid.name, dtype=object),
        "tile_row": (r // grid.tile_size).astype("i4"), "tile_col": (c // grid.tile_size).astype("i4"),
        "row": r.astype("i4"), "col": c.astype("i4"),
        "lon": np.asarray(lon, dtype="f8").reshape(-1), "lat": np.asarray(lat, dtype="f8").reshape(-1),
        "date": np.array(day, dtype=object).reshape(-1),
    }
    for name in DYNAMIC_BANDS + STATIC_BANDS:
        out[name] = cols_[name][k]
    lc, cl = cols_["landcover"][k].astype("i4"), cols_["climate"][k].astype("i4")
    out["landcover"], out["climate"] = lc, cl
    out["env"] = environment(lc, np.where(cl > 0, cl, np.nan) if np.any(cl > 0) else None)
    out["qc"] = mask_bits(lc, out["lst_k"], out["slope_deg"], max_slope_deg).astype("i4")
    return pd.DataFrame(out), kept
