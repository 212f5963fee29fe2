"""Quicklook PNG of a date's product: SSM at reduced resolution, colour bar, region outline.

The image is read from the date's VRT mosaic with a decimated read (``out_shape``: GDAL uses the
COGs' overviews), so the driver never holds the full-resolution date. Rendering uses matplotlib's
object API on an Agg canvas (no pyplot state), with no timestamp in the PNG, so the same product
gives the same bytes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ssm_spark.io import atomic_path

__all__ = ["render_quicklook", "COLORMAP", "NO_ESTIMATE_COLOUR"]

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
    aspect_h = 6.0 * (top - bottom) / max(right - left, 1e-12)
    fig = Figure(figsize=(7.2, min(max(aspect_h, 3.0), 12.0) + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
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
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label("surface soil moisture (m$^3$/m$^3$)")
    n_valid = int(np.isfinite(ssm).sum())
    ax.text(0.01, 0.01, f"1:{f} decimated, {n_valid:,} cells shown", transform=ax.transAxes, fontsize=7,
            va="bottom", ha="left", color="#333333")
    png_path = Path(png_path)
    md = {"Software": None, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", metadata=md)
    return png_path.stat().st_size
