"""Where a point's inputs come from: local stacks, a product, or Earth Engine (one thin interface).

- :class:`StackSource`: a folder of ``<YYYY-MM-DD>/`` feature-stack GeoTIFFs (``static/`` beside it),
  each file checked against the grid by the stack reader's own :func:`~ssm_spark.sources.stacks.discover`
  (once per file and ``(mtime, size)``), the cell read by :mod:`ssm_spark.point.cells`. On a store
  (``s3://bucket/stacks``) the same, through GDAL's ``/vsis3/`` paths, the folders' listings kept
  (:class:`~ssm_spark.point.store.Listings`) and the stamp an object's (size, ETag).
- :class:`EarthEngineSource` (``--source ee``): the cell's bands sampled by Earth Engine
  (:mod:`ssm_spark.sources.earthengine.sample`), stored as float32 as an export would store them,
  through the same :func:`~ssm_spark.point.cells.pixel_frame`.
- :class:`ProductSource`: an existing product folder or URL (``produce``'s ``parquet/``), the cell's
  row read with row-group pruning, committed dates only; no physics runs (the product already holds
  the answer).

A pixel source answers ``pixel(row, col, date) -> (frame, where)`` and, for a series,
``pixels(row, col, dates) -> (frame, [(date, where, reason)])``: one frame for every date with an
acquisition (``reason`` None), in the order of ``dates``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import posixpath
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.point.cells import OpenFiles, cell_values, pixel_frame
from ssm_spark.point.errors import DATE_RE, NoAcquisitionError, OutsideCoverageError, StoreError, nearest
from ssm_spark.point.store import MISS_RELIST_S, Listings, read_cell_row, store_error, store_scope

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.grid import Grid
    from ssm_spark.sources.stacks import StackFile

log = logging.getLogger(__name__)

__all__ = ["PointSource", "StackSource", "ProductSource", "EarthEngineSource"]

Info = tuple[str, str | None, str | None]  # (date, where, reason it has no row)


class PointSource(Protocol):
    """Where a point's features come from (the physics and models are shared)."""

    name: str

    def dates(self) -> list[str]:
        """Dates with data (sorted ``YYYY-MM-DD``); empty when unknown (Earth Engine)."""

    def pixel(self, row: int, col: int, date: str) -> tuple[pd.DataFrame, str]:
        """The pixel row of a cell on a date (no row: no backscatter there) and where it came from.

        Raises
        ------
        OutsideCoverageError, NoAcquisitionError
        """

    def pixels(self, row: int, col: int, dates: Sequence[str]) -> tuple[pd.DataFrame, list[Info]]:
        """The pixel rows of a cell on many dates, and per date where it came from or why no row."""


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class StackSource:
    """Feature stacks in a folder or on a store (see the module docstring).

    Parameters
    ----------
    stacks : path or URL
        Folder of ``<YYYY-MM-DD>/`` folders of GeoTIFFs.
    grid : Grid
    static : path, optional
        Static layers (default: ``static/`` beside ``stacks`` when it exists).
    band_aliases : dict, optional
        ``ingest.band_aliases``.
    max_slope_deg : float, optional
        ``ingest.max_slope_deg``.
    open_files : int, default 256
        Datasets kept open (:class:`~ssm_spark.point.cells.OpenFiles`): their decoded blocks stay
        in GDAL's block cache (``GDAL_CACHEMAX``, default 5 % of the memory), so a cell of a file
        read before costs no decoding; 0: every read opens and closes its files.
    listing_ttl : float, optional
        On a store: seconds a folder's listing is trusted (default
        :data:`~ssm_spark.point.store.LIST_TTL_S`, ``SSM_POINT_LIST_TTL_S``, 30).

    Raises
    ------
    InputError
        No such folder (on a store: nothing under the URL); :class:`~ssm_spark.point.errors.StoreError`
        when the store refuses the listing (credentials) or fails.
    """

    name = "stacks"

    def __init__(self, stacks: str | os.PathLike, grid: "Grid", static: str | os.PathLike | None = None,
                 band_aliases: dict | None = None, max_slope_deg: float | None = None, open_files: int = 256,
                 listing_ttl: float | None = None) -> None:
        from ssm_spark import storage

        self.remote = storage.is_remote(stacks)
        self.grid = grid
        self.aliases = dict(band_aliases or {})
        self.max_slope_deg = max_slope_deg
        self._mtime = -1
        self._dates: list[str] = []
        if self.remote:  # read in place through GDAL's /vsis3/ paths; listings kept (point.store.Listings)
            storage.apply_gdal_env()
            self.root = storage.url_of(str(stacks)).rstrip("/")
            self._vroot = storage.gdal_path(self.root)
            self.listings = Listings(listing_ttl)
            if not self.listings.get(self._vroot):
                raise InputError(f"{self.root}: stacks folder not found on the store (nothing under it: check the "
                                 "bucket and prefix; expected <YYYY-MM-DD>/ folders of GeoTIFFs)")
            if static is None and "/" in storage.fs_path(self.root):  # not at a bucket's root: static/ beside it?
                parent, _ = posixpath.split(self.root)
                got = self.listings.get(storage.gdal_path(parent)).get("static")
                static = f"{parent}/static" if got is not None and got[0] else None
            self.static = storage.gdal_path(storage.url_of(str(static)).rstrip("/")) if static is not None else None
            self.files = OpenFiles(open_files, stamp=self.listings.stamp)
        else:
            self.root = Path(stacks)
            if not self.root.is_dir():
                raise InputError(f"{self.root}: stacks folder not found (expected <YYYY-MM-DD>/ folders of GeoTIFFs)")
            if static is None:
                cand = self.root.parent / "static"
                static = cand if cand.is_dir() else None
            self.static = Path(static) if static is not None else None
            self._vroot = str(self.root)
            self.files = OpenFiles(open_files)
        self._refresh()
        self._inv: dict[str, list] = {}  # date -> the checked files found so far
        self._stamps: dict[str, tuple] = {}  # path -> its stamp when checked
        self._rejected: dict[str, dict[str, dict]] = {}  # date -> file -> its quarantine record
        self._checked: dict[str, tuple] = {}  # on a store: date -> (its listing, every file's window) at a check
        self._lock = threading.Lock()

    def _scope(self):
        return store_scope() if self.remote else contextlib.nullcontext()

    def _where(self, date: str) -> str:
        return f"{self.root}/{date}" if self.remote else str(self.root / date)

    def _stamp(self, path: str) -> tuple:
        return self.listings.stamp(path) if self.remote else _stamp(path)

    def _refresh(self, miss: bool = False) -> None:
        """Re-list the date folders when the stacks folder changed (a service sees new dates); on a
        store: when the kept listing is older than its TTL, or (``miss``) a second old."""
        if self.remote:
            got = self.listings.get(self._vroot, max_age=MISS_RELIST_S if miss else None)
            self._dates = sorted(n for n, (is_dir, _) in got.items() if is_dir and DATE_RE.fullmatch(n))
            return
        m = self.root.stat().st_mtime_ns
        if m != self._mtime:
            self._dates = sorted(p.name for p in self.root.iterdir() if p.is_dir() and DATE_RE.fullmatch(p.name))
            self._mtime = m

    def dates(self) -> list[str]:
        self._refresh()
        return list(self._dates)

    def _discover(self, start: str, end: str, keep=None) -> None:
        """Check the files of dates ``[start, end]`` (those whose window ``keep`` accepts) and remember them."""
        from ssm_spark.sources.stacks import discover

        with self._scope():
            inv = discover(self._vroot, self.grid, self.static, self.aliases, start=dt.date.fromisoformat(start),
                           end=dt.date.fromisoformat(end), keep_window=keep)
        with self._lock:
            for f in inv.files:
                mine = self._inv.setdefault(f.date, [])
                if f not in mine:
                    mine[:] = [g for g in mine if g.path != f.path] + [f]
                try:
                    self._stamps[f.path] = self._stamp(f.path)
                except FileNotFoundError:  # gone since discover listed it: checked again at its next query
                    mine.remove(f)
            for q in inv.quarantine:
                self._rejected.setdefault(Path(q["file"]).parent.name, {})[q["file"]] = q

    def check_all(self) -> int:
        """Check every file of every date now (a service at start-up); the number of usable files."""
        ds = self.dates()
        if ds:
            self._discover(ds[0], ds[-1])
        with self._lock:
            return sum(len(v) for v in self._inv.values())

    def _known(self, row: int, col: int, date: str) -> "StackFile | None":
        with self._lock:
            known = list(self._inv.get(date, ()))
        for f in known:
            if f.row_off <= row < f.row_off + f.height and f.col_off <= col < f.col_off + f.width:
                try:
                    fresh = self._stamp(f.path) == self._stamps.get(f.path)
                except OSError:
                    fresh = False
                if fresh:
                    return f
                with self._lock:  # rewritten or removed since it was checked: check the date again
                    self._inv[date] = [g for g in self._inv.get(date, []) if g.path != f.path]
                return None
        return None

    def file(self, row: int, col: int, date: str, check: bool = True) -> "StackFile":
        """The checked stack file of the date holding the cell.

        Raises
        ------
        NoAcquisitionError
            No folder of that date (naming the nearest dates with one).
        OutsideCoverageError
            No usable file of the date holds the cell (naming a rejected file's reason).
        """
        if date not in self._dates:
            self._refresh(miss=True)
        if date not in self._dates:
            near = nearest(self._dates, date)
            raise NoAcquisitionError(
                f"no stacks dated {date} in {self.root} (no <{date}>/ folder); nearest dates with stacks: "
                f"{', '.join(near) if near else 'none'}", nearest=near, date=date)
        f = self._known(row, col, date)
        if f is None and check:  # check=False: the caller just checked the date
            if not self.remote:
                self._discover(date, date, _holds(row, col))
            else:  # a miss: the date's listing looked at again (at most once a second); unchanged since the
                # date was last checked and no file's window holds the cell: outside, no file opened again
                seen = tuple(sorted(self.listings.get(f"{self._vroot}/{date}", max_age=MISS_RELIST_S).items()))
                last = self._checked.get(date)
                if last is None or last[0] != seen or any(_holds(row, col)(w) for w in last[1]):
                    windows: list = []
                    holds = _holds(row, col)

                    def keep(win, windows=windows, holds=holds) -> bool:
                        windows.append(win)
                        return holds(win)

                    self._discover(date, date, keep)
                    self._checked[date] = (seen, windows)
            f = self._known(row, col, date)
        if f is not None:
            return f
        bad = list(self._rejected.get(date, {}).values())
        why = f"; {len(bad)} file(s) of that date were rejected, e.g. {bad[-1]['reason']}" if bad else ""
        raise OutsideCoverageError(f"cell (row {row}, col {col}) of grid {self.grid.name} is outside the stacks "
                                   f"of {date} in {self._where(date)}{why}", date=date)

    def values(self, row: int, col: int, date: str, check: bool = True) -> tuple[dict[str, float], str]:
        """The cell's raw band values on a date and the stack file they came from."""
        f = self.file(row, col, date, check)
        if not self.remote:
            return cell_values(self.files, f, row, col), f.path
        from rasterio.errors import RasterioError

        from ssm_spark import storage

        try:
            with store_scope():
                return cell_values(self.files, f, row, col), storage.url_of(f.path)
        except RasterioError as exc:  # rewritten or removed under its kept listing, or the store failing
            self.listings.forget(posixpath.dirname(f.path))
            with self._lock:
                self._inv[date] = [g for g in self._inv.get(date, []) if g.path != f.path]
            raise store_error(storage.url_of(f.path), f"read cell (row {row}, col {col})", exc) from exc

    def pixel(self, row: int, col: int, date: str) -> tuple[pd.DataFrame, str]:
        vals, where = self.values(row, col, date)
        px, _ = pixel_frame([vals], self.grid, [row], [col], [date], self.max_slope_deg)
        return px, where

    def pixels(self, row: int, col: int, dates: Sequence[str]) -> tuple[pd.DataFrame, list[Info]]:
        self._refresh()
        todo = [d for d in dates if d in self._dates and self._known(row, col, d) is None]
        if todo:  # one check of every date not seen yet (one pass, static companions checked once)
            self._discover(min(todo), max(todo), _holds(row, col))
        vals, days, info = [], [], []
        for d in dates:
            try:
                v, where = self.values(row, col, d, check=d not in todo)
            except (NoAcquisitionError, OutsideCoverageError) as exc:
                info.append((d, None, str(exc).split(";")[0]))
                continue
            vals.append(v)
            days.append(d)
            info.append((d, where, None))
        px, kept = pixel_frame(vals, self.grid, [row] * len(vals), [col] * len(vals), days, self.max_slope_deg)
        j = 0
        for i, (d, where, why) in enumerate(info):
            if why is None:
                if not kept[j]:
                    info[i] = (d, where, f"no backscatter at the cell in {where}")
                j += 1
        return px, info


def _holds(row: int, col: int):
    def keep(win: tuple[int, int, int, int]) -> bool:
        r0, c0, h, w = win
        return r0 <= row < r0 + h and c0 <= col < c0 + w
    return keep


class ProductSource:
    """An existing product (``ssm-spark produce``), a folder or a URL: the cell's row, read with
    row-group pruning, for committed dates only (``parquet/date=<d>/_SUCCESS.json`` exists).

    On a store (``s3://bucket/product``): the dates from one listing of ``parquet/`` and their
    markers (fetched together), both kept ``listing_ttl`` seconds (:data:`~ssm_spark.point.store.LIST_TTL_S`);
    a date not among them is looked up again (its marker, at most once a second). The cell's tile
    file is read in place (:func:`~ssm_spark.point.store.read_cell_row`): its size from the marker,
    its footer kept per marker version, one ranged read of the row group that holds the cell.
    """

    name = "product"

    def __init__(self, product: str | os.PathLike, grid: "Grid", listing_ttl: float | None = None) -> None:
        from ssm_spark import storage

        self.grid = grid
        self.remote = storage.is_remote(product)
        self.reads: dict[str, int] = {}  # on a store: requests and bytes of the tile reads (tests, benchmarks)
        if self.remote:
            url = storage.url_of(str(product)).rstrip("/")
            self.listings = Listings(listing_ttl)
            top = self.listings.get(url)
            if not top:
                raise InputError(f"{url}: product not found on the store (nothing under it: check the bucket and "
                                 "prefix; expected parquet/date=YYYY-MM-DD/)")
            self.root = f"{url}/parquet" if top.get("parquet", (False,))[0] else url
            self._markers: dict[str, tuple[float, dict | None]] = {}  # date -> (when fetched, marker or None)
            self._mlock = threading.Lock()
            self._listed = -1.0
            self._dates = []
            self._refresh()
            return
        root = Path(product)
        self.root = root / "parquet" if (root / "parquet").is_dir() else root
        if not self.root.is_dir():
            raise InputError(f"{product}: product folder not found (expected parquet/date=YYYY-MM-DD/)")
        self._dates = sorted(p.name.split("=", 1)[1] for p in self.root.glob("date=*")
                             if (p / "_SUCCESS.json").is_file())

    # -- a product on a store
    def _fetch_markers(self, dates: Sequence[str]) -> None:
        """GET the markers of ``dates`` together (None: no marker, the date is not committed)."""
        import json

        from ssm_spark import storage

        if not dates:
            return
        fs = self.listings.fs(self.root)
        paths = {storage.fs_path(f"{self.root}/date={d}/_SUCCESS.json"): d for d in dates}
        try:
            got = fs.cat(list(paths), on_error="return")
        except Exception as exc:  # noqa: BLE001
            raise store_error(self.root, "read its dates' markers", exc) from exc
        if not isinstance(got, dict):
            got = {next(iter(paths)): got}
        now = time.monotonic()
        out: dict[str, dict | None] = {}
        for p, d in paths.items():
            v = got.get(p, FileNotFoundError(p))
            if isinstance(v, FileNotFoundError):
                out[d] = None
            elif isinstance(v, BaseException):
                raise store_error(f"{self.root}/date={d}/_SUCCESS.json", "read it", v) from v
            else:
                try:
                    out[d] = json.loads(v)
                except ValueError:
                    out[d] = {}  # a marker is there (the date is committed); its content unreadable
        with self._mlock:
            for d, m in out.items():
                self._markers[d] = (now, m)

    def _refresh(self) -> None:
        """The committed dates again when the kept ones are older than the TTL: a listing, the markers."""
        if time.monotonic() - self._listed <= self.listings.ttl:
            return
        got = self.listings.get(self.root)
        cands = sorted(n.split("=", 1)[1] for n, (is_dir, _) in got.items()
                       if is_dir and n.startswith("date=") and DATE_RE.fullmatch(n.split("=", 1)[1]))
        self._fetch_markers(cands)
        with self._mlock:
            self._dates = sorted(d for d in cands if self._markers.get(d, (0, None))[1] is not None)
        self._listed = time.monotonic()

    def _marker(self, date: str) -> dict | None:
        """The date's marker (kept ``ttl`` seconds; a date without one asked again at most once a second)."""
        with self._mlock:
            got = self._markers.get(date)
        if got is None or time.monotonic() - got[0] > (self.listings.ttl if got[1] is not None else MISS_RELIST_S):
            self._fetch_markers([date])
            with self._mlock:
                got = self._markers[date]
                if got[1] is not None and date not in self._dates:
                    self._dates = sorted({*self._dates, date})  # committed since the service started
                elif got[1] is None and date in self._dates:
                    self._dates = [d for d in self._dates if d != date]  # no longer committed (being re-published)
        return got[1]

    def dates(self) -> list[str]:
        if self.remote:
            self._refresh()
        return list(self._dates)

    def row(self, row: int, col: int, date: str) -> tuple[dict, str]:
        tr, tc = int(row) // self.grid.tile_size, int(col) // self.grid.tile_size
        name = f"{self.grid.name}_{tr}_{tc}.parquet"
        if self.remote:
            return self._remote_row(row, col, date, name)
        import pyarrow.dataset as pads

        if date not in self._dates and (self.root / f"date={date}" / "_SUCCESS.json").is_file():
            self._dates = sorted({*self._dates, date})  # committed since the service started
        if date not in self._dates:
            near = nearest(self._dates, date)
            raise NoAcquisitionError(f"no complete product dated {date} in {self.root}; nearest product dates: "
                                     f"{', '.join(near) if near else 'none'}", nearest=near, date=date)
        path = self.root / f"date={date}" / name
        if not path.is_file():
            raise OutsideCoverageError(f"cell (row {row}, col {col}) is outside the product of {date} "
                                       f"(no tile file {path.name})", date=date)
        ds = pads.dataset(str(path), format="parquet")
        tab = ds.to_table(filter=(pads.field("row") == int(row)) & (pads.field("col") == int(col)))
        if tab.num_rows == 0:
            raise NoAcquisitionError(f"no product row for cell (row {row}, col {col}) on {date} in {path} "
                                     "(outside the product's region, or no acquisition there that date)", date=date)
        return tab.slice(0, 1).to_pylist()[0], str(path)

    def _remote_row(self, row: int, col: int, date: str, name: str) -> tuple[dict, str]:
        import hashlib
        import json

        marker = self._marker(date)
        if marker is None:
            near = nearest(self.dates(), date)
            raise NoAcquisitionError(f"no complete product dated {date} in {self.root}; nearest product dates: "
                                     f"{', '.join(near) if near else 'none'}", nearest=near, date=date)
        rel = f"parquet/date={date}/{name}"
        outputs = marker.get("outputs") if isinstance(marker.get("outputs"), dict) else None
        path = f"{self.root}/date={date}/{name}"
        if outputs is not None and rel not in outputs:
            raise OutsideCoverageError(f"cell (row {row}, col {col}) is outside the product of {date} "
                                       f"(no tile file {name})", date=date)
        size = outputs.get(rel) if outputs is not None else None
        version = hashlib.sha256(json.dumps(marker, sort_keys=True, default=str).encode()).hexdigest()[:16]
        try:
            got = read_cell_row(self.listings.fs(path), path, size, version, row, col, self.reads)
        except StoreError:
            if outputs is None:  # an old marker without its outputs: the tile may just not exist
                from ssm_spark import storage

                if not storage.exists(path):
                    raise OutsideCoverageError(f"cell (row {row}, col {col}) is outside the product of {date} "
                                               f"(no tile file {name})", date=date) from None
            raise
        if got is None:
            raise NoAcquisitionError(f"no product row for cell (row {row}, col {col}) on {date} in {path} "
                                     "(outside the product's region, or no acquisition there that date)", date=date)
        return got, path


class EarthEngineSource:
    """The cell's feature bands sampled by Earth Engine (see the module docstring).

    ``client`` is the thin live interface (:class:`ssm_spark.sources.earthengine.client.EEClient`:
    ``get_info``), replaced by a recorded-response fake in the tests.
    """

    name = "ee"

    def __init__(self, cfg: "Config", grid: "Grid", client: Any = None) -> None:
        from ssm_spark.sources.earthengine.client import EEClient

        self.cfg = cfg
        self.grid = grid
        self.client = client if client is not None else EEClient.connect(cfg.earthengine)

    def dates(self) -> list[str]:
        return []

    def pixel(self, row: int, col: int, date: str) -> tuple[pd.DataFrame, str]:
        from ssm_spark.sources.earthengine.sample import as_stored, sample_cells, scene_dates

        values = sample_cells(self.client, self.cfg.earthengine, self.grid, [(int(row), int(col))], date)[0]
        if values is None or not any(values.get(b) is not None and np.isfinite(values[b]) for b in ("vv_db", "vh_db")):
            d = dt.date.fromisoformat(date)
            around = scene_dates(self.client, self.cfg.earthengine, self.grid, row, col, d - dt.timedelta(days=36),
                                 d + dt.timedelta(days=36))
            near = nearest([x for x in around if x != date], date)
            raise NoAcquisitionError(f"Earth Engine has no Sentinel-1 acquisition over cell (row {row}, col {col}) "
                                     f"on {date}; nearest dates with one: {', '.join(near) if near else 'none'}",
                                     nearest=near, date=date)
        px, _ = pixel_frame([as_stored(values)], self.grid, [row], [col], [date], self.cfg.ingest.max_slope_deg)
        return px, "earthengine"

    def pixels(self, row: int, col: int, dates: Sequence[str]) -> tuple[pd.DataFrame, list[Info]]:
        """Every date of ``dates`` with a Sentinel-1 scene over the cell, sampled in batched requests
        (:func:`~ssm_spark.sources.earthengine.sample.sample_series`); dates without a scene are no
        dates of the series (as dates without a stack folder), those with one but no value skipped."""
        from ssm_spark.sources.earthengine.sample import as_stored, sample_series

        got = sample_series(self.client, self.cfg.earthengine, self.grid, int(row), int(col), dates)
        vals, days, info = [], [], []
        for d in sorted(got):
            v = got[d]
            if v is None:
                info.append((d, None, "a Sentinel-1 scene, but no value sampled at the cell by Earth Engine"))
                continue
            vals.append(as_stored(v))
            days.append(d)
            info.append((d, "earthengine", None))
        px, kept = pixel_frame(vals, self.grid, [row] * len(vals), [col] * len(vals), days,
                               self.cfg.ingest.max_slope_deg)
        j = 0
        for i, (d, where, why) in enumerate(info):
            if why is None:
                if not kept[j]:
                    info[i] = (d, None, "no backscatter at the cell in Earth Engine's sample")
                j += 1
        return px, info
