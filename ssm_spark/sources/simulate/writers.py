"""The simulator's tile GeoTIFFs: which tiles the region touches, and one atomic tile writer.

Each file is one whole grid tile (cells outside the region are nodata: NaN for float32, 0 for
uint8), deflate-compressed with a predictor, tiled in 64 x 64 blocks when the tile allows (a point query decodes
one 64 x 64 block per band, not the whole tile: a cold one-year series at a point 13 ms of decoding
instead of 208 with whole-tile blocks, for 16 % more disk), with the
band names as descriptions, the units (:data:`~ssm_spark.sources.simulate.contracts.UNITS`) and the
provenance tags. Text files (ISMN, CSV, ``simulation.json``) are written with :mod:`ssm_spark.io`
where they are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from ssm_spark.grid import Grid
from ssm_spark.io import atomic_path
from ssm_spark.sources.simulate.contracts import UNITS

__all__ = ["tile_parts", "write_tif"]


def tile_parts(grid: Grid, window: Window) -> list[tuple[int, int, Window, tuple[slice, slice], tuple[slice, slice]]]:
    """(tile_row, tile_col, tile window, region slices, tile slices) of the tiles the region touches."""
    parts = []
    wr0, wc0 = int(window.row_off), int(window.col_off)
    wr1, wc1 = wr0 + int(window.height), wc0 + int(window.width)
    for tr, tc in grid.tiles_for_window(window):
        tw = grid.tile_window(tr, tc)
        r0, c0 = max(int(tw.row_off), wr0), max(int(tw.col_off), wc0)
        r1 = min(int(tw.row_off) + int(tw.height), wr1)
        c1 = min(int(tw.col_off) + int(tw.width), wc1)
        reg = (slice(r0 - wr0, r1 - wr0), slice(c0 - wc0, c1 - wc0))
        til = (slice(r0 - int(tw.row_off), r1 - int(tw.row_off)), slice(c0 - int(tw.col_off), c1 - int(tw.col_off)))
        parts.append((tr, tc, tw, reg, til))
    return parts


def write_tif(path: Path, grid: Grid, tr: int, tc: int, tw: Window, reg: tuple[slice, slice],
              til: tuple[slice, slice], bands: Sequence[tuple[str, np.ndarray]], dtype: str,
              tags: dict[str, str]) -> None:
    """Write a tile GeoTIFF atomically (:func:`ssm_spark.io.atomic_path`; the driver is named, GTiff)."""
    h, w = int(tw.height), int(tw.width)
    nodata: float = 0 if dtype == "uint8" else float("nan")
    data = np.full((len(bands), h, w), nodata, dtype=dtype)
    for i, (_, arr) in enumerate(bands):
        data[i][til] = arr[reg]
    block = grid.tile_size if grid.tile_size % 16 == 0 else 0
    blk = min(64, block)
    tiled = blk >= 16 and h % blk == 0 and w % blk == 0
    profile: dict[str, Any] = dict(
        driver="GTiff", width=w, height=h, count=len(bands), dtype=dtype, crs=grid.crs,
        transform=grid.tile_transform(tr, tc), nodata=nodata, compress="deflate", interleave="band",
        predictor=2 if dtype == "uint8" else 3,
    )
    if tiled:
        profile.update(tiled=True, blockxsize=blk, blockysize=blk)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        dst.units = tuple(UNITS.get(name, "") for name, _ in bands)
        for i, (name, _) in enumerate(bands, start=1):
            dst.set_band_description(i, name)
