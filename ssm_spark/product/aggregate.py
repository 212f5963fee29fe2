"""Multi-scale products: a date's product aggregated onto coarser nested grids (``produce.aggregate``).

The fine product (e.g. EASE-Grid 2.0 1 km) is aggregated onto grids it nests in (3, 9 and 36 km:
every coarse cell is exactly ``f x f`` fine cells, :meth:`ssm_spark.grid.Grid.nest_factor`). Coarse
tiles have the product grid's ``tile_size`` in coarse cells, and fine tiles do not line up with them
(256 is not a multiple of 3), so the driver lists, for each (target grid, coarse tile), the fine
tiles under it, and Spark runs one task per coarse tile::

    staged fine Parquet files of the date (one per fine tile)
      -> one task per (target grid, coarse tile) (mapInPandas over the task list): read the fine
         tiles under it one at a time (sorted), partial sums per (coarse cell, env) of each
         (numpy: sort + reduceat), kept for the task's coarse tile only
      -> the partials combined into coarse cells, written as one Parquet file + one COG into the
         date's staging; a small summary back to the driver
      -> driver: a VRT per target grid (the caller commits them with the date)

A task holds one fine tile's rows and the partials of one coarse tile (at most ~4 per coarse cell
and environment), never a date. A fine tile straddling coarse tiles is read by each of their tasks
(at most 4 per target grid): a few reads of a small file cost less than a shuffle (measured: 2 s
against 5 s per date on the test region, local[2]). A very coarse grid over a large region has few,
long tasks (a 36 km tile of 256 cells is 36 x 36 fine tiles of 256).

Per coarse cell (columns :data:`AGG_COLUMNS`; ``date`` is the partition folder):

- ``n_cells``: fine cells of the product in the coarse cell (region and acquisition that date);
  ``n_valid``: those with a retrieval (non-null ``ssm``); ``frac_valid = n_valid / f**2``, the
  fraction of the coarse cell's area retrieved.
- ``ssm``: mean of the valid fine ``ssm`` (the exact block mean of :meth:`Grid.aggregate`), null
  when ``n_valid < min_count`` with ``min_count = max(1, ceil(aggregate_min_fraction * f**2))``.
- ``ssm_p05``/``ssm_p95``: means of the fine-cell bounds (over the valid cells; null with ``ssm``).
  This is the 5-95 % band of the mean if the fine errors are fully correlated, and wider than it
  otherwise: a conservative band (independent errors would narrow it by up to sqrt(n_valid)).
- ``qc``: OR of the ``qc`` bits of every fine cell in the coarse cell (masked ones included), so a
  bit says "some fine cell had this flag"; ``frac_valid`` says how much was retrieved.
- ``env``: the dominant environment: most valid fine cells, then most fine cells, then the first name.
- ``lon``/``lat``: the coarse cell's centre. There is no ``model_id`` (a coarse cell mixes models);
  the manifest id is in every file's metadata.

Rows are the coarse cells holding at least one fine product cell, sorted by (row, col). Sums are
taken in a fixed order (fine rows by (row, col) within a fine tile, then partials by (env, fine
tile)), so the bytes do not depend on how Spark split or ordered the work: a resumed run writes the
same files.

A coarse COG has the bands of ``produce.cog_bands`` plus ``frac_valid``, the coarse grid's CRS and the
coarse tile's transform; the VRT's extent is the coarse tiles under the region's fine tiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import ConfigError, GridError
from ssm_spark.grid import Grid
from ssm_spark.product.schema import (AGG_COLUMNS, AGG_FILE_COLUMNS, AGGREGATE_FILE, COARSE_SUMMARY, empty_frame,
                                      spark_ddl)
from ssm_spark import storage
from ssm_spark.product.tiles import TileFiles, staged_path, tile_name

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = ["AGG_COLUMNS", "AGG_FILE_COLUMNS", "AggTarget", "AggJob", "resolve_targets", "partials", "combine",
           "aggregate_rows", "coarse_tiles", "aggregation_tasks", "write_coarse_tile", "run_aggregates",
           "components"]

#: Partial sums of one fine tile per (target, coarse cell, env).
_PART_COLUMNS = ("target", "tile_row", "tile_col", "row", "col", "env", "ftile_row", "ftile_col", "n_cells",
                 "n_valid", "ssm_sum", "n_p05", "p05_sum", "n_p95", "p95_sum", "qc")
_SUMMARY_DDL = spark_ddl(COARSE_SUMMARY)
_FINE_COLUMNS = ["row", "col", "ssm", "ssm_p05", "ssm_p95", "env", "qc"]


@dataclass(frozen=True)
class AggTarget:
    """A coarser grid to aggregate onto: the grid (product tile size), the nest factor and the
    minimum number of valid fine cells for a coarse value."""

    grid: Grid
    factor: int
    min_count: int
    min_fraction: float

    @property
    def name(self) -> str:
        return self.grid.name

    def tile_name(self, tile_row: int, tile_col: int) -> str:
        return tile_name(self.grid, tile_row, tile_col)

    def describe(self) -> dict:
        return {"grid": self.grid.name, "nest_factor": self.factor, "min_valid_cells": self.min_count,
                "min_valid_fraction": self.min_fraction, "tile_size": self.grid.tile_size}


def resolve_targets(names: Sequence[str], fine: Grid, min_fraction: float) -> tuple[AggTarget, ...]:
    """The aggregation targets of ``produce.aggregate`` for the product grid.

    Parameters
    ----------
    names : sequence of str
        Grid names (``ease2_9km``; the config turns a km number into one).
    fine : Grid
        The product grid (``grid`` section); the targets take its tile size.
    min_fraction : float
        ``produce.aggregate_min_fraction``.

    Returns
    -------
    tuple of AggTarget
        In the configured order.

    Raises
    ------
    ConfigError
        If a target is unknown, does not nest in the product grid, or is not coarser than it.
    """
    out = []
    for name in names:
        try:
            g = Grid.from_name(name, fine.tile_size)
            f = fine.nest_factor(g)
        except GridError as exc:
            raise ConfigError(f"produce.aggregate: {name!r} cannot be aggregated to from the product grid "
                              f"(grid.name={fine.name}): {exc}") from None
        if f < 2:
            raise ConfigError(f"produce.aggregate: {name} is not coarser than the product grid (grid.name={fine.name})")
        if fine.n_rows != g.n_rows * f or fine.n_cols != g.n_cols * f:
            raise ConfigError(f"produce.aggregate: {name} ({g.n_rows} x {g.n_cols} cells) does not cover "
                              f"grid.name={fine.name} ({fine.n_rows} x {fine.n_cols}) in whole {f} x {f} blocks")
        min_count = max(1, math.ceil(min_fraction * f * f - 1e-9))
        out.append(AggTarget(g, f, min_count, float(min_fraction)))
    return tuple(out)


def components(date: str, targets: Iterable[str]) -> list[Path]:
    """A date's aggregated outputs (folders and files), relative to the product folder."""
    out = []
    for name in targets:
        base = Path("agg") / name
        out += [base / "parquet" / f"date={date}", base / "cog" / date, base / "vrt" / f"{date}.vrt",
                base / "quicklook" / f"{date}.png"]
    return out


def coarse_tiles(fine: Grid, tiles: Iterable[tuple[int, int]], target: AggTarget) -> list[tuple[int, int]]:
    """The target's tiles under a set of fine tiles (sorted)."""
    from rasterio.windows import Window

    f, out = target.factor, set()
    for tr, tc in tiles:
        w = fine.tile_window(tr, tc)
        r0, c0 = int(w.row_off) // f, int(w.col_off) // f
        r1, c1 = -(-int(w.row_off + w.height) // f), -(-int(w.col_off + w.width) // f)
        out.update(target.grid.tiles_for_window(Window(c0, r0, c1 - c0, r1 - r0)))
    return sorted(out)


# ---------------------------------------------------------------------------- numpy kernels


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start indices of the runs of equal keys in sorted arrays."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def partials(rows: pd.DataFrame, targets: Sequence[AggTarget], ftile: tuple[int, int]) -> pd.DataFrame:
    """Partial sums of a fine tile's product rows per (target, coarse cell, env) (:data:`_PART_COLUMNS`).

    Rows must be in the order the sums should take (the fine files are sorted by row, col); the
    sort below is stable, so each partial sums its fine cells in that order.
    """
    if len(rows) == 0 or not targets:
        return pd.DataFrame({c: [] for c in _PART_COLUMNS})
    r = rows["row"].to_numpy(np.int64)
    c = rows["col"].to_numpy(np.int64)
    ssm = rows["ssm"].to_numpy(np.float64, na_value=np.nan)
    p05 = rows["ssm_p05"].to_numpy(np.float64, na_value=np.nan)
    p95 = rows["ssm_p95"].to_numpy(np.float64, na_value=np.nan)
    qc = rows["qc"].to_numpy(np.int64)
    env_names, env_code = np.unique(rows["env"].fillna("").to_numpy(dtype=str), return_inverse=True)
    ok = np.isfinite(ssm)
    ok05, ok95 = ok & np.isfinite(p05), ok & np.isfinite(p95)
    frames = []
    for t in targets:
        cr, cc = r // t.factor, c // t.factor
        o = np.lexsort((env_code, cc, cr))  # stable: (row, col) order kept inside a group
        cr_o, cc_o, env_o = cr[o], cc[o], env_code[o]
        s = _runs(cr_o, cc_o, env_o)
        add = lambda v: np.add.reduceat(v[o], s)  # noqa: E731
        ts = t.grid.tile_size
        frames.append(pd.DataFrame({
            "target": t.name, "tile_row": (cr_o[s] // ts).astype("i4"), "tile_col": (cc_o[s] // ts).astype("i4"),
            "row": cr_o[s].astype("i4"), "col": cc_o[s].astype("i4"), "env": env_names[env_o[s]].astype(object),
            "ftile_row": np.int32(ftile[0]), "ftile_col": np.int32(ftile[1]),
            "n_cells": np.diff(np.r_[s, len(o)]).astype("i8"), "n_valid": add(ok.astype("i8")),
            "ssm_sum": add(np.where(ok, ssm, 0.0)), "n_p05": add(ok05.astype("i8")),
            "p05_sum": add(np.where(ok05, p05, 0.0)), "n_p95": add(ok95.astype("i8")),
            "p95_sum": add(np.where(ok95, p95, 0.0)),
            "qc": np.bitwise_or.reduceat(qc[o], s).astype("i4")}))
    return pd.concat(frames, ignore_index=True)


def combine(parts: pd.DataFrame, target: AggTarget) -> pd.DataFrame:
    """Coarse rows (:data:`AGG_FILE_COLUMNS`, sorted by row, col) from the partials of one target.

    The partials are sorted by (row, col, env, fine tile) before summing, so the result does not
    depend on the order they arrive in.
    """
    if len(parts) == 0:
        return _empty_agg()
    p = parts.sort_values(["row", "col", "env", "ftile_row", "ftile_col"], kind="mergesort").reset_index(drop=True)
    row, col = p["row"].to_numpy(np.int64), p["col"].to_numpy(np.int64)
    env = p["env"].to_numpy(dtype=object)
    # per (cell, env): for the dominant environment
    se = _runs(row, col, env)
    e_valid = np.add.reduceat(p["n_valid"].to_numpy(np.int64), se)
    e_cells = np.add.reduceat(p["n_cells"].to_numpy(np.int64), se)
    e_row, e_col, e_env = row[se], col[se], env[se]
    named = e_env != ""
    # per cell
    s = _runs(row, col)
    sums = {k: np.add.reduceat(p[k].to_numpy(), s) for k in ("n_cells", "n_valid", "ssm_sum", "n_p05", "p05_sum",
                                                             "n_p95", "p95_sum")}
    qc = np.bitwise_or.reduceat(p["qc"].to_numpy(np.int64), s)
    r, c = row[s], col[s]
    # dominant env: sort (cell, -valid, -cells, name) over named envs, first of each cell
    dom = np.full(len(s), None, dtype=object)
    if named.any():
        er, ec, ev, en, ee = e_row[named], e_col[named], e_valid[named], e_cells[named], e_env[named]
        o = np.lexsort((ee.astype(str), -en, -ev, ec, er))
        best = o[_runs(er[o], ec[o])]
        dom[np.searchsorted((r << 32) + c, (er[best] << 32) + ec[best])] = ee[best]  # r, c: sorted, unique
    n_valid = sums["n_valid"]
    keep = n_valid >= target.min_count
    with np.errstate(invalid="ignore", divide="ignore"):
        ssm = np.where(keep, sums["ssm_sum"] / np.maximum(n_valid, 1), np.nan)
        p05 = np.where(keep & (sums["n_p05"] > 0), sums["p05_sum"] / np.maximum(sums["n_p05"], 1), np.nan)
        p95 = np.where(keep & (sums["n_p95"] > 0), sums["p95_sum"] / np.maximum(sums["n_p95"], 1), np.nan)
    lon, lat = target.grid.to_lonlat(r, c)
    ts = target.grid.tile_size
    return pd.DataFrame({
        "grid": np.full(len(s), target.name, dtype=object), "tile_row": (r // ts).astype("i4"),
        "tile_col": (c // ts).astype("i4"), "row": r.astype("i4"), "col": c.astype("i4"),
        "lon": np.asarray(lon, "f8").reshape(-1), "lat": np.asarray(lat, "f8").reshape(-1),
        "ssm": ssm, "ssm_p05": p05, "ssm_p95": p95, "n_cells": sums["n_cells"].astype("i4"),
        "n_valid": n_valid.astype("i4"), "frac_valid": n_valid / float(target.factor ** 2), "env": dom,
        "qc": qc.astype("i4")})


def _empty_agg() -> pd.DataFrame:
    return empty_frame(AGGREGATE_FILE)


def aggregate_rows(rows: pd.DataFrame, target: AggTarget) -> pd.DataFrame:
    """Aggregate fine product rows (any number of fine tiles) onto a target, without Spark."""
    rows = rows.sort_values(["row", "col"], kind="mergesort")
    parts = [partials(g, [target], (int(tr), int(tc)))
             for (tr, tc), g in rows.groupby(["tile_row", "tile_col"], sort=True)]
    return combine(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), target)


# ---------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class AggJob:
    """What an executor needs to write a date's coarse tiles (shipped in the task closure; small)."""

    date: str
    staging: str  # the date's staging folder, or its staging prefix on a store (a URL)
    tags: dict
    targets: tuple[AggTarget, ...]
    bands: tuple[str, ...] | None  # COG bands (frac_valid added); None: no COG
    blocksize: int = 0
    compress: str = "deflate"
    overview_resampling: str = "nearest"
    fine_grid: Grid | None = None

    def target(self, name: str) -> AggTarget:
        return next(t for t in self.targets if t.name == name)

    def file_tags(self, t: AggTarget) -> dict:
        return {**self.tags, "product": "ssm, aggregated", "grid": t.name, "aggregated_from": self.fine_grid.name if self.fine_grid else "",
                "nest_factor": t.factor, "min_valid_cells": t.min_count, "min_valid_fraction": t.min_fraction,
                "aggregation": "ssm, ssm_p05, ssm_p95: means of the valid fine cells; qc: OR of the fine bits; "
                               "env: dominant"}

    def files(self, t: AggTarget) -> TileFiles:
        """The writer of the date's tiles of one target grid (under ``agg/<grid>`` of the staging)."""
        return TileFiles(t.grid, staged_path(self.staging, "agg", t.name), self.date, AGGREGATE_FILE,
                         self.file_tags(t), self.bands, self.blocksize, self.compress, self.overview_resampling)


def write_coarse_tile(rows: pd.DataFrame, target: AggTarget, tile_row: int, tile_col: int, job: AggJob) -> dict:
    """Write one coarse tile's rows (Parquet, and the COG when asked) into the date's staging folder.

    Returns the tile's summary (:data:`~ssm_spark.product.schema.COARSE_SUMMARY` fields).
    """
    tile_row, tile_col = int(tile_row), int(tile_col)
    rows = rows.sort_values(["row", "col"], kind="mergesort").reset_index(drop=True)
    summary = {"target": target.name, "tile_row": tile_row, "tile_col": tile_col, "cells": len(rows),
               "valid": int(np.isfinite(rows["ssm"].to_numpy("f8")).sum()), "parquet_bytes": 0, "cog_bytes": 0,
               "files": None}
    if len(rows) == 0:
        return summary
    files = job.files(target).write(rows, tile_row, tile_col)
    sizes = list(files.values())
    summary["parquet_bytes"], summary["cog_bytes"] = sizes[0], sizes[1] if len(sizes) > 1 else 0
    summary["files"] = json.dumps({f"agg/{target.name}/{k}": v for k, v in files.items()})
    return summary


def aggregation_tasks(fine: Grid, targets: Sequence[AggTarget], fine_files: Sequence[tuple[int, int, str]]
                      ) -> list[tuple[str, int, int, list[tuple[int, int, str]]]]:
    """The tasks of a date: ``(target name, coarse tile_row, tile_col, fine files under it)``, sorted."""
    tasks = []
    for t in targets:
        under: dict[tuple[int, int], list] = {}
        for f in sorted(fine_files):
            for ct in coarse_tiles(fine, [(f[0], f[1])], t):
                under.setdefault(ct, []).append(f)
        tasks += [(t.name, ct[0], ct[1], under[ct]) for ct in sorted(under)]
    return tasks


def _read_fine(path: str, fs) -> pd.DataFrame:
    """A staged fine tile's columns for the partials: a local file, or (``fs`` given) an object."""
    import pyarrow.parquet as pq

    if fs is None:
        return pq.read_table(path, columns=_FINE_COLUMNS).to_pandas()
    try:
        return pq.read_table(storage.fs_path(path), columns=_FINE_COLUMNS, filesystem=fs).to_pandas()
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise storage.io_error(path, "read it from an executor (the store's settings and credentials must be in "
                               "the executors' environment)", exc) from exc


def run_aggregates(spark: "SparkSession", job: AggJob, fine_files: Sequence[tuple[int, int, str]]) -> list[dict]:
    """Aggregate a date's staged fine Parquet files onto every target, on the executors.

    Parameters
    ----------
    spark : SparkSession
    job : AggJob
    fine_files : sequence of (tile_row, tile_col, path)
        The date's fine tiles, as written into staging (URLs when ``job.staging`` is a store's
        staging prefix: read with pyarrow over the store's fsspec filesystem, the executor's
        credentials).

    Returns
    -------
    list of dict
        One summary per coarse tile (``target, tile_row, tile_col, cells, valid, ...``), sorted.
    """
    files = [(int(a), int(b), str(p)) for a, b, p in fine_files]
    if not files or not job.targets:
        return []
    tasks = aggregation_tasks(job.fine_grid, job.targets, files)
    remote = storage.is_remote(job.staging)

    def _task(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fs = None
        if remote:
            with storage.shared_filesystems():  # one client per Python worker
                fs = storage.filesystem(job.staging)
        for batch in batches:
            for i in batch["id"]:
                name, tr, tc, under = tasks[int(i)]
                t = job.target(name)
                parts = []
                for a, b, path in under:
                    pt = partials(_read_fine(path, fs), [t], (a, b))
                    parts.append(pt[(pt["tile_row"] == tr) & (pt["tile_col"] == tc)])
                yield pd.DataFrame([write_coarse_tile(combine(pd.concat(parts, ignore_index=True), t), t, tr, tc,
                                                      job)])

    par = max(1, spark.sparkContext.defaultParallelism)
    ids = spark.range(0, len(tasks), 1, max(1, min(len(tasks), 4 * par)))
    out = ids.mapInPandas(_task, _SUMMARY_DDL).collect()
    return sorted((r.asDict() for r in out), key=lambda d: (d["target"], d["tile_row"], d["tile_col"]))
