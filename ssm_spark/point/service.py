"""Point retrieval: SSM at (lat, lon, date) in milliseconds, without Spark.

The answer goes through exactly the code of ``ssm-spark produce`` on a one-pixel input:

    source -> pixel row of the cell (:func:`ssm_spark.sources.stacks.read_file_cells`, the reader of
    produce's tasks: value ranges, environment, mask bits) -> with a change-detection registry, the
    cell's climatology (:meth:`ClimatologyStack.attach`, as produce's ``read_clipped``) -> product row
    (:func:`ssm_spark.product.produce.predict_rows`: :meth:`Registry.predict` with the registry's
    WCM parameters and the model selected for the environment, QC bits)

so a point answer equals the product's Parquet value for the same cell and date (a test holds it
to 1e-6). The features shown beside it are the same ``add_physics`` the registry runs.

Sources (:class:`PointSource`, one thin interface):

- :class:`StackSource`: a folder of ``<YYYY-MM-DD>/`` feature-stack GeoTIFFs (``static/`` beside it),
  checked against the grid by the stack reader's own :func:`~ssm_spark.sources.stacks.discover`.
- :class:`EarthEngineSource` (``--source ee``): the cell's bands sampled by Earth Engine
  (:mod:`ssm_spark.sources.earthengine`), written as a 1 x 1 GeoTIFF on the grid in GDAL's memory
  file system and read by the same reader.
- :class:`ProductSource`: an existing product folder (``produce``'s ``parquet/``), the cell's row
  read with row-group pruning; no physics runs (the product already holds the answer).

Errors (:class:`PointError`, an :class:`~ssm_spark.errors.InputError`; the CLI exits 2): a point
outside the grid or the source's coverage (:class:`OutsideCoverageError`), a date with no acquisition
(:class:`NoAcquisitionError`, naming the nearest dates that have one) and a cell without an estimate
(:class:`MaskedCellError`, naming the QC bits, e.g. ``MASKED_WATER``).

Python::

    from ssm_spark.point import PointService
    svc = PointService(cfg, "out/demo/models", stacks="out/demo/sim/stacks")
    svc.point(44.0, 2.5, "2024-05-01")["ssm"]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import datetime as dt
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import pandas as pd

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import GridError, InputError
from ssm_spark.physics.qc import describe as describe_qc

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.grid import Grid
    from ssm_spark.models.registry import Registry
    from ssm_spark.sources.stacks import StackFile

log = logging.getLogger(__name__)

__all__ = ["PointError", "OutsideCoverageError", "NoAcquisitionError", "MaskedCellError", "PointSource",
           "StackSource", "ProductSource", "EarthEngineSource", "PointService", "parse_date", "add_arguments",
           "run"]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Longest series one call answers (days between start and end, inclusive).
MAX_SERIES_DAYS = 400


# ------------------------------------------------------------------------------------------- errors


class PointError(InputError):
    """A point query that cannot be answered (the message says why)."""

    status = 400

    def __init__(self, message: str, **info: Any) -> None:
        super().__init__(message)
        self.info = info


class OutsideCoverageError(PointError):
    """The point is outside the grid, or no stack file of the date covers its cell."""

    status = 404


class NoAcquisitionError(PointError):
    """No acquisition at the cell on that date (``info["nearest"]``: the nearest dates with one)."""

    status = 404


class MaskedCellError(PointError):
    """The cell has no estimate (masked: water, built-up, snow/ice, frozen, steep; or no usable input).

    ``info["result"]`` is the full answer (QC bits, environment, features) with null estimates.
    """

    status = 422


def parse_date(value: Any, what: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` date, else :class:`PointError` naming the parameter."""
    if isinstance(value, dt.date):
        return value
    s = str(value).strip()
    if not _DATE.match(s):
        raise PointError(f"{what} {s[:40]!r}: expected a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise PointError(f"{what} {s!r}: not a calendar date ({exc})") from exc


def _check_latlon(lat: Any, lon: Any) -> tuple[float, float]:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise PointError(f"lat {lat!r}, lon {lon!r}: expected numbers in degrees") from exc
    if not (math.isfinite(la) and math.isfinite(lo)):
        raise PointError(f"lat {lat!r}, lon {lon!r}: not finite numbers")
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
        raise PointError(f"lat {la}, lon {lo}: outside [-90, 90] x [-180, 180] degrees (lat, lon swapped?)")
    return la, lo


def _nearest(dates: Sequence[str], day: str, k: int = 2) -> list[str]:
    """Up to ``k`` dates before and ``k`` after ``day`` in the sorted list ``dates``."""
    i = bisect.bisect_left(dates, day)
    return list(dates[max(0, i - k):i]) + [d for d in dates[i:i + k + 1] if d != day][:k]


# ------------------------------------------------------------------------------------------ sources


class PointSource(Protocol):
    """Where a point's features come from (one thin interface; the physics and models are shared)."""

    name: str

    def dates(self) -> list[str]:
        """Dates with data (sorted ``YYYY-MM-DD``); may be empty when unknown (Earth Engine)."""

    def pixel(self, row: int, col: int, date: str) -> tuple[pd.DataFrame, str]:
        """The pixel row of a cell on a date, as :func:`read_file_cells` gives it, and where it came from.

        Raises
        ------
        OutsideCoverageError, NoAcquisitionError
        """


class StackSource:
    """Feature stacks on disk, read with the stack reader of ``produce`` (see the module docstring).

    Parameters
    ----------
    stacks : path
        Folder of ``<YYYY-MM-DD>/`` folders of GeoTIFFs.
    grid : Grid
    static : path, optional
        Static layers (default: ``static/`` beside ``stacks`` when it exists).
    band_aliases : dict, optional
        ``ingest.band_aliases``.
    max_slope_deg : float, optional
        ``ingest.max_slope_deg``.
    cache_files : int, default 0
        Keep this many files' pixel tables in memory (a service answering many points of the same
        tiles and dates: a file's table is read whole at its second query, then kept, least
        recently used out); 0: read only the queried cell. The checked files are remembered
        either way (a file is checked once per source).
    """

    name = "stacks"

    def __init__(self, stacks: str | os.PathLike, grid: "Grid", static: str | os.PathLike | None = None,
                 band_aliases: dict | None = None, max_slope_deg: float | None = None, cache_files: int = 0) -> None:
        self.root = Path(stacks)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: stacks folder not found (expected <YYYY-MM-DD>/ folders of GeoTIFFs)")
        if static is None:
            cand = self.root.parent / "static"
            static = cand if cand.is_dir() else None
        self.static = Path(static) if static is not None else None
        self.grid = grid
        self.aliases = dict(band_aliases or {})
        self.max_slope_deg = max_slope_deg
        self.cache_files = int(cache_files)
        self._mtime = -1
        self._dates: list[str] = []
        self._refresh()
        self._inv: dict[str, list] = {}  # date -> the checked files found so far
        self._frames: "collections.OrderedDict[str, pd.DataFrame]" = collections.OrderedDict()
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        """Re-list the date folders when the stacks folder changed (a service sees new dates)."""
        m = self.root.stat().st_mtime_ns
        if m != self._mtime:
            self._dates = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _DATE.match(p.name))
            self._mtime = m

    def dates(self) -> list[str]:
        self._refresh()
        return list(self._dates)

    def _file(self, row: int, col: int, date: str) -> "StackFile":
        """The checked stack file of the date holding the cell: :func:`discover` (the produce check:
        grid, bands, static companions) of the file whose window holds it, remembered per date."""
        from ssm_spark.sources.stacks import discover

        if date not in self._dates:
            self._refresh()
        if date not in self._dates:
            near = _nearest(self._dates, date)
            raise NoAcquisitionError(
                f"no stacks dated {date} in {self.root} (no <{date}>/ folder); nearest dates with stacks: "
                f"{', '.join(near) if near else 'none'}", nearest=near, date=date)

        def holds(f) -> bool:
            return f.row_off <= row < f.row_off + f.height and f.col_off <= col < f.col_off + f.width

        with self._lock:
            known = list(self._inv.get(date, ()))
        for f in known:
            if holds(f):
                return f

        def window_holds(win: tuple[int, int, int, int]) -> bool:
            r0, c0, h, w = win
            return r0 <= row < r0 + h and c0 <= col < c0 + w

        day = dt.date.fromisoformat(date)
        inv = discover(self.root, self.grid, self.static, self.aliases, start=day, end=day, keep_window=window_holds)
        with self._lock:
            mine = self._inv.setdefault(date, [])
            mine.extend(f for f in inv.files if f not in mine)
        for f in inv.files:
            if holds(f):
                return f
        bad = [q for q in inv.quarantine if Path(q["file"]).parent.name == date]
        why = f"; {len(bad)} file(s) of that date were rejected, e.g. {bad[0]['reason']}" if bad else ""
        raise OutsideCoverageError(f"cell (row {row}, col {col}) of grid {self.grid.name} is outside the stacks "
                                   f"of {date} in {self.root / date}{why}", date=date)

    def pixel(self, row: int, col: int, date: str, keep: bool = True) -> tuple[pd.DataFrame, str]:
        """``keep=False``: use a kept table but read no file whole (a series touches each file once)."""
        from ssm_spark.sources.stacks import read_file_cells

        f = self._file(row, col, date)
        if not self.cache_files:
            px = read_file_cells(f, self.grid, self.max_slope_deg, cells=np.array([[row, col]], dtype=np.int64))
            return px, f.path
        with self._lock:
            frame = self._frames.get(f.path)
            if frame is not None:
                self._frames.move_to_end(f.path)
            elif keep:  # a file's whole table is read and kept from its second query on
                self._hits[f.path] = self._hits.get(f.path, 0) + 1
                if len(self._hits) > 64 * self.cache_files:
                    self._hits.clear()
            once = not keep or self._hits.get(f.path, 0) < 2
        if frame is None and once:
            px = read_file_cells(f, self.grid, self.max_slope_deg, cells=np.array([[row, col]], dtype=np.int64))
            return px, f.path
        if frame is None:
            frame = read_file_cells(f, self.grid, self.max_slope_deg)
            with self._lock:
                self._frames[f.path] = frame
                while len(self._frames) > self.cache_files:
                    self._frames.popitem(last=False)
        hit = np.flatnonzero((frame["row"].to_numpy() == row) & (frame["col"].to_numpy() == col))
        return frame.iloc[hit].reset_index(drop=True), f.path


class ProductSource:
    """An existing product folder (``ssm-spark produce``): the cell's row, read with row-group pruning."""

    name = "product"

    def __init__(self, product: str | os.PathLike, grid: "Grid") -> None:
        root = Path(product)
        self.root = root / "parquet" if (root / "parquet").is_dir() else root
        if not self.root.is_dir():
            raise InputError(f"{product}: product folder not found (expected parquet/date=YYYY-MM-DD/)")
        self.grid = grid
        self._dates = sorted(p.name.split("=", 1)[1] for p in self.root.glob("date=*")
                             if (p / "_SUCCESS.json").is_file())

    def dates(self) -> list[str]:
        return list(self._dates)

    def row(self, row: int, col: int, date: str) -> tuple[dict, str]:
        import pyarrow.dataset as pads

        if date not in self._dates and (self.root / f"date={date}" / "_SUCCESS.json").is_file():
            self._dates = sorted({*self._dates, date})  # committed since the service started
        if date not in self._dates:
            near = _nearest(self._dates, date)
            raise NoAcquisitionError(f"no complete product dated {date} in {self.root}; nearest product dates: "
                                     f"{', '.join(near) if near else 'none'}", nearest=near, date=date)
        tr, tc = int(row) // self.grid.tile_size, int(col) // self.grid.tile_size
        path = self.root / f"date={date}" / f"{self.grid.name}_{tr}_{tc}.parquet"
        if not path.is_file():
            raise OutsideCoverageError(f"cell (row {row}, col {col}) is outside the product of {date} "
                                       f"(no tile file {path.name})", date=date)
        ds = pads.dataset(str(path), format="parquet")
        tab = ds.to_table(filter=(pads.field("row") == int(row)) & (pads.field("col") == int(col)))
        if tab.num_rows == 0:
            raise NoAcquisitionError(f"no product row for cell (row {row}, col {col}) on {date} in {path} "
                                     "(outside the product's region, or no acquisition there that date)", date=date)
        return tab.slice(0, 1).to_pylist()[0], str(path)


class EarthEngineSource:
    """The cell's feature bands sampled by Earth Engine, read by the stack reader as a 1 x 1 GeoTIFF.

    The sampling itself is :func:`ssm_spark.sources.earthengine.sample.sample_cells` (request builders
    of :mod:`ssm_spark.sources.earthengine.requests`); ``client`` is the thin live interface
    (:class:`ssm_spark.sources.earthengine.client.EEClient`), replaceable in tests.
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
        from ssm_spark.sources.earthengine.sample import sample_cells

        values = sample_cells(self.client, self.cfg.earthengine, self.grid, [(int(row), int(col))], date)[0]
        if values is None or not any(values.get(b) is not None and np.isfinite(values[b]) for b in ("vv_db", "vh_db")):
            near = self.client.acquisition_dates(self.cfg.earthengine, self.grid, row, col, date)
            raise NoAcquisitionError(f"Earth Engine has no Sentinel-1 acquisition over cell (row {row}, col {col}) "
                                     f"on {date}; nearest dates with one: {', '.join(near) if near else 'none'}",
                                     nearest=near, date=date)
        return one_cell_pixel(values, self.grid, row, col, date, self.cfg.ingest.max_slope_deg), "earthengine"


def one_cell_pixel(values: dict[str, float], grid: "Grid", row: int, col: int, date: str,
                   max_slope_deg: float | None) -> pd.DataFrame:
    """A cell's band values -> its pixel row through the stack reader (a 1 x 1 GeoTIFF on the grid,
    in GDAL's memory file system), so values from anywhere get the same ranges, environment and masks."""
    import rasterio
    import rasterio.shutil
    from affine import Affine

    from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS, StackFile, read_file_cells

    transform = grid.transform * Affine.translation(col, row)
    paths: dict[str, tuple[str, dict]] = {}
    tag = uuid.uuid4().hex
    try:
        for kind, names, dtype in (("stack", DYNAMIC_BANDS, "float32"), ("static", STATIC_BANDS, "float32"),
                                   ("classes", CLASS_BANDS, "uint8")):
            have = [n for n in names if n in values and values[n] is not None]
            if not have:
                continue
            p = f"/vsimem/ssm_point_{tag}_{kind}.tif"
            nodata = 0 if dtype == "uint8" else float("nan")
            with rasterio.open(p, "w", driver="GTiff", width=1, height=1, count=len(have), dtype=dtype,
                               crs=grid.crs, transform=transform, nodata=nodata) as dst:
                for i, n in enumerate(have, 1):
                    v = values[n]
                    v = nodata if v is None or not np.isfinite(v) else v
                    dst.write(np.array([[v]], dtype=dtype), i)
                    dst.set_band_description(i, n)
            paths[kind] = (p, {n: i for i, n in enumerate(have, 1)})
        if "stack" not in paths:
            raise InputError(f"cell (row {row}, col {col}) on {date}: no dynamic band sampled")
        f = StackFile(date, paths["stack"][0], int(row), int(col), 1, 1, paths["stack"][1],
                      static_path=paths.get("static", (None, {}))[0], static_bands=paths.get("static", (None, {}))[1],
                      classes_path=paths.get("classes", (None, {}))[0], class_bands=paths.get("classes", (None, {}))[1])
        return read_file_cells(f, grid, max_slope_deg)
    finally:
        for p, _ in paths.values():
            try:
                rasterio.shutil.delete(p)
            except Exception:  # noqa: BLE001 - a memory file that was never completed
                pass


# ------------------------------------------------------------------------------------------ service


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _needs_climatology(cfg: "Config", registry: "Registry") -> bool:
    """True when produce would attach a change-detection climatology to the rows (the registry has
    a change-detection calibration and ``physics.change_detection.enabled``)."""
    from collections.abc import Mapping

    cdc = getattr(getattr(cfg, "physics", None), "change_detection", None)
    wcm = registry.wcm_params
    return bool(cdc is not None and cdc.enabled and isinstance(wcm, Mapping) and wcm.get("cd") is not None)


def _find_climatology(cfg: "Config", grid: "Grid", registry: "Registry", places: Sequence[Any]):
    """The climatology stack ``produce`` built for this configuration (``DIR/<key>/``), from the first of
    ``places`` (a climatology folder ``DIR`` or ``DIR/<key>``) that holds it.

    Raises
    ------
    InputError
        None found: the models of this registry need it (naming where it was looked for).
    """
    from ssm_spark.product.climatology import ClimatologyStack, climatology_key

    key = climatology_key(cfg, grid)
    looked = []
    for place in places:
        if not place:
            continue
        d = Path(place)
        for folder in (d / key, d):
            looked.append(str(folder))
            if folder.name == key and (folder / "climatology.json").is_file():
                tiles = set()
                for t in folder.glob(f"{grid.name}_*_*.tif"):
                    parts = t.stem[len(grid.name) + 1:].split("_")
                    if len(parts) == 2 and all(p.isdigit() for p in parts):
                        tiles.add((int(parts[0]), int(parts[1])))
                log.info("point: change-detection climatology %s (%d tiles)", folder, len(tiles))
                return ClimatologyStack(str(folder), key, "", grid, frozenset(tiles))
    raise InputError(f"registry {registry.manifest_id} uses change detection: its models need each cell's "
                     f"climatology, built by 'ssm-spark produce' into OUTPUT/climatology/{key}/ "
                     f"(produce.climatology_dir); give --climatology DIR (looked in: {', '.join(looked) or 'nowhere'})")


class _Recorder:
    """The registry as :func:`predict_rows` sees it, keeping the frame :meth:`Registry.predict`
    returned (its physics features), so a point shows the features its answer used without
    computing them twice."""

    def __init__(self, registry: "Registry") -> None:
        self.registry = registry
        self.last: pd.DataFrame | None = None

    def predict(self, df: pd.DataFrame, **kw: Any) -> pd.DataFrame:
        self.last = self.registry.predict(df, **kw)
        return self.last


class PointService:
    """Point and series answers from a registry (loaded once) and one source.

    Parameters
    ----------
    cfg : Config
        ``grid`` and ``ingest`` sections (as for ``produce``); ``earthengine`` for ``source="ee"``.
    models : path-like or Registry
        Model registry folder (``ssm-spark train``), or an open :class:`Registry`.
    stacks : path-like, optional
        Feature-stack folder (the default source).
    static : path-like, optional
        Static layers (default: ``static/`` beside ``stacks``).
    product : path-like, optional
        An existing product folder, used instead of stacks for dates it holds.
    source : str, optional
        ``"ee"`` (Earth Engine), or a path: a product folder (has ``parquet/`` or ``product.json``)
        or a stacks folder. Overrides ``stacks``/``product``.
    cache_files : int, default 0
        Pixel tables of this many stack files kept in memory (:class:`StackSource`).
    ee_client : optional
        The Earth Engine client for ``source="ee"`` (tests inject a fake one).
    climatology : path-like, optional
        For a registry with change detection: the climatology folder ``produce`` built
        (``OUTPUT/climatology``; default: the product's, else ``produce.climatology_dir``); its
        ``clim_*`` columns are attached to the pixel rows exactly as in produce.

    Raises
    ------
    ModelRegistryError, InputError
    """

    def __init__(self, cfg: "Config", models: Any, stacks: str | os.PathLike | None = None, *,
                 static: str | os.PathLike | None = None, product: str | os.PathLike | None = None,
                 source: str | None = None, cache_files: int = 0, ee_client: Any = None,
                 climatology: str | os.PathLike | None = None) -> None:
        from ssm_spark.models.registry import Registry, load_registry

        t0 = time.perf_counter()
        self.cfg = cfg
        self.grid = cfg.grid.build()
        self.registry: Registry = models if isinstance(models, Registry) else load_registry(models)
        self.registry.warm()
        if source is not None:
            if source == "ee":
                stacks, product = None, None
            else:
                p = Path(source)
                if (p / "product.json").is_file() or (p / "parquet").is_dir():
                    stacks, product = None, p
                else:
                    stacks, product = p, None
        self.stacks: PointSource | None = None
        if source == "ee":
            self.stacks = EarthEngineSource(cfg, self.grid, ee_client)
        elif stacks is not None:
            self.stacks = StackSource(stacks, self.grid, static, cfg.ingest.band_aliases, cfg.ingest.max_slope_deg,
                                      cache_files=cache_files)
        self.product = ProductSource(product, self.grid) if product is not None else None
        if self.stacks is None and self.product is None:
            raise InputError("point: give a source (--stacks PATH, --product PATH or --source ee|PATH)")
        self.climatology = None
        if self.stacks is not None and _needs_climatology(cfg, self.registry):
            self.climatology = _find_climatology(cfg, self.grid, self.registry, [climatology, product and
                                                 Path(product) / "climatology", cfg.produce.climatology_dir])
        self.load_seconds = time.perf_counter() - t0

    # -- information
    def health(self) -> dict:
        srcs = [s.name for s in (self.stacks, self.product) if s is not None]
        return {"status": "ok", "manifest_id": self.registry.manifest_id, "grid": self.grid.name,
                "sources": srcs, "dates": len(self.dates()), "load_seconds": round(self.load_seconds, 3)}

    def dates(self) -> list[str]:
        out: set[str] = set()
        for s in (self.stacks, self.product):
            if s is not None:
                out.update(s.dates())
        return sorted(out)

    def cell(self, lat: Any, lon: Any) -> tuple[int, int, float, float]:
        """(row, col, lat, lon) of a point, or :class:`OutsideCoverageError` outside the grid."""
        la, lo = _check_latlon(lat, lon)
        try:
            r, c = self.grid.to_cell(lo, la)
        except GridError as exc:
            raise OutsideCoverageError(f"lat {la}, lon {lo} is outside grid {self.grid.name} ({exc})") from exc
        return int(r), int(c), la, lo

    # -- answers
    def _features(self, px: pd.DataFrame, phys: pd.DataFrame) -> dict:
        """Raw inputs of the pixel row and the physics features the registry computed for it."""
        from ssm_spark.models import candidates
        from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS

        out = {b: _num(px[b].iloc[0]) for b in DYNAMIC_BANDS + STATIC_BANDS if b in px}
        out.update({b: int(px[b].iloc[0]) for b in CLASS_BANDS if b in px})
        out.update({c: _num(phys[c].iloc[0]) for c in candidates.PHYSICS_FEATURES if c in phys})
        return out

    def _answer(self, pr: dict, lat: float, lon: float, date: str, source: str, where: str,
                features: dict | None, t0: float) -> dict:
        qc = int(pr["qc"])
        mid = pr.get("model_id")
        parts = mid.split("/") if isinstance(mid, str) else []
        lon_c, lat_c = self.grid.to_lonlat(int(pr["row"]), int(pr["col"]))
        return {
            "lat": lat, "lon": lon, "date": date,
            "ssm": _num(pr["ssm"]), "ssm_p05": _num(pr["ssm_p05"]), "ssm_p95": _num(pr["ssm_p95"]),
            "units": "m3/m3", "qc": qc, "qc_flags": describe_qc(qc), "masked": bool(qc & MASK_BITS),
            "env": pr.get("env"), "unit": parts[1] if len(parts) == 3 else None,
            "candidate": parts[2] if len(parts) == 3 else None, "model_id": mid,
            "manifest_id": self.registry.manifest_id,
            "cell": {"grid": self.grid.name, "row": int(pr["row"]), "col": int(pr["col"]),
                     "tile_row": int(pr["tile_row"]), "tile_col": int(pr["tile_col"]),
                     "lon": round(float(lon_c), 7), "lat": round(float(lat_c), 7)},
            "features": features, "source": source, "file": where,
            "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def point(self, lat: Any, lon: Any, date: Any, *, strict: bool = True) -> dict:
        """SSM at a point on a date (see the module docstring for the code path).

        Parameters
        ----------
        lat, lon : float
            Degrees (WGS84).
        date : str or date
            ``YYYY-MM-DD``.
        strict : bool, default True
            Raise :class:`MaskedCellError` when the cell has no estimate; False: return the answer
            with null estimates and the QC bits.

        Returns
        -------
        dict
            ``ssm, ssm_p05, ssm_p95`` (m3/m3), ``qc`` and ``qc_flags``, ``env``, ``candidate``,
            ``model_id``, ``manifest_id``, ``cell`` (grid, row, col, tile, centre), ``features`` (raw
            inputs and coupled physics; null from a product), ``source``, ``file``, ``elapsed_ms``.

        Raises
        ------
        PointError
            Bad parameters; :class:`OutsideCoverageError`, :class:`NoAcquisitionError`,
            :class:`MaskedCellError`.
        """
        from ssm_spark.product.produce import predict_rows

        t0 = time.perf_counter()
        day = parse_date(date).isoformat()
        row, col, la, lo = self.cell(lat, lon)
        if self.product is not None and (self.stacks is None or day in self.product.dates()):
            pr, where = self.product.row(row, col, day)
            ans = self._answer(pr, la, lo, day, "product", where, None, t0)
        else:
            px, where = self.stacks.pixel(row, col, day)
            if len(px) == 0:
                near = self._nearest_with_data(row, col, day)
                raise NoAcquisitionError(f"no acquisition at lat {la}, lon {lo} (cell row {row}, col {col}) on {day}: "
                                         f"no backscatter there in {where}; nearest dates with one: "
                                         f"{', '.join(near) if near else 'none found'}", nearest=near, date=day)
            if self.climatology is not None:  # as produce's read_clipped: the cell's change-detection climatology
                px = self.climatology.attach(px)
            rec = _Recorder(self.registry)
            pr = predict_rows(px, rec).iloc[0].to_dict()  # produce's own function, on one row
            ans = self._answer(pr, la, lo, day, self.stacks.name, where, self._features(px, rec.last), t0)
        if strict and ans["ssm"] is None:
            flags = ans["qc_flags"]
            masks = [f for f in flags if f.startswith("MASKED") or f in ("FROZEN", "STEEP_SLOPE")]
            why = (f"masked: QC {ans['qc']} = {' | '.join(masks)}" if masks else
                   f"no estimate from {ans['model_id'] or 'the served model'}: QC {ans['qc']} = "
                   f"{' | '.join(flags) or 'no bit set'}")
            raise MaskedCellError(f"lat {la}, lon {lo} (cell row {row}, col {col}, env {ans['env']}) on {day}: {why}",
                                  result=ans, date=day)
        return ans

    def _nearest_with_data(self, row: int, col: int, day: str, k: int = 2, tries: int = 8) -> list[str]:
        """The nearest dates (up to ``k`` each side, looking at most ``tries`` dates away) with backscatter
        at the cell."""
        dates = [d for d in self.dates() if d != day]
        i = bisect.bisect_left(dates, day)
        found: list[str] = []
        for side in (range(i - 1, max(-1, i - 1 - tries), -1), range(i, min(len(dates), i + tries))):
            n = 0
            for j in side:
                try:
                    px, _ = self.stacks.pixel(row, col, dates[j])
                except PointError:
                    continue
                if len(px):
                    found.append(dates[j])
                    n += 1
                    if n == k:
                        break
        return sorted(found)

    def series(self, lat: Any, lon: Any, start: Any, end: Any, *, max_days: int = MAX_SERIES_DAYS) -> dict:
        """Every date with data between ``start`` and ``end`` (inclusive) at a point.

        Returns
        -------
        dict
            ``points``: answers (as :meth:`point`, masked dates included with null estimates and
            their QC), ``skipped``: ``{date, reason}`` of dates without an acquisition at the cell.

        Raises
        ------
        PointError
            Bad parameters, ``end`` before ``start``, a range longer than ``max_days``, a point
            outside the grid.
        """
        t0 = time.perf_counter()
        d0, d1 = parse_date(start, "start"), parse_date(end, "end")
        if d1 < d0:
            raise PointError(f"end {d1} is before start {d0}")
        if (d1 - d0).days + 1 > max_days:
            raise PointError(f"start {d0} .. end {d1} spans {(d1 - d0).days + 1} days; at most {max_days} per series")
        row, col, la, lo = self.cell(lat, lon)
        days = [d for d in self.dates() if d0.isoformat() <= d <= d1.isoformat()]
        if isinstance(self.stacks, EarthEngineSource):
            days = [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]
        from ssm_spark.product.produce import predict_rows

        points, skipped, batch = [], [], []
        for d in days:
            try:
                if self.product is not None and (self.stacks is None or d in self.product.dates()):
                    pr, where = self.product.row(row, col, d)
                    points.append(self._answer(pr, la, lo, d, "product", where, None, t0))
                    continue
                px, where = (self.stacks.pixel(row, col, d, keep=False) if isinstance(self.stacks, StackSource)
                             else self.stacks.pixel(row, col, d))
            except (NoAcquisitionError, OutsideCoverageError) as exc:
                skipped.append({"date": d, "reason": str(exc).split(";")[0]})
                continue
            if len(px) == 0:
                skipped.append({"date": d, "reason": f"no backscatter at the cell in {where}"})
                continue
            batch.append((d, px, where))
        if batch:  # one predict_rows call for every date (rows are independent: the same numbers)
            rec = _Recorder(self.registry)
            allpx = pd.concat([b[1] for b in batch], ignore_index=True)
            if self.climatology is not None:
                allpx = self.climatology.attach(allpx)
            rows = predict_rows(allpx, rec)
            for i, (d, px, where) in enumerate(batch):
                points.append(self._answer(rows.iloc[i].to_dict(), la, lo, d, self.stacks.name, where,
                                           self._features(px, rec.last.iloc[[i]]), t0))
        points.sort(key=lambda a: a["date"])
        return {"lat": la, "lon": lo, "start": d0.isoformat(), "end": d1.isoformat(),
                "cell": {"grid": self.grid.name, "row": row, "col": col}, "manifest_id": self.registry.manifest_id,
                "n": len(points), "points": points, "skipped": skipped,
                "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ssm-spark point``."""
    parser.add_argument("--models", required=True, help="model registry folder (from ssm-spark train)")
    parser.add_argument("--lat", required=True, type=float, help="latitude, degrees (WGS84)")
    parser.add_argument("--lon", required=True, type=float, help="longitude, degrees (WGS84)")
    parser.add_argument("--date", required=True, help="date YYYY-MM-DD (with --end: the first date of a series)")
    parser.add_argument("--end", default=None, help="last date YYYY-MM-DD of a series (inclusive)")
    parser.add_argument("--source", default=None,
                        help="'ee' (Earth Engine, credentials from earthengine.credentials or the environment), "
                             "a stacks folder (<YYYY-MM-DD>/*.tif) or a product folder (from ssm-spark produce)")
    parser.add_argument("--stacks", default=None, help="feature-stack folder (same as --source PATH)")
    parser.add_argument("--static", default=None, help="static layers (default: a static/ folder beside the stacks)")
    parser.add_argument("--climatology", default=None,
                        help="change-detection climatology folder built by produce (OUTPUT/climatology), for "
                             "registries that use it (default: produce.climatology_dir)")
    parser.add_argument("--json", action="store_true", help="print the full answer as JSON")


def _text(ans: dict) -> str:
    c = ans["cell"]
    lines = [f"{ans['date']}  lat {ans['lat']}, lon {ans['lon']}  ({c['grid']} row {c['row']}, col {c['col']})",
             f"  ssm      {ans['ssm']:.4f} m3/m3  [p05 {ans['ssm_p05']:.4f}, p95 {ans['ssm_p95']:.4f}]"
             if ans["ssm"] is not None else "  ssm      none",
             f"  qc       {ans['qc']} {' | '.join(ans['qc_flags']) or '(no bit set)'}",
             f"  env      {ans['env']}  model {ans['model_id']}",
             f"  source   {ans['source']}: {ans['file']}  ({ans['elapsed_ms']:.1f} ms)"]
    if ans.get("features"):
        lines.append("  features " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in ans["features"].items()))
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """``ssm-spark point``: prints the answer (text, or JSON with ``--json``); 0, or 2 on a point that
    cannot be answered (the message says why)."""
    if args.source is None and args.stacks is None:
        raise PointError("point: give --source ee|PATH or --stacks PATH")
    svc = PointService(cfg, args.models, args.stacks, static=args.static, source=args.source,
                       climatology=args.climatology)
    if args.end:
        res = svc.series(args.lat, args.lon, args.date, args.end)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            for p in res["points"]:
                print(_text(p))
            for s in res["skipped"]:
                print(f"{s['date']}  skipped: {s['reason']}")
        return 0
    ans = svc.point(args.lat, args.lon, args.date)
    print(json.dumps(ans, indent=2) if args.json else _text(ans))
    return 0
