"""The change-detection climatology stack of a region: per-cell dry/wet references on the grid's tiles.

Change detection (:mod:`ssm_spark.physics.change_detection`) needs, for every cell, statistics of
its own backscatter time series over a reference window (:data:`CLIM_COLUMNS`: number of dates,
mean angle, angle slope, dry and wet references and mean, per polarisation). In production they are
computed once, in one Spark pass over every date of the window, and stored as a *climatology stack*
that ``produce`` attaches to each pixel row (by row and column) before the physics and the models;
a date outside the window (a near-real-time run) uses the same stored stack.

One pass (:func:`build_climatology`)::

    stack files of every date in the window touching the tiles (driver: discovery and checks)
      -> Spark tasks over the grid tiles (a tile is handled whole by one task; neighbouring tiles
         share a task, at most 4 tasks per core): read vv_db, vh_db, incidence_deg of the tile's
         files on every date (rasterio, the tile's part of each file; values outside the valid
         ranges and +-inf set missing exactly as the stack reader does), build the
         (cells x dates) arrays, :func:`~ssm_spark.physics.change_detection.climatology` by blocks
         of cells, write the tile's GeoTIFF (temporary name, then rename)
      -> driver: ``climatology.json``

(the executors' part: :mod:`ssm_spark.product.climatology_tiles`).

Layout (``DIR`` is ``produce.climatology_dir``, default ``OUTPUT/climatology``)::

    DIR/<key>/<grid>_<tile_row>_<tile_col>.tif   float32, bands = CLIM_COLUMNS (band descriptions),
                                                 NaN nodata, the grid's CRS and the tile's transform
                                                 (as the product COGs), uncompressed; tags: key,
                                                 inputs, status
    DIR/<key>/climatology.json                   settings, window, and per tile: inputs digest,
                                                 files, dates, cells with a climatology

Key and reuse. ``<key>`` (16 hex digits) is the sha256 of what decides the statistics but not which
files: the package version, the grid, ``ingest.band_aliases``, the change-detection settings
(percentiles, ``min_dates``, ``min_spread_deg``) and the window as configured
(``physics.change_detection.window_start``/``window_end``; null = open on that side). Each tile
records the digest of its inputs (every stack file of a window date touching the tile, quarantined
ones included: path below the stacks folder, size, modification time). A tile whose file exists,
carries the key and its current inputs digest and was complete is reused, never recomputed; a
tile whose inputs changed (a replaced file, a new date inside the window) is recomputed in place.
Tiles without any file in the window, or with fewer dates than ``min_dates`` (every statistic
would be NaN), are not written (their cells get no climatology: ``CHANGE_DETECTION_MISSING``). A tile with a file that could not be read is written from the rest,
marked incomplete, and recomputed by the next build.

Checking reuse reads every stack header of the window (which tile each file touches); a produce
run does it each time (1.6 CPU-ms a file here: the demo's 124 files 0.2 s, a window of 31 dates over
a national region's ~150 tiles some 7 s by that rate). So a complete build records, in
``climatology.json`` (``last``), a digest of the window's stack and static GeoTIFFs as listed (path,
size, modification time: no file opened), its region and its tile files' size and time; a later
build with the same listing, region and tile files returns that build's summary (``checked:
listing``) without the headers. Anything else, or stacks on an object store, takes the full check.

The stack's :attr:`ClimatologyStack.digest` (key + every tile's inputs digest and status) enters
the product hash, so a changed climatology recomputes the product's dates, and an unchanged one
(e.g. a new date outside a closed window) does not. With an open window (the default: every date
available) every new date is inside it: the climatology, and so every date's product, changes.
Close the window (``window_end``) for a near-real-time archive.

The build takes a lock on ``DIR/<key>`` (:class:`~ssm_spark.product.files.OutputLock`), so two runs
sharing a climatology folder do not build the same tiles at once (``produce`` builds it while it
holds its own output folder's lock).
``climatology.json`` holds no timing, and a build that only reuses rewrites no file, so products
(and their folders) stay byte-identical across resumed runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

import ssm_spark
from ssm_spark.errors import SSMError
from ssm_spark.grid import Grid
from ssm_spark.physics.change_detection import CLIM_COLUMNS
from ssm_spark.product.climatology_tiles import INPUT_BANDS, run_tiles, tile_climatology, tile_series

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config
    from ssm_spark.sources.stacks import StackInventory

log = logging.getLogger(__name__)

__all__ = ["ClimatologyError", "ClimatologyStack", "build_climatology", "climatology_key", "climatology_for_produce",
           "read_tile", "FORMAT", "tile_series", "tile_climatology"]

#: Layout/algorithm version of the stack (enters the key).
FORMAT = 1


class ClimatologyError(SSMError, RuntimeError):
    """A climatology stack that cannot be built or read (its own files, not the inputs')."""


# ---------------------------------------------------------------------------------------- keys


def _settings(cfg: "Config") -> dict[str, Any]:
    from ssm_spark.transforms import cd_kwargs, cd_window

    cdc = cfg.physics.change_detection
    win = cd_window(cdc) or (None, None)
    return {"kwargs": cd_kwargs(cdc), "window": [d.isoformat() if d is not None else None for d in win]}


def climatology_key(cfg: "Config", grid: Grid | None = None) -> str:
    """16-hex-digit key of a climatology stack (see the module docstring: settings, window, grid)."""
    grid = grid or cfg.grid.build()
    blob = {"format": FORMAT, "software": ssm_spark.__version__, "grid": grid.describe(),
            "band_aliases": dict(sorted(cfg.ingest.band_aliases.items())), **_settings(cfg)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _stat(path: str, root: Path | None) -> dict:
    from ssm_spark.storage import stat  # a local file, or an object (a /vsis3/ path of stacks on a store)

    size, mtime_ns = stat(path)
    rel = path
    if root is not None:
        try:
            rel = os.path.relpath(path, root)
        except ValueError:
            pass
    return {"file": rel, "bytes": size, "mtime_ns": mtime_ns}


def _listing(root: Path, static: "str | os.PathLike | None", in_window) -> str | None:
    """A digest of what a build's inputs can be, without opening a file: every GeoTIFF of the
    window's date folders and of the static folder (path below ``root``, size, modification time).
    None for stacks on an object store (one request per object: the full check is used there)."""
    from ssm_spark import storage

    if storage.is_remote(str(root)) or (static is not None and storage.is_remote(str(static))):
        return None
    stats = []
    for d, is_dir in storage.listdir(root):
        if is_dir and _is_date(d.name) and in_window(d.name):
            stats += [_stat(str(p), root) for p, f_dir in storage.listdir(d)
                      if not f_dir and p.suffix.lower() in (".tif", ".tiff")]
    if static is not None:
        stats += [{**_stat(str(p), None), "static": True} for p, f_dir in storage.listdir(static)
                  if not f_dir and p.suffix.lower() in (".tif", ".tiff")]
    return _sha(sorted(stats, key=lambda x: (x.get("static", False), x["file"])))


def _tile_stamps(folder: Path, names: Iterable[str]) -> dict[str, list[int]] | None:
    """(size, mtime) of the stack's tile files; None when one is missing."""
    out = {}
    for name in names:
        try:
            st = (folder / name).stat()
        except OSError:
            return None
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


# ------------------------------------------------------------------------------------ the stack


@dataclass(frozen=True)
class ClimatologyStack:
    """A built climatology stack, as ``produce`` uses it (small: shipped to the executors)."""

    folder: str
    key: str
    digest: str
    grid: Grid
    tiles: frozenset  # (tile_row, tile_col) with a file

    def path(self, tile_row: int, tile_col: int) -> Path:
        return Path(self.folder) / f"{self.grid.name}_{int(tile_row)}_{int(tile_col)}.tif"

    def attach(self, px: pd.DataFrame) -> pd.DataFrame:
        """``px`` with its cells' :data:`CLIM_COLUMNS` (NaN for cells of tiles without a climatology).

        Rows are matched by their global ``row``/``col`` within their ``tile_row``/``tile_col``.

        Raises
        ------
        ClimatologyError
            If a tile of the stack cannot be read (naming it; remove the folder to rebuild).
        """
        n = len(px)
        if not n:
            return px.assign(**{c: np.full(0, np.nan) for c in CLIM_COLUMNS})
        return px.assign(**self.values(px["tile_row"].to_numpy(np.int64), px["tile_col"].to_numpy(np.int64),
                                       px["row"].to_numpy(np.int64), px["col"].to_numpy(np.int64)))

    def values(self, tile_row: np.ndarray, tile_col: np.ndarray, row: np.ndarray, col: np.ndarray
               ) -> dict[str, np.ndarray]:
        """The cells' :data:`CLIM_COLUMNS` as float64 arrays (NaN for cells of tiles without a
        climatology): :meth:`attach` on column arrays (global ``row``/``col`` within their tile).

        Each tile is read once, as stored (float32), and all its bands are gathered in one indexing
        of the (bands, cells) array; the float64 values are those of casting the tile first.

        Raises
        ------
        ClimatologyError
            If a tile of the stack cannot be read (naming it; remove the folder to rebuild).
        """
        n = len(row)
        trs, tcs = np.asarray(tile_row, np.int64), np.asarray(tile_col, np.int64)
        code = trs * (1 << 20) + tcs
        one = bool(n) and bool((code == code[0]).all())  # a stack file is mostly one tile
        vals: dict[str, np.ndarray] = {}
        for k in ([code[0]] if one else np.unique(code)):
            tr, tc = int(k) >> 20, int(k) & ((1 << 20) - 1)
            if (tr, tc) not in self.tiles:
                continue
            idx = None if one else np.flatnonzero(code == k)
            data, names = _read_tile_stored(self.path(tr, tc))
            w = self.grid.tile_window(tr, tc)
            r = np.asarray(row if idx is None else row[idx], np.int64) - int(w.row_off)
            c = np.asarray(col if idx is None else col[idx], np.int64) - int(w.col_off)
            lin = r * data.shape[2] + c
            got = data.reshape(data.shape[0], -1)
            if not (len(lin) == got.shape[1] and np.array_equal(lin, np.arange(got.shape[1]))):
                got = got[:, lin]  # (bands, cells), one gather (none when the cells are the whole tile, in order)
            for i, name in enumerate(names):
                if name not in CLIM_COLUMNS:
                    continue
                if idx is None:
                    vals[name] = got[i].astype(np.float64)
                else:
                    vals.setdefault(name, np.full(n, np.nan))[idx] = got[i]
        return {c: vals[c] if c in vals else np.full(n, np.nan) for c in CLIM_COLUMNS}

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], grid: Grid) -> "ClimatologyStack":
        return cls(summary["folder"], summary["key"], summary["digest"], grid,
                   frozenset(tuple(t) for t in summary["tiles_with_files"]))


def read_tile(path: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """A climatology tile's bands (float64, ``(bands, height, width)``) and their names."""
    data, names = _read_tile_stored(path)
    return data.astype("f8"), names


def _read_tile_stored(path: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """A climatology tile's bands as stored (float32, ``(bands, height, width)``) and their names."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            return src.read(), tuple(d or "" for d in src.descriptions)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ClimatologyError(f"{path}: cannot read this climatology tile ({exc}); remove its folder "
                               f"{Path(path).parent} to have it rebuilt") from exc


def _tile_tags(path: Path) -> dict | None:
    import rasterio

    if not path.is_file():
        return None
    try:
        with rasterio.open(path) as src:
            if tuple(src.descriptions) != CLIM_COLUMNS:
                return None
            return src.tags()
    except (rasterio.errors.RasterioError, OSError):
        return None


# --------------------------------------------------------------------------------------- driver


def _unchanged(folder: Path, key: str, listing: str | None, region_tiles: list | None, t0: float) -> dict | None:
    """The last complete build's summary (``computed`` 0, every tile reused) when its listing of the
    window's stack and static files and its region are this call's and its tile files are as it
    left them; else None (the full check: every header read, each tile's inputs compared)."""
    if listing is None:
        return None
    try:
        meta = json.loads((folder / "climatology.json").read_text())
    except (OSError, ValueError):
        return None
    last = meta.get("last") if meta.get("key") == key else None
    if not last or last.get("listing") != listing or last.get("region_tiles") != region_tiles:
        return None
    if _tile_stamps(folder, last["tile_files"]) != last["tile_files"]:
        return None
    s = last["summary"]
    return {**s, "folder": str(folder), "computed": 0, "reused": len(s["tiles_with_files"]), "tile_seconds": 0,
            "cells_with_climatology": None, "checked": "listing", "seconds": round(time.perf_counter() - t0, 2)}


def build_climatology(spark: "SparkSession", cfg: "Config", stacks: "str | os.PathLike | StackInventory",
                      tiles: Iterable[tuple[int, int]] | None, output_dir: str | os.PathLike, *,
                      static: str | os.PathLike | None = None, stacks_root: str | os.PathLike | None = None,
                      force: bool = False, compress: str = "none") -> dict:
    """Build (or reuse) the climatology stack of ``tiles`` over the configured window.

    Parameters
    ----------
    spark : SparkSession
    cfg : Config
        ``physics.change_detection`` (settings and window), ``grid``, ``ingest.band_aliases``.
    stacks : path-like or StackInventory
        Folder of ``<YYYY-MM-DD>/`` stack GeoTIFFs (discovered over the window's dates), or an
        inventory already discovered (its files of the window's dates are used).
    tiles : iterable of (tile_row, tile_col), or None
        The tiles to build (e.g. a region's); None: every tile holding a file of the window.
    output_dir : path-like
        The climatology folder (``DIR``); the stack goes to ``DIR/<key>/``.
    static : path-like, optional
        Static layers for the discovery's checks (default: ``static/`` beside ``stacks``).
    stacks_root : path-like, optional
        Folder the input paths are recorded relative to (default: the stacks folder; with an
        inventory, the parent of its first date folder).
    force : bool
        Recompute every tile.
    compress : str
        GeoTIFF compression of the tiles (:func:`~ssm_spark.product.cog.write_tile_cog`'s). ``none``
        by default: every date of a product reads its tiles' stacks whole again, and a 256 x 256 tile
        of 10 bands reads in ~3.5 CPU-ms uncompressed against ~13 with deflate (3.3 MB on disk
        against 2.2, overviews included; docs/performance.md). Tiles written with another compression
        are read (and reused) as they are.

    Returns
    -------
    dict
        ``key``, ``folder``, ``digest`` (for the product hash), ``settings`` (kernel arguments and
        the window as configured), ``window_dates`` (first and last date found) and ``dates``, tile
        counts (``tiles``, ``computed``, ``reused``, ``without_files``, ``too_few_dates``),
        ``tiles_with_files`` (the tiles written), ``cells_with_climatology`` (of those computed),
        ``failed_files``, ``quarantined_files``, ``tile_seconds`` (summed over the tasks), ``seconds``.

    Raises
    ------
    InputError
        If ``stacks`` is a folder with no date folder.
    """
    from rasterio.windows import Window

    from ssm_spark.io import write_json_atomic
    from ssm_spark.product.files import OutputLock, ensure_writable
    from ssm_spark.sources.stacks import StackInventory, check_raster, discover
    from ssm_spark.transforms import cd_window

    t0 = time.perf_counter()
    grid = cfg.grid.build()
    cdc = cfg.physics.change_detection
    ws, we = cd_window(cdc) or (None, None)
    wanted = None if tiles is None else {(int(a), int(b)) for a, b in tiles}

    def touches(win: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        r0, c0, h, w = win
        got = grid.tiles_for_window(Window(c0, r0, w, h))
        return [t for t in got if wanted is None or t in wanted]

    def in_window(date: str) -> bool:
        d = dt.date.fromisoformat(date)
        return (ws is None or d >= ws) and (we is None or d <= we)

    key = climatology_key(cfg, grid)
    listing = None
    region_tiles_key = sorted([list(t) for t in wanted]) if wanted is not None else None
    if isinstance(stacks, StackInventory):
        inv = stacks
        root = Path(stacks_root) if stacks_root else (Path(inv.files[0].path).parent.parent if inv.files else None)
    else:
        root = Path(stacks)
        if static is None and (root.parent / "static").is_dir():
            static = root.parent / "static"
        if not force and (stacks_root is None or Path(stacks_root) == root):
            # the last complete build's summary, when no stack or static file changed since (no header read)
            try:
                listing = _listing(root, static, in_window)
            except OSError:  # a file gone between the listing and its stat: the full check says what is there
                listing = None
            same = _unchanged(Path(output_dir) / key, key, listing, region_tiles_key, t0)
            if same is not None:
                return same
        inv = discover(root, grid, static, cfg.ingest.band_aliases, start=ws, end=we,
                       keep_window=lambda win: bool(touches(win)))
        root = Path(stacks_root) if stacks_root else root

    per_tile: dict[tuple[int, int], list[tuple]] = {}
    stats: dict[tuple[int, int], list[dict]] = {}
    for f in inv.files:
        if not in_window(f.date):
            continue
        bands = {b: f.bands[b] for b in INPUT_BANDS if b in f.bands}
        st = _stat(f.path, root)
        for t in touches((f.row_off, f.col_off, f.height, f.width)):
            per_tile.setdefault(t, []).append((f.date, f.path, f.row_off, f.col_off, f.height, f.width, bands))
            stats.setdefault(t, []).append(st)
    quarantined = []
    for q in inv.quarantine:  # replacing a bad file must change the tile's inputs
        p = Path(q["file"])
        if not (_is_date(p.parent.name) and in_window(p.parent.name)):
            continue
        quarantined.append(q)
        try:
            win, _ = check_raster(p, grid)
        except SSMError:
            continue
        for t in touches(win):
            if p.exists():
                stats.setdefault(t, []).append(_stat(str(p), root))
    folder = ensure_writable(Path(output_dir) / key, "the climatology folder")
    inputs = {t: _sha(sorted(s, key=lambda d: d["file"])) for t, s in stats.items() if t in per_tile}
    tags = {"product": "change-detection climatology", "clim_key": key, "grid": grid.name,
            "software": f"ssm_spark {ssm_spark.__version__}", "clim_settings": json.dumps(_settings(cfg))}
    sparse = {t for t, fs in per_tile.items() if len({f[0] for f in fs}) < cdc.min_dates}
    with OutputLock(folder, "ssm-spark climatology"):
        todo, reused = [], []
        for t in sorted(set(per_tile) - sparse):  # fewer dates than min_dates: every statistic NaN, nothing to write
            name = f"{grid.name}_{t[0]}_{t[1]}.tif"
            got = None if force else _tile_tags(folder / name)
            if (got is not None and got.get("clim_key") == key and got.get("clim_inputs") == inputs[t]
                    and got.get("clim_status") == "complete"):
                reused.append(t)
            else:
                todo.append({"tile": t, "files": per_tile[t], "inputs": inputs[t]})
        results = run_tiles(spark, grid, folder, todo, dict(_settings(cfg)["kwargs"]), tags, compress) if todo else []
        failed = [e for r in results if r.get("failed") for e in json.loads(r["failed"])]
        status = {t: "too_few_dates" if t in sparse else "complete" for t in per_tile}
        for r in results:
            if r.get("failed"):
                status[(r["tile_row"], r["tile_col"])] = "incomplete"
        meta_path = folder / "climatology.json"
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = {}
        tile_meta = dict(old.get("tiles", {})) if old.get("key") == key else {}
        for r in results:
            tile_meta[f"{grid.name}_{r['tile_row']}_{r['tile_col']}"] = {
                "inputs": inputs[(r["tile_row"], r["tile_col"])], "status": status[(r["tile_row"], r["tile_col"])],
                **{k: r[k] for k in ("files", "dates", "cells", "cells_with_climatology", "bytes")}}
        dates = sorted({f[0] for fs in per_tile.values() for f in fs})
        region_tiles = sorted(wanted) if wanted is not None else sorted(per_tile)
        digest = _sha({"key": key, "tiles": [[t[0], t[1], inputs.get(t, "none"), status.get(t, "none")]
                                             for t in region_tiles]})
        meta = {"key": key, "settings": _settings(cfg), "grid": grid.describe(), "format": FORMAT,
                "software": f"ssm_spark {ssm_spark.__version__}", "columns": list(CLIM_COLUMNS), "tiles": tile_meta}
        summary = {"key": key, "folder": str(folder), "digest": digest, "settings": _settings(cfg),
                   "window_dates": [dates[0], dates[-1]] if dates else None, "dates": len(dates),
                   "tiles": len(region_tiles), "computed": len(results), "reused": len(reused),
                   "without_files": len([t for t in region_tiles if t not in per_tile]),
                   "too_few_dates": len(sparse), "tiles_with_files": sorted([list(t) for t in set(per_tile) - sparse]),
                   "tile_seconds": round(sum(r["seconds"] for r in results), 2),
                   "cells_with_climatology": int(sum(r["cells_with_climatology"] for r in results)) if results else None,
                   "failed_files": failed, "quarantined_files": len(quarantined)}
        names = [f"{grid.name}_{t[0]}_{t[1]}.tif" for t in summary["tiles_with_files"]]
        stamps = _tile_stamps(folder, names)
        if listing is not None and not failed and stamps is not None and all(v == "complete" or v == "too_few_dates"
                                                                              for v in status.values()):
            meta["last"] = {"listing": listing, "region_tiles": region_tiles_key, "tile_files": stamps,
                            "summary": {k: v for k, v in summary.items() if k != "folder"}}
        elif old.get("key") == key and "last" in old and listing is None:
            meta["last"] = old["last"]  # a build from an inventory keeps the last recorded one
        if meta != old:  # a build that only reuses rewrites nothing
            write_json_atomic(meta_path, meta, default=str)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if len(sparse) == len(per_tile):
        log.warning("climatology: no tile has %d stack date(s) in %s..%s (the window's min_dates): no "
                    "change-detection features (qc CHANGE_DETECTION_MISSING)", cdc.min_dates, ws or "any", we or "any")
    log.info("climatology %s: %d tile(s) computed, %d reused, %d without files, %d with too few dates; %d date(s) "
             "%s in %.1f s -> %s", key, len(results), len(reused), summary["without_files"], len(sparse), len(dates),
             f"{dates[0]}..{dates[-1]}" if dates else "-", summary["seconds"], folder)
    if failed:
        log.warning("climatology %s: %d file(s) could not be read, their tiles are incomplete (rebuilt next run): %s",
                    key, len(failed), "; ".join(e["reason"] for e in failed))
    return summary


def _is_date(name: str) -> bool:
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def climatology_for_produce(spark: "SparkSession", cfg: "Config", wcm_params: Any, stacks: Path,
                            static: Path | None, tiles: Iterable[tuple[int, int]], output: Path,
                            inventory: "StackInventory", start: dt.date | None, end: dt.date | None,
                            folder: Path | None = None) -> tuple[ClimatologyStack, dict] | None:
    """The climatology stack a ``produce`` run attaches to its rows, built or reused; None when
    change detection is off (``physics.change_detection.enabled``) or the registry has no
    change-detection calibration (``cd`` beside its WCM parameters).

    The run's own inventory is used when its date range covers the window; else the window's
    dates are discovered (a near-real-time run over a few new dates still gets the whole window).
    ``folder``: where the stacks are kept (default ``produce.climatology_dir``, else
    ``OUTPUT/climatology``).
    """
    from ssm_spark.transforms import cd_window

    cdc = cfg.physics.change_detection
    if not cdc.enabled or not isinstance(wcm_params, Mapping) or wcm_params.get("cd") is None:
        return None
    ws, we = cd_window(cdc) or (None, None)
    covers = (start is None or (ws is not None and start <= ws)) and (end is None or (we is not None and end >= we))
    if folder is None:  # (a product on an object store passes its working folder's: see product.produce)
        folder = Path(cfg.produce.climatology_dir) if cfg.produce.climatology_dir else Path(output) / "climatology"
    src = inventory if covers else stacks
    summary = build_climatology(spark, cfg, src, tiles, folder, static=static, stacks_root=stacks)
    return ClimatologyStack.from_summary(summary, cfg.grid.build()), summary
