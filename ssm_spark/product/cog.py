"""Tile rasters of the product: one Cloud-Optimized GeoTIFF per grid tile, a VRT mosaic per date.

A tile COG has the grid's CRS and the tile's transform (:meth:`ssm_spark.grid.Grid.tile_transform`),
``float32`` bands named by their description (default ``ssm`` and ``qc``; ``ssm_p05``/``ssm_p95`` on
request), NaN as nodata, internal tiling and at least one overview level (GDAL's COG driver). The QC
band holds the product's ``uint16`` bit flags (:mod:`ssm_spark.physics.qc`) as float32, which
represents every integer below 2**24 exactly: ``int(value)`` gives the bits back; NaN where the
tile has no pixel. One band type keeps one file per tile (GeoTIFF bands share a sample format).

Files are written under a temporary name beside the target and renamed over it, so a retried or
speculative Spark task never leaves a half-written file. Nothing inside the files depends on the
time of the run: the same rows give the same bytes.

The VRT is written by hand (no ``osgeo`` binding needed): every tile sits at a known offset of the
grid, so the mosaic is a list of ``SimpleSource`` entries; GDAL (and so rasterio) opens it and
reads the same values as the COGs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from ssm_spark.grid import Grid

__all__ = ["BAND_UNITS", "blocksize_for", "tile_arrays", "write_tile_cog", "write_vrt"]

#: Units recorded in the band metadata.
BAND_UNITS = {"ssm": "m3/m3", "ssm_p05": "m3/m3", "ssm_p95": "m3/m3",
              "qc": "bit flags (uint16, see ssm_spark.physics.qc)",
              "frac_valid": "fraction of the cell's fine cells with a retrieval (aggregated products)"}


def blocksize_for(tile_size: int, configured: int = 0) -> int:
    """Internal block size of a tile COG: the configured one, else half the tile (16..512, x16).

    Half the tile gives GDAL's COG driver a reason to build one overview level at least (it builds
    overviews only while the image is larger than a block).
    """
    if configured:
        return int(configured)
    return int(min(512, max(16, (tile_size // 2) // 16 * 16)))


def tile_arrays(rows: pd.DataFrame, grid: Grid, tile_row: int, tile_col: int,
                bands: Sequence[str]) -> np.ndarray:
    """Rasterise a tile's product rows: a ``(len(bands), height, width)`` float32 array, NaN elsewhere.

    Parameters
    ----------
    rows : pandas.DataFrame
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
    out = np.full((len(bands), int(w.height), int(w.width)), np.nan, dtype=np.float32)
    if len(rows) == 0:
        return out
    r = rows["row"].to_numpy(dtype=np.int64) - int(w.row_off)
    c = rows["col"].to_numpy(dtype=np.int64) - int(w.col_off)
    if r.min() < 0 or c.min() < 0 or r.max() >= w.height or c.max() >= w.width:
        raise ValueError(f"rows outside tile ({tile_row}, {tile_col}) of grid {grid.name}")
    for i, b in enumerate(bands):
        v = rows[b].to_numpy(dtype=np.float64, na_value=np.nan) if b != "qc" else rows[b].to_numpy(dtype=np.float64)
        out[i, r, c] = v.astype(np.float32)
    return out


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


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
        ``deflate``, ``zstd``, ``lzw`` or ``none`` (floating-point predictor when compressed).
    overview_resampling : str
        GDAL resampling of the overviews (one for every band).
    """
    import rasterio

    path = Path(path)
    w = grid.tile_window(tile_row, tile_col)
    if data.shape != (len(bands), int(w.height), int(w.width)):
        raise ValueError(f"data shape {data.shape} != ({len(bands)}, {w.height}, {w.width}) of tile "
                         f"({tile_row}, {tile_col})")
    opts = {"BLOCKSIZE": blocksize or blocksize_for(grid.tile_size), "OVERVIEW_RESAMPLING": overview_resampling.upper(),
            "NUM_THREADS": "1", "BIGTIFF": "IF_SAFER"}
    if compress != "none":
        opts.update(COMPRESS=compress.upper(), PREDICTOR="3")
    else:
        opts["COMPRESS"] = "NONE"
    tmp = _tmp_beside(path)
    try:
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            with rasterio.open(tmp, "w", driver="COG", width=int(w.width), height=int(w.height), count=len(bands),
                               dtype="float32", crs=grid.crs, transform=grid.tile_transform(tile_row, tile_col),
                               nodata=float("nan"), **opts) as dst:
                dst.write(data)
                for i, b in enumerate(bands, 1):
                    dst.set_band_description(i, b)
                    dst.update_tags(i, name=b, units=BAND_UNITS.get(b, ""))
                dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _num(x: float) -> str:
    return repr(float(x))


def write_vrt(path: str | os.PathLike, grid: Grid, sources: Iterable[tuple[int, int, str]],
              extent_tiles: Iterable[tuple[int, int]], bands: Sequence[str],
              tags: Mapping[str, str] | None = None, *, blocksize: int = 0) -> int:
    """Write a VRT mosaic of tile COGs (by hand: the grid gives every tile's offset).

    Parameters
    ----------
    path : path-like
        The ``.vrt`` file.
    grid : Grid
    sources : iterable of (tile_row, tile_col, relpath)
        Tile COGs, ``relpath`` relative to the VRT's folder (kept relative, so the whole output
        folder can move).
    extent_tiles : iterable of (tile_row, tile_col)
        Tiles whose union is the mosaic's extent (the region's tiles: the same extent every date,
        tiles without a COG that date read as nodata).
    bands : sequence of str
        Band descriptions, in the COGs' band order.
    tags : mapping, optional
        Dataset metadata (manifest id, config hash, date).

    Returns
    -------
    int
        Size of the file in bytes.
    """
    from rasterio.crs import CRS

    ext = sorted(set(extent_tiles))
    if not ext:
        raise ValueError("a VRT needs at least one tile")
    wins = [grid.tile_window(tr, tc) for tr, tc in ext]
    r0 = min(int(w.row_off) for w in wins)
    c0 = min(int(w.col_off) for w in wins)
    r1 = max(int(w.row_off + w.height) for w in wins)
    c1 = max(int(w.col_off + w.width) for w in wins)
    gx, gy = grid.x0 + c0 * grid.cell, grid.y0 - r0 * grid.cell
    bs = blocksize or blocksize_for(grid.tile_size)
    srcs = sorted(sources)
    lines = [f'<VRTDataset rasterXSize="{c1 - c0}" rasterYSize="{r1 - r0}">',
             f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(CRS.from_user_input(grid.crs).to_wkt())}</SRS>',
             f"  <GeoTransform>{_num(gx)}, {_num(grid.cell)}, 0.0, {_num(gy)}, 0.0, {_num(-grid.cell)}</GeoTransform>"]
    if tags:
        lines.append("  <Metadata>")
        lines += [f'    <MDI key="{escape(str(k))}">{escape(str(v))}</MDI>' for k, v in sorted(tags.items())]
        lines.append("  </Metadata>")
    for i, b in enumerate(bands, 1):
        lines += [f'  <VRTRasterBand dataType="Float32" band="{i}" blockXSize="{bs}" blockYSize="{bs}">',
                  f"    <Description>{escape(b)}</Description>",
                  "    <NoDataValue>nan</NoDataValue>",
                  "    <Metadata>",
                  f'      <MDI key="name">{escape(b)}</MDI>',
                  f'      <MDI key="units">{escape(BAND_UNITS.get(b, ""))}</MDI>',
                  "    </Metadata>"]
        for tr, tc, rel in srcs:
            w = grid.tile_window(tr, tc)
            if not (r0 <= w.row_off and w.row_off + w.height <= r1 and c0 <= w.col_off and w.col_off + w.width <= c1):
                raise ValueError(f"tile ({tr}, {tc}) lies outside the VRT's extent tiles")
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                      f"      <SourceBand>{i}</SourceBand>",
                      f'      <SourceProperties RasterXSize="{w.width}" RasterYSize="{w.height}" DataType="Float32" />',
                      f'      <SrcRect xOff="0" yOff="0" xSize="{w.width}" ySize="{w.height}" />',
                      f'      <DstRect xOff="{int(w.col_off) - c0}" yOff="{int(w.row_off) - r0}" '
                      f'xSize="{w.width}" ySize="{w.height}" />',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path = Path(path)
    tmp = _tmp_beside(path)
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path.stat().st_size
