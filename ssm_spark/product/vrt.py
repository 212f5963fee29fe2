"""VRT mosaics of tile COGs, written with :mod:`xml.etree.ElementTree` (no ``osgeo`` binding needed).

Every tile sits at a known offset of the grid, so the mosaic is a list of ``SimpleSource`` entries
per band; GDAL (and so rasterio) opens it and reads the same values as the COGs. Paths stay
relative to the VRT, so the whole output folder can move. Nothing in the file depends on the time
of the run: the same tiles give the same bytes.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ssm_spark.grid import Grid
from ssm_spark.io import write_text_atomic
from ssm_spark.product.cog import BAND_UNITS, blocksize_for

__all__ = ["write_vrt", "vrt_xml"]


def _num(x: float) -> str:
    return repr(float(x))


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    el.text = text
    return el


def _metadata(parent: ET.Element, items: Iterable[tuple[object, object]]) -> None:
    md = _add(parent, "Metadata")
    for k, v in items:
        _add(md, "MDI", str(v), key=str(k))


def vrt_xml(grid: Grid, sources: Iterable[tuple[int, int, str]], extent_tiles: Iterable[tuple[int, int]],
            bands: Sequence[str], tags: Mapping[str, str] | None = None, *, blocksize: int = 0) -> str:
    """The VRT document of :func:`write_vrt` (two-space indented, a final newline)."""
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
    bs = str(blocksize or blocksize_for(grid.tile_size))
    srcs = sorted(sources)
    root = ET.Element("VRTDataset", rasterXSize=str(c1 - c0), rasterYSize=str(r1 - r0))
    _add(root, "SRS", CRS.from_user_input(grid.crs).to_wkt(), dataAxisToSRSAxisMapping="1,2")
    _add(root, "GeoTransform", f"{_num(gx)}, {_num(grid.cell)}, 0.0, {_num(gy)}, 0.0, {_num(-grid.cell)}")
    if tags:
        _metadata(root, sorted(tags.items()))
    for i, b in enumerate(bands, 1):
        band = _add(root, "VRTRasterBand", dataType="Float32", band=str(i), blockXSize=bs, blockYSize=bs)
        _add(band, "Description", b)
        _add(band, "NoDataValue", "nan")
        _metadata(band, [("name", b), ("units", BAND_UNITS.get(b, ""))])
        for tr, tc, rel in srcs:
            w = grid.tile_window(tr, tc)
            if not (r0 <= w.row_off and w.row_off + w.height <= r1 and c0 <= w.col_off and w.col_off + w.width <= c1):
                raise ValueError(f"tile ({tr}, {tc}) lies outside the VRT's extent tiles")
            width, height = str(w.width), str(w.height)
            src = _add(band, "SimpleSource")
            _add(src, "SourceFilename", rel, relativeToVRT="1")
            _add(src, "SourceBand", str(i))
            _add(src, "SourceProperties", RasterXSize=width, RasterYSize=height, DataType="Float32")
            _add(src, "SrcRect", xOff="0", yOff="0", xSize=width, ySize=height)
            _add(src, "DstRect", xOff=str(int(w.col_off) - c0), yOff=str(int(w.row_off) - r0), xSize=width,
                 ySize=height)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_vrt(path: str | os.PathLike, grid: Grid, sources: Iterable[tuple[int, int, str]],
              extent_tiles: Iterable[tuple[int, int]], bands: Sequence[str],
              tags: Mapping[str, str] | None = None, *, blocksize: int = 0) -> int:
    """Write a VRT mosaic of tile COGs (temporary name, then rename).

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
    blocksize : int
        The bands' block size; 0: :func:`~ssm_spark.product.cog.blocksize_for` the grid's tiles.

    Returns
    -------
    int
        Size of the file in bytes.

    Raises
    ------
    ValueError
        No extent tile, or a source tile outside the extent.
    """
    return write_text_atomic(Path(path), vrt_xml(grid, sources, extent_tiles, bands, tags, blocksize=blocksize))
