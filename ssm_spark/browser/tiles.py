"""Web Mercator map tiles of a product date, rendered server-side from its VRT with rio-tiler.

``layer="ssm"``: the ``ssm`` band through the quicklooks' colour map
(:data:`ssm_spark.product.quicklook.COLORMAP`) over the same range (``produce.quicklook_range``),
cells without an estimate (NaN, nodata) transparent. ``layer="qc"``, the QC mask: the product's
cells *without* an estimate (``ssm`` NaN, ``qc`` set), coloured by the first class of
:data:`QC_CLASSES` their ``qc`` bits fall in (else :data:`NO_ESTIMATE_OTHER`); cells with an
estimate and cells outside the product transparent.
rio-tiler reprojects the EASE-Grid 2.0 (or geographic) mosaic to the tile with nearest-neighbour
resampling (so QC bits stay bits), using the COGs' overviews at low zooms.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ssm_spark.physics.qc import QC
from ssm_spark.product.quicklook import COLORMAP

__all__ = ["TileRenderer", "QC_CLASSES", "NO_ESTIMATE_OTHER", "colour_stops", "TILE_SIZE", "MAX_ZOOM"]

TILE_SIZE = 256
#: Deepest zoom served (a 1 km cell is ~400 px wide at zoom 18 at the equator; nothing is deeper).
MAX_ZOOM = 18

#: Why a cell has no estimate, as the QC mask shows it: (name, bits, RGBA); the first class any of the
#: cell's bits is in wins.
QC_CLASSES: tuple[tuple[str, int, tuple[int, int, int, int]], ...] = (
    ("water", int(QC.MASKED_WATER), (106, 81, 163, 220)),  # purple: no blue or green of the SSM map
    ("built-up", int(QC.MASKED_URBAN), (178, 24, 43, 220)),
    ("snow / ice", int(QC.MASKED_SNOW_ICE), (240, 240, 255, 230)),
    ("frozen", int(QC.FROZEN), (188, 189, 220, 230)),
    ("steep slope", int(QC.STEEP_SLOPE), (140, 81, 10, 220)),
    ("missing input", int(QC.MISSING_INPUT), (40, 40, 40, 220)),
    ("estimate out of range", int(QC.PREDICTION_OUT_OF_RANGE), (197, 27, 125, 220)),
)
#: A cell without an estimate whose bits are in no class of :data:`QC_CLASSES`.
NO_ESTIMATE_OTHER: tuple[str, tuple[int, int, int, int]] = ("no estimate, other", (254, 178, 76, 220))


def _lut() -> np.ndarray:
    """(256, 4) uint8 RGBA: the colour map's 256 entries, as matplotlib draws the quicklooks."""
    import matplotlib

    return matplotlib.colormaps[COLORMAP](np.arange(256), bytes=True)


def colour_stops(n: int = 11) -> list[str]:
    """``n`` evenly spaced colours of the map (``#rrggbb``), for the page's colour bar."""
    lut = _lut()
    idx = np.linspace(0, 255, n).round().astype(int)
    return ["#%02x%02x%02x" % tuple(int(v) for v in lut[i, :3]) for i in idx]


def _png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an (h, w, 4) uint8 array (Pillow, matplotlib's own image library; rio-tiler's
    encoder goes through GDAL and warns about the PNG's missing georeferencing)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


class TileRenderer:
    """PNG tiles of VRTs (thread-safe: each tile opens the VRT; recent tiles kept in memory).

    Parameters
    ----------
    vrange : (float, float)
        Colour range of ``ssm`` (m3/m3).
    cache : int
        Rendered tiles kept (keyed by the VRT's path, size and modification time).
    """

    def __init__(self, vrange: tuple[float, float], cache: int = 512) -> None:
        lo, hi = (float(v) for v in vrange)
        if not hi > lo:
            raise ValueError(f"colour range must be (low, high) with low < high, got {vrange}")
        self.vrange = (lo, hi)
        self.lut = _lut()
        self.empty = _png(np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8))
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()

    def tile(self, vrt: Path, z: int, x: int, y: int, layer: str) -> bytes:
        """The PNG of tile z/x/y (fully transparent where the date has no data)."""
        st = vrt.stat()
        key = (str(vrt), st.st_mtime_ns, st.st_size, z, x, y, layer)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        png = self._render(vrt, z, x, y, layer)
        with self._lock:
            self._cache[key] = png
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return png

    def _render(self, vrt: Path, z: int, x: int, y: int, layer: str) -> bytes:
        from rio_tiler.errors import TileOutsideBounds
        from rio_tiler.io import Reader

        with Reader(str(vrt)) as src:
            names = list(src.dataset.descriptions)
            want = ("ssm",) if layer == "ssm" else ("ssm", "qc")
            missing = [b for b in want if b not in names]
            if missing:
                raise KeyError(f"{vrt.name} has no band {missing[0]!r} (bands: {names})")
            try:
                img = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=tuple(names.index(b) + 1 for b in want),
                               resampling_method="nearest")
            except TileOutsideBounds:
                return self.empty
        data = np.asarray(img.data, dtype="f8")
        inside = np.asarray(img.mask) > 0
        rgba = np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8)
        if layer == "ssm":
            valid = inside & np.isfinite(data[0])
            lo, hi = self.vrange
            # matplotlib's rule (Normalize, then the colour map's 256 bins; out of range: the end colours)
            idx = np.clip(np.floor((np.where(valid, data[0], lo) - lo) / (hi - lo) * 256), 0, 255).astype(np.intp)
            rgba[valid] = self.lut[idx[valid]]
        else:  # a product cell (qc set) without an estimate, by the first class its bits are in
            todo = np.isfinite(data[1]) & ~np.isfinite(data[0])
            valid = todo.copy()
            bits = np.where(todo, data[1], 0).astype(np.int64)
            for _, mask, colour in QC_CLASSES:
                hit = todo & ((bits & mask) != 0)
                rgba[hit] = colour
                todo &= ~hit
            rgba[todo] = NO_ESTIMATE_OTHER[1]
        if not valid.any():
            return self.empty
        return _png(rgba)
