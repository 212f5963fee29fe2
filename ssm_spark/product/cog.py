"""Tile rasters of the product: one Cloud-Optimized GeoTIFF per grid tile (mosaics: :mod:`~ssm_spark.product.vrt`).

A tile COG has the grid's CRS and the tile's transform (:meth:`ssm_spark.grid.Grid.tile_transform`),
``float32`` bands named by their description (default ``ssm`` and ``qc``; ``ssm_p05``/``ssm_p95`` on
request), NaN as nodata, internal tiling and at least one overview level (GDAL's COG driver). The QC
band holds the product's ``uint16`` bit flags (:mod:`ssm_spark.physics.qc`) as float32, which
represents every integer below 2**24 exactly: ``int(value)`` gives the bits back; NaN where the
tile has no pixel. One band type keeps one file per tile (GeoTIFF bands share a sample format).

Files are written under a temporary name beside the target and renamed over it, so a retried or
speculative Spark task never leaves a half-written file. Nothing inside the files depends on the
time of the run: the same rows give the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ssm_spark.grid import Grid
from ssm_spark.io import atomic_path

__all__ = ["BAND_UNITS", "COG_DEFLATE_LEVEL", "blocksize_for", "cog_overview_factors", "tile_arrays", "write_tile_cog"]

#: Units recorded in the band metadata.
BAND_UNITS = {"ssm": "m3/m3", "ssm_p05": "m3/m3", "ssm_p95": "m3/m3",
              "qc": "bit flags (uint16, see ssm_spark.physics.qc)",
              "frac_valid": "fraction of the cell's fine cells with a retrieval (aggregated products)"}


#: Deflate level of the tile COGs: 1 (libdeflate's fastest, in rasterio's GDAL) packs the float32
#: bands behind the floating-point predictor as tightly as GDAL's default 6 (ssm + qc of 256 x 256
#: tiles: 4.82 bytes per pixel against 4.90) for ~6 CPU-ms less per tile; any deflate reader reads it.
COG_DEFLATE_LEVEL = 1


def blocksize_for(tile_size: int, configured: int = 0) -> int:
    """Internal block size of a tile COG: the configured one, else half the tile (16..512, x16).

    Half the tile gives GDAL's COG driver a reason to build one overview level at least (it builds
    overviews only while the image is larger than a block).
    """
    if configured:
        return int(configured)
    return int(min(512, max(16, (tile_size // 2) // 16 * 16)))


def tile_arrays(rows: "pd.DataFrame | Mapping[str, np.ndarray]", grid: Grid, tile_row: int, tile_col: int,
                bands: Sequence[str]) -> np.ndarray:
    """Rasterise a tile's product rows: a ``(len(bands), height, width)`` float32 array, NaN elsewhere.

    Parameters
    ----------
    rows : pandas.DataFrame or mapping of str to numpy.ndarray
        Product rows of this tile (global ``row``, ``col`` and the band columns).
    grid : Grid
    tile_row, tile_col : int
    bands : sequence of str
        Column names, in band order (``qc`` is cast from its integer bits).

    Raises
    ------
    ValueError
        If a row lies outside the tile.
    """
    w = grid.tile_window(tile_row, tile_col)
    height, width = int(w.height), int(w.width)
    out = np.full((len(bands), height, width), np.nan, dtype=np.float32)
    frame = isinstance(rows, pd.DataFrame)
    n = len(rows) if frame else len(rows["row"])
    if n == 0:
        return out
    r = (rows["row"].to_numpy(np.int64) if frame else np.asarray(rows["row"], dtype=np.int64)) - int(w.row_off)
    c = (rows["col"].to_numpy(np.int64) if frame else np.asarray(rows["col"], dtype=np.int64)) - int(w.col_off)
    if r.min() < 0 or c.min() < 0 or r.max() >= height or c.max() >= width:
        raise ValueError(f"rows outside tile ({tile_row}, {tile_col}) of grid {grid.name}")
    cells = r * width + c
    flat = out.reshape(len(bands), -1)
    for i, b in enumerate(bands):
        if frame:  # nullable columns: NaN for a missing value
            v = rows[b].to_numpy(dtype=np.float64, na_value=np.nan) if b != "qc" else rows[b].to_numpy(np.float64)
        else:  # float32 estimates, int32 bits: cast once, by the assignment (exact for both)
            v = np.asarray(rows[b])
        flat[i, cells] = v
    return out


def write_tile_cog(path: str | os.PathLike, data: np.ndarray, grid: Grid, tile_row: int, tile_col: int,
                   bands: Sequence[str], tags: Mapping[str, str] | None = None, *, blocksize: int = 0,
                   compress: str = "deflate", overview_resampling: str = "nearest") -> int:
    """Write one tile as a Cloud-Optimized GeoTIFF (temporary name, then rename); return its size in bytes.

    Parameters
    ----------
    path : path-like
        Target file.
    data : ndarray, shape (len(bands), height, width)
        From :func:`tile_arrays`.
    grid : Grid
    tile_row, tile_col : int
    bands : sequence of str
        Band descriptions.
    tags : mapping, optional
        Dataset tags (manifest id, config hash, date, ...), written in the GDAL metadata.
    blocksize : int
        Internal tile size; 0: :func:`blocksize_for`.
    compress : str
        ``deflate`` (at :data:`COG_DEFLATE_LEVEL`), ``zstd``, ``lzw`` or ``none`` (floating-point
        predictor when compressed).
    overview_resampling : str
        GDAL resampling of the overviews (one for every band).
    """
    import rasterio
    from rasterio.enums import Resampling

    path = Path(path)
    w = grid.tile_window(tile_row, tile_col)
    if data.shape != (len(bands), int(w.height), int(w.width)):
        raise ValueError(f"data shape {data.shape} != ({len(bands)}, {w.height}, {w.width}) of tile "
                         f"({tile_row}, {tile_col})")
    block = blocksize or blocksize_for(grid.tile_size)
    opts = {"BLOCKSIZE": block, "OVERVIEW_RESAMPLING": overview_resampling.upper(), "NUM_THREADS": "1",
            "BIGTIFF": "IF_SAFER"}
    if compress != "none":
        opts.update(COMPRESS=compress.upper(), PREDICTOR="3")
        if compress == "deflate":
            opts["LEVEL"] = str(COG_DEFLATE_LEVEL)
    else:
        opts["COMPRESS"] = "NONE"
    factors = _own_overviews(int(w.width), int(w.height), block, overview_resampling)
    if factors:
        opts["OVERVIEWS"] = "FORCE_USE_EXISTING"
    with atomic_path(path) as tmp, rasterio.Env(GDAL_NUM_THREADS="1"):
        with rasterio.open(tmp, "w", driver="COG", width=int(w.width), height=int(w.height), count=len(bands),
                           dtype="float32", crs=grid.crs, transform=grid.tile_transform(tile_row, tile_col),
                           nodata=float("nan"), **opts) as dst:
            dst.write(data)
            for i, b in enumerate(bands, 1):
                dst.set_band_description(i, b)
                dst.update_tags(i, name=b, units=BAND_UNITS.get(b, ""))
            dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
            if factors:
                dst.build_overviews(factors, Resampling[overview_resampling.lower()])
    return path.stat().st_size


def cog_overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """The overview levels GDAL's COG driver builds by itself (``OVERVIEWS=AUTO``): halve the size
    (rounding down) while it is larger than a block; each level's decimation factor."""
    out, f = [], 1
    while width > blocksize or height > blocksize:
        width, height, f = max(width // 2, 1), max(height // 2, 1), f * 2
        out.append(f)
    return out


def _own_overviews(width: int, height: int, blocksize: int, resampling: str) -> list[int]:
    """The overview factors :func:`write_tile_cog` builds in the dataset it hands to the COG driver
    (in memory: the driver would otherwise write them into a compressed temporary GeoTIFF beside
    the target and read them back, ~30 % of a 256 x 256 tile's COG); empty where the driver's own
    overviews could differ, so that it builds them as before. The same bytes either way
    (tests/test_cog_overviews.py): the sizes agree when every factor divides the tile (the
    driver's halving rounds down, a factor's size rounds up), and the values with one level of a
    resampling in :data:`_SAME_ONE_LEVEL`, or ``nearest`` at any depth (the two build deeper
    ``average`` levels differently).
    """
    factors = cog_overview_factors(width, height, blocksize)
    if not factors or any(width % f or height % f for f in factors):
        return []
    if resampling.lower() not in _SAME_ONE_LEVEL or (len(factors) > 1 and resampling.lower() != "nearest"):
        return []
    return factors


#: Resamplings whose overview of one level rasterio's ``build_overviews`` computes as the COG driver
#: does (byte for byte: tests/test_cog_overviews.py); the config's choices (``produce.overview_resampling``).
_SAME_ONE_LEVEL = ("nearest", "average", "mode")
