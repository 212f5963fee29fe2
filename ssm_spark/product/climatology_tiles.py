"""The climatology stack on the executors: a tile's backscatter series read, its statistics, its GeoTIFF.

One Spark task per grid tile (:func:`run_tiles`; neighbouring tiles share a task, at most 4 tasks
per core): read ``vv_db``, ``vh_db`` and ``incidence_deg`` of the tile's part of each stack file on
every date of the window (:func:`tile_series`; values outside the valid ranges and +-inf set missing
exactly as the stack reader does), build the (cells x dates) arrays, compute
:func:`~ssm_spark.physics.change_detection.climatology` by blocks of cells
(:func:`tile_climatology`), write the tile's GeoTIFF (temporary name, then rename). The driver's
part (keys, reuse, ``climatology.json``) is :mod:`ssm_spark.product.climatology`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from ssm_spark.grid import Grid
from ssm_spark.physics.change_detection import CLIM_COLUMNS

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = ["INPUT_BANDS", "BLOCK_ENTRIES", "tile_series", "tile_climatology", "run_tiles"]

#: Cells x dates per call of the kernel (bounds the task's memory: about ten float64 arrays of that
#: size, 16 MiB each).
BLOCK_ENTRIES = 1 << 21
#: The stack bands a climatology reads.
INPUT_BANDS = ("vv_db", "vh_db", "incidence_deg")
_SUMMARY_DDL = ("tile_row int, tile_col int, cells long, cells_with_climatology long, dates int, files int, "
                "bytes long, seconds double, failed string")



def _clean(a: np.ndarray, band: str, nodata: float | None = None) -> np.ndarray:
    """The declared nodata value, values outside the band's valid range and +-inf set missing, as
    the stack reader (:func:`~ssm_spark.sources.stacks.read_file_cells`) does."""
    from ssm_spark.sources.stacks import VALID_RANGES

    lo, hi = VALID_RANGES.get(band, (-np.inf, np.inf))
    a = a.astype("f8")
    if nodata is not None and np.isfinite(nodata):
        a[a == nodata] = np.nan
    bad = np.isinf(a) | (np.isfinite(a) & ((a < lo) | (a > hi)))
    a[bad] = np.nan
    return a


def tile_series(grid: Grid, tile_row: int, tile_col: int, files: Iterable[tuple]) -> tuple[dict, list[str], list]:
    """The (cells x dates) arrays of one tile from its stack files (``(date, path, row_off, col_off,
    height, width, bands)`` tuples): ``({"theta", "vv", "vh"} float32 arrays, dates, read failures)``.

    A cell with no acquisition on a date (both polarisations missing) is missing on that date in
    every array, as in the pixel table.
    """
    import rasterio
    from rasterio.windows import Window

    from ssm_spark.sources.stacks import read_failure

    files = sorted(files, key=lambda f: (f[0], f[1]))
    dates = sorted({f[0] for f in files})
    col_of = {d: j for j, d in enumerate(dates)}
    tw = grid.tile_window(tile_row, tile_col)
    h, w = int(tw.height), int(tw.width)
    arrays = {k: np.full((h * w, len(dates)), np.nan, dtype="f4") for k in ("theta", "vv", "vh")}
    failed = []
    for date, path, r0f, c0f, hf, wf, bands in files:
        r0, r1 = max(r0f, int(tw.row_off)), min(r0f + hf, int(tw.row_off) + h)
        c0, c1 = max(c0f, int(tw.col_off)), min(c0f + wf, int(tw.col_off) + w)
        if r1 <= r0 or c1 <= c0:
            continue
        win = Window(c0 - c0f, r0 - r0f, c1 - c0, r1 - r0)
        try:
            with rasterio.open(path) as src:
                got = {b: _clean(src.read(bands[b], window=win), b, src.nodatavals[bands[b] - 1]) if b in bands
                       else np.full((r1 - r0, c1 - c0), np.nan) for b in INPUT_BANDS}
        except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
            failed.append(read_failure(path, exc))
            continue
        acq = np.isfinite(got["vv_db"]) | np.isfinite(got["vh_db"])
        rr, cc = np.nonzero(acq)
        cell = (rr + (r0 - int(tw.row_off))) * w + (cc + (c0 - int(tw.col_off)))
        j = col_of[date]
        for key, band in (("theta", "incidence_deg"), ("vv", "vv_db"), ("vh", "vh_db")):
            arrays[key][cell, j] = got[band][rr, cc]
    return arrays, dates, failed


def tile_climatology(arrays: Mapping[str, np.ndarray], shape: tuple[int, int], kwargs: Mapping[str, Any],
                     block: int | None = None) -> np.ndarray:
    """:func:`~ssm_spark.physics.change_detection.climatology` of a tile's arrays, by blocks of cells;
    ``(len(CLIM_COLUMNS), height, width)`` float32, NaN where a statistic is undefined."""
    from ssm_spark.physics.change_detection import climatology

    n, n_dates = arrays["theta"].shape
    block = block or max(256, BLOCK_ENTRIES // max(n_dates, 1))
    out = np.full((len(CLIM_COLUMNS), n), np.nan, dtype="f4")
    for s in range(0, n, block):
        sl = slice(s, min(n, s + block))
        theta = arrays["theta"][sl].astype("f8")
        series = {p: arrays[p][sl].astype("f8") for p in ("vv", "vh")}
        res = climatology(theta, series, **kwargs)
        for i, c in enumerate(CLIM_COLUMNS):
            if c in res:
                out[i, sl] = res[c].astype("f4")
    return out.reshape(len(CLIM_COLUMNS), *shape)


def run_tiles(spark: "SparkSession", grid: Grid, folder: Path, plan: list[dict], kwargs: dict, tags: dict,
               compress: str) -> list[dict]:
    from ssm_spark.product.cog import write_tile_cog

    bplan = spark.sparkContext.broadcast(plan)

    def _task(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        items = bplan.value
        for batch in batches:
            for i in batch["id"]:
                t = items[int(i)]
                t0 = time.perf_counter()
                tr, tc = t["tile"]
                arrays, dates, failed = tile_series(grid, tr, tc, t["files"])
                tw = grid.tile_window(tr, tc)
                data = tile_climatology(arrays, (int(tw.height), int(tw.width)), kwargs)
                ttags = {**tags, "tile_row": tr, "tile_col": tc, "clim_inputs": t["inputs"],
                         "clim_status": "incomplete" if failed else "complete", "clim_dates": len(dates),
                         "clim_files": len(t["files"]), "clim_first_date": dates[0] if dates else "",
                         "clim_last_date": dates[-1] if dates else ""}
                size = write_tile_cog(folder / f"{grid.name}_{tr}_{tc}.tif", data, grid, tr, tc, CLIM_COLUMNS,
                                      {k: str(v) for k, v in ttags.items()}, compress=compress)
                yield pd.DataFrame([{"tile_row": tr, "tile_col": tc, "cells": int(tw.height * tw.width),
                                     "cells_with_climatology": int(np.isfinite(data[CLIM_COLUMNS.index("clim_theta_mean")]).sum()),
                                     "dates": len(dates), "files": len(t["files"]), "bytes": size,
                                     "seconds": time.perf_counter() - t0,
                                     "failed": json.dumps(failed) if failed else None}])

    n = len(plan)
    parts = max(1, min(n, 4 * spark.sparkContext.defaultParallelism))
    spark.sparkContext.setJobDescription(f"ssm-spark climatology: {n} tile(s)")
    try:
        return [r.asDict() for r in spark.range(0, n, 1, parts).mapInPandas(_task, _SUMMARY_DDL).collect()]
    finally:
        bplan.destroy()
        spark.sparkContext.setJobDescription(None)
