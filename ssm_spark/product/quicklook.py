"""Quicklook PNG of a date's product: SSM at reduced resolution, colour bar, region outline.

The image is read from the date's VRT mosaic with a decimated read (``out_shape``: GDAL uses the
COGs' overviews), so the driver never holds the full-resolution date. Rendering uses matplotlib's
object API on an Agg canvas (no pyplot state), the axes placed by :func:`_image_box` (no layout
engine), with no timestamp in the PNG, so the same product gives the same bytes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ssm_spark.io import atomic_path

__all__ = ["render_quicklook", "COLORMAP", "NO_ESTIMATE_COLOUR", "PNG_COMPRESS_LEVEL"]

#: The matplotlib colour map of SSM (the product browser's map tiles use it too).
COLORMAP = "YlGnBu"
#: Colour of cells without an estimate in the quicklook (the browser leaves them transparent).
NO_ESTIMATE_COLOUR = "#d9d9d9"


def render_quicklook(vrt_path: str | os.PathLike, png_path: str | os.PathLike, *, title: str, band: int = 1,
                     outline_xy: Sequence[np.ndarray] = (), max_px: int = 1024,
                     vrange: tuple[float, float] = (0.0, 0.5), metadata: Mapping[str, str] | None = None) -> int:
    """Render the SSM band of a VRT mosaic to a PNG; return the PNG's size in bytes.

    Parameters
    ----------
    vrt_path : path-like
        The date's VRT.
    band : int
        1-based index of the ``ssm`` band.
    png_path : path-like
        The PNG to write (temporary name, then rename).
    title : str
        Figure title (date, grid, manifest id, config hash).
    outline_xy : sequence of (2, n) arrays
        Region outline rings in the grid CRS (metres or degrees), drawn over the image.
    max_px : int
        Longest side of the decimated read.
    vrange : (float, float)
        Colour bar range (m3/m3).
    metadata : mapping, optional
        PNG text chunks (manifest id, config hash).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import rasterio
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rasterio.open(vrt_path) as src:
        f = max(1, math.ceil(max(src.width, src.height) / max_px))
        shape = (max(1, math.ceil(src.height / f)), max(1, math.ceil(src.width / f)))
        ssm = src.read(band, out_shape=shape).astype("f8")
        left, bottom, right, top = src.bounds
        geographic = bool(src.crs and src.crs.is_geographic)
    scale = 1.0 if geographic else 1e-3  # km on projected grids
    unit = "deg" if geographic else "km"
    cmap = matplotlib.colormaps[COLORMAP].copy()
    cmap.set_bad(NO_ESTIMATE_COLOUR)
    ratio = (top - bottom) / max(right - left, 1e-12)
    # the image 5.1 in wide (7.2 in less the margins) and as high as its ratio makes it, 2.2-11.2 in
    fig = Figure(figsize=(7.2, min(max((7.2 - _LEFT - _RIGHT) * ratio, 2.2), 11.2) + _BOTTOM + _TOP), dpi=100)
    FigureCanvasAgg(fig)
    box = _image_box(fig, ratio)
    ax, cax = fig.add_axes(box), fig.add_axes(_bar_box(fig, box))
    im = ax.imshow(np.ma.masked_invalid(ssm), cmap=cmap, vmin=vrange[0], vmax=vrange[1], interpolation="nearest",
                   extent=(left * scale, right * scale, bottom * scale, top * scale), origin="upper")
    for ring in outline_xy:
        ring = np.asarray(ring)
        ax.plot(ring[0] * scale, ring[1] * scale, color="#d7301f", linewidth=1.2)
    ax.set_xlim(left * scale, right * scale)
    ax.set_ylim(bottom * scale, top * scale)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(title, fontsize=8)
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("surface soil moisture (m$^3$/m$^3$)")
    n_valid = int(np.isfinite(ssm).sum())
    ax.text(0.01, 0.01, f"1:{f} decimated, {n_valid:,} cells shown", transform=ax.transAxes, fontsize=7,
            va="bottom", ha="left", color="#333333")
    png_path = Path(png_path)
    md = {"Software": None, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(png_path) as tmp:  # zlib level 1: ~1/4 of the encoding time of PIL's 6, a somewhat larger file
        fig.savefig(tmp, format="png", metadata=md, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return png_path.stat().st_size


#: Margins of the quicklook (inches): the tick labels and axis titles left and below, the two-line
#: title above, the colour bar with its ticks and label on the right.
_LEFT, _BOTTOM, _TOP, _RIGHT = 0.85, 0.55, 0.5, 1.25
#: zlib level of the PNG (PIL's default is 6; 1 encodes a 720 x 700 quicklook in ~25 ms instead of ~95).
PNG_COMPRESS_LEVEL = 1


def _image_box(fig, ratio: float) -> tuple[float, float, float, float]:
    """The image's axes (figure fractions): the largest box of the data's height/width ``ratio``
    inside the margins, centred; placed here once instead of by a layout engine (matplotlib's
    constrained layout measured every text twice: ~0.13 CPU-s a date, half the rendering)."""
    w_in, h_in = fig.get_size_inches()
    aw, ah = w_in - _LEFT - _RIGHT, h_in - _BOTTOM - _TOP
    if ah / aw > ratio:  # wider than the room allows: full width, less height
        bw, bh = aw, aw * ratio
    else:
        bw, bh = ah / ratio, ah
    x0, y0 = _LEFT + (aw - bw) / 2, _BOTTOM + (ah - bh) / 2
    return x0 / w_in, y0 / h_in, bw / w_in, bh / h_in


def _bar_box(fig, image: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The colour bar's axes: 0.15 in right of the image, 0.18 in wide, 85 % of its height, centred."""
    w_in, _ = fig.get_size_inches()
    x, y, w, h = image
    return x + w + 0.15 / w_in, y + 0.075 * h, 0.18 / w_in, 0.85 * h
