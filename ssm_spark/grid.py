"""Grids and tiles.

A :class:`Grid` is a value: a name, a CRS, the upper-left corner of its extent, a square cell size and
a shape. Cells are addressed by global ``(row, col)`` with row 0 at the top (north) and col 0 at the
left (west); tiles are square blocks of ``tile_size`` cells addressed by ``(tile_row, tile_col)``.
Tiles on the right and bottom edges may be smaller than ``tile_size`` when the grid's shape is not a
multiple of it.

Canonical grid: EASE-Grid 2.0 Global (EPSG:6933, the SMAP convention), nested at 1, 3, 9 and 36 km::

    km  cell size (m)         cols    rows
    1   1000.895023349556     34704   14616
    3   3002.685070048667     11568    4872
    9   9008.055210146        3856     1624
    36  36032.220840584        964      406

    x in [-17367530.44516138, 17367530.44516138], y in [-7314540.830638545, 7314540.830638545]

(Brodzik et al. 2012, ISPRS Int. J. Geo-Inf. 1, 32-45; NSIDC EASE-Grid 2.0 definitions.) The 3 km
cell is the 36 km cell / 12 exactly; the 3002.690070048668 m once quoted in the first design notes is
0.005 m too large and would put the grid's right edge 58 m past the projected antimeridian, and break
nesting. Grids, tiles and cells are described in docs/grids.md.

Cell arithmetic adds one nanocell before flooring, so a point that lies on a cell edge in exact
arithmetic (the lon/lat origin, tile corners) is not pushed into the previous cell by rounding.
Geographic grids (EPSG:4326) at any resolution in degrees cover [-180, 180] x [-90, 90].

Coordinate transforms use pyproj (``always_xy``: lon, lat order). Every function accepts scalars or
numpy arrays and broadcasts.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window

from ssm_spark.errors import GridError

__all__ = ["Grid", "EASE2_CELL_M", "DEFAULT_TILE_SIZE"]

DEFAULT_TILE_SIZE = 256
_EDGE_EPS = 1e-9  # in cells: see the module docstring

#: EASE-Grid 2.0 Global extent (metres, EPSG:6933).
EASE2_X_MAX = 17367530.44516138
EASE2_Y_MAX = 7314540.830638545

#: Nested EASE-Grid 2.0 Global resolutions: km -> (cell size m, n_cols, n_rows).
EASE2_CELL_M: dict[int, tuple[float, int, int]] = {
    1: (1000.895023349556, 34704, 14616),
    3: (3002.685070048667, 11568, 4872),
    9: (9008.055210146, 3856, 1624),
    36: (36032.220840584, 964, 406),
}


@functools.lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


#: Map projections whose inverse gives longitude from x alone and latitude from y alone (PROJ's
#: method names, as pyproj reports them).
_CYLINDRICAL = ("Lambert Cylindrical Equal Area", "Lambert Cylindrical Equal Area (Spherical)",
                "Equidistant Cylindrical", "Equidistant Cylindrical (Spherical)", "Mercator (variant A)",
                "Mercator (variant B)", "Popular Visualisation Pseudo Mercator")


@functools.lru_cache(maxsize=32)
def _separable(crs: str) -> bool:
    """Whether lon/lat of a point of ``crs`` depend on x and on y apart: a geographic CRS or one of
    :data:`_CYLINDRICAL`, and checked on a 3 x 3 spread of points (each longitude the same down its
    column, each latitude along its row, to the bit) so that a CRS of such a name with anything
    else in its path to WGS 84 (a datum shift) is projected point by point."""
    c = CRS.from_user_input(crs)
    op = c.coordinate_operation
    if not (c.is_geographic or (op is not None and op.method_name in _CYLINDRICAL)):
        return False
    try:
        x0, y0, x1, y1 = c.area_of_use.bounds if c.area_of_use else (-180.0, -80.0, 180.0, 80.0)
        bx, by = _transformer("EPSG:4326", crs).transform([x0 * 0.9, x1 * 0.9], [y0 * 0.9, y1 * 0.9])
        xs, ys = np.linspace(bx[0], bx[1], 3), np.linspace(by[0], by[1], 3)
        gx, gy = np.meshgrid(xs, ys)
        lon, lat = _transformer(crs, "EPSG:4326").transform(gx.ravel(), gy.ravel())
        lon, lat = np.asarray(lon).reshape(3, 3), np.asarray(lat).reshape(3, 3)
    except Exception:  # noqa: BLE001 - no check possible: project point by point
        return False
    return bool(np.isfinite(lon).all() and (lon == lon[:1]).all() and (lat == lat[:, :1]).all())


def _as_int(a: np.ndarray | float) -> np.ndarray | int:
    out = np.asarray(a).astype(np.int64)
    return int(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``x = x0 + (col + 0.5) * cell`` and ``y = y0 - (row + 0.5) * cell`` at cell centres.

    Parameters
    ----------
    name : str
        Stable identifier, e.g. ``"ease2_1km"`` or ``"geo_0.01deg"``; written into every table.
    crs : str
        CRS as an authority string (``"EPSG:6933"``).
    x0, y0 : float
        Upper-left corner of the grid's extent, in CRS units.
    cell : float
        Cell size in CRS units (square cells).
    n_rows, n_cols : int
        Shape of the whole grid.
    tile_size : int
        Side of a tile, in cells.
    """

    name: str
    crs: str
    x0: float
    y0: float
    cell: float
    n_rows: int
    n_cols: int
    tile_size: int = DEFAULT_TILE_SIZE

    def __post_init__(self) -> None:
        if self.cell <= 0 or self.n_rows <= 0 or self.n_cols <= 0:
            raise GridError(f"grid {self.name!r}: cell size and shape must be positive")
        if self.tile_size <= 0:
            raise GridError(f"grid {self.name!r}: tile_size must be positive, got {self.tile_size}")

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def ease2(cls, km: int, tile_size: int = DEFAULT_TILE_SIZE) -> "Grid":
        """EASE-Grid 2.0 Global at 1, 3, 9 or 36 km (EPSG:6933).

        Raises
        ------
        GridError
            If ``km`` is not one of the nested resolutions.
        """
        try:
            cell, n_cols, n_rows = EASE2_CELL_M[int(km)]
        except (KeyError, ValueError):
            raise GridError(
                f"EASE-Grid 2.0 Global has nested resolutions {sorted(EASE2_CELL_M)} km, not {km!r}"
            ) from None
        return cls(f"ease2_{int(km)}km", "EPSG:6933", -EASE2_X_MAX, EASE2_Y_MAX, cell, n_rows, n_cols,
                   tile_size)

    @classmethod
    def geographic(cls, deg: float, tile_size: int = DEFAULT_TILE_SIZE) -> "Grid":
        """Global geographic grid (EPSG:4326) at ``deg`` degrees; 360 and 180 must be multiples of it.

        Raises
        ------
        GridError
            If ``deg`` does not divide 180 degrees into a whole number of cells.
        """
        deg = float(deg)
        n_rows = round(180.0 / deg) if deg > 0 else 0
        if deg <= 0 or not math.isclose(n_rows * deg, 180.0, rel_tol=0, abs_tol=1e-9):
            raise GridError(f"geographic grid: {deg!r} deg does not divide 180 deg into whole cells")
        return cls(f"geo_{deg:g}deg", "EPSG:4326", -180.0, 90.0, deg, n_rows, 2 * n_rows, tile_size)

    @classmethod
    def from_name(cls, name: str, tile_size: int = DEFAULT_TILE_SIZE) -> "Grid":
        """Build a grid from its name: ``ease2_<km>km`` or ``geo_<deg>deg``.

        Raises
        ------
        GridError
            If the name has neither form.
        """
        if name.startswith("ease2_") and name.endswith("km"):
            return cls.ease2(int(name[len("ease2_"):-2]), tile_size)
        if name.startswith("geo_") and name.endswith("deg"):
            return cls.geographic(float(name[len("geo_"):-3]), tile_size)
        raise GridError(f"unknown grid name {name!r}: expected 'ease2_<1|3|9|36>km' or 'geo_<deg>deg'")

    def with_tile_size(self, tile_size: int) -> "Grid":
        """The same grid with another tile size."""
        return Grid(self.name, self.crs, self.x0, self.y0, self.cell, self.n_rows, self.n_cols, tile_size)

    # -- whole-grid properties ------------------------------------------------------------------
    @property
    def transform(self) -> Affine:
        """Affine transform of the whole grid (pixel corner convention, as rasterio/GDAL)."""
        return Affine(self.cell, 0.0, self.x0, 0.0, -self.cell, self.y0)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return (self.x0, self.y0 - self.n_rows * self.cell, self.x0 + self.n_cols * self.cell, self.y0)

    @property
    def n_tile_rows(self) -> int:
        return -(-self.n_rows // self.tile_size)

    @property
    def n_tile_cols(self) -> int:
        return -(-self.n_cols // self.tile_size)

    @property
    def is_geographic(self) -> bool:
        return CRS.from_user_input(self.crs).is_geographic

    # -- cell <-> coordinates -------------------------------------------------------------------
    def to_xy(self, lon, lat):
        """Project lon/lat (degrees) to grid CRS coordinates (x, y)."""
        return self._project("EPSG:4326", self.crs, lon, lat)

    def to_lonlat_xy(self, x, y):
        """Unproject grid CRS coordinates (x, y) to lon/lat (degrees)."""
        return self._project(self.crs, "EPSG:4326", x, y)

    @staticmethod
    def _project(src: str, dst: str, a, b):
        a, b = np.broadcast_arrays(np.asarray(a, dtype="f8"), np.asarray(b, dtype="f8"))
        if src == dst:
            pa, pb = a.copy(), b.copy()
        elif a.size == 1:  # pyproj's point path (it would warn, under numpy 2, on a size-1 array)
            pa, pb = _transformer(src, dst).transform(float(a.ravel()[0]), float(b.ravel()[0]))
            pa, pb = np.full(a.shape, pa), np.full(b.shape, pb)
        else:
            pa, pb = _transformer(src, dst).transform(a.ravel(), b.ravel())
            pa, pb = np.asarray(pa).reshape(a.shape), np.asarray(pb).reshape(b.shape)
        if pa.ndim == 0:
            return float(pa), float(pb)
        return pa, pb

    def xy_to_cell(self, x, y, strict: bool = True):
        """(row, col) of the cells containing CRS coordinates (x, y).

        Cells are half-open: a point on a cell's left/top edge belongs to that cell.

        Parameters
        ----------
        strict : bool
            If True, a point outside the grid raises; if False, its row and col are -1.

        Raises
        ------
        GridError
            If ``strict`` and a point is outside the grid (or not finite).
        """
        x = np.asarray(x, dtype="f8")
        y = np.asarray(y, dtype="f8")
        with np.errstate(invalid="ignore"):
            colf = np.floor((x - self.x0) / self.cell + _EDGE_EPS)
            rowf = np.floor((self.y0 - y) / self.cell + _EDGE_EPS)
            inside = (colf >= 0) & (colf < self.n_cols) & (rowf >= 0) & (rowf < self.n_rows)
        if not np.all(inside):
            if strict:
                xb, yb, ib = (a.ravel() for a in np.broadcast_arrays(x, y, inside))
                i = int(np.flatnonzero(~ib)[0])
                raise GridError(
                    f"point x={float(xb[i])!r}, y={float(yb[i])!r} ({self.crs}) is outside grid {self.name} "
                    f"with bounds {self.bounds}"
                )
            rowf = np.where(inside, rowf, -1)
            colf = np.where(inside, colf, -1)
        return _as_int(rowf), _as_int(colf)

    def to_cell(self, lon, lat, strict: bool = True):
        """(row, col) of the cells containing lon/lat points (degrees, WGS84).

        Raises
        ------
        GridError
            If ``strict`` and a point is outside the grid (e.g. beyond ~85.04 deg latitude on
            EASE-Grid 2.0 Global).
        """
        x, y = self.to_xy(lon, lat)
        return self.xy_to_cell(x, y, strict=strict)

    def cell_to_xy(self, row, col):
        """CRS coordinates (x, y) of cell centres."""
        row = np.asarray(row, dtype="f8")
        col = np.asarray(col, dtype="f8")
        x = self.x0 + (col + 0.5) * self.cell
        y = self.y0 - (row + 0.5) * self.cell
        return (float(x), float(y)) if x.ndim == 0 and y.ndim == 0 else (x, y)

    def window_lonlat(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """lon/lat (degrees) of every cell centre of a window: flat float64 arrays, row-major; the
        values of :meth:`to_lonlat` on those cells.

        On a grid whose longitude is a function of x alone and latitude of y alone (a cylindrical
        projection such as EASE-Grid 2.0 Global, or a geographic CRS: :func:`_separable`), one row
        and one column of cells are projected and broadcast: ``width + height`` points instead of
        ``width x height``, bit-identical (tests/test_grid.py); any other CRS is projected cell by cell.
        """
        rows = np.arange(row_off, row_off + height, dtype="f8")
        cols = np.arange(col_off, col_off + width, dtype="f8")
        if height * width > 0 and _separable(self.crs):
            x = self.x0 + (cols + 0.5) * self.cell   # as cell_to_xy computes them
            y = self.y0 - (rows + 0.5) * self.cell
            lon, _ = self.to_lonlat_xy(x, np.full(width, y[0]))
            _, lat = self.to_lonlat_xy(np.full(height, x[0]), y)
            return np.tile(np.asarray(lon, dtype="f8"), height), np.repeat(np.asarray(lat, dtype="f8"), width)
        rr, cc = np.divmod(np.arange(height * width, dtype=np.int64), width)
        lon, lat = self.to_lonlat(rr + row_off, cc + col_off)
        return np.asarray(lon, dtype="f8").ravel(), np.asarray(lat, dtype="f8").ravel()

    def to_lonlat(self, row, col):
        """lon/lat (degrees) of cell centres."""
        x, y = self.cell_to_xy(row, col)
        lon, lat = self.to_lonlat_xy(x, y)
        if np.ndim(lon) == 0:
            return float(lon), float(lat)
        return np.asarray(lon), np.asarray(lat)

    # -- windows and tiles ----------------------------------------------------------------------
    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of this grid (row_off/col_off in global cells)."""
        return self.transform * Affine.translation(window.col_off, window.row_off)

    def tile_of(self, row, col):
        """(tile_row, tile_col) of the tiles holding cells (row, col)."""
        return _as_int(np.asarray(row) // self.tile_size), _as_int(np.asarray(col) // self.tile_size)

    def _check_tile(self, tile_row: int, tile_col: int) -> None:
        if not (0 <= tile_row < self.n_tile_rows and 0 <= tile_col < self.n_tile_cols):
            raise GridError(
                f"tile ({tile_row}, {tile_col}) is outside grid {self.name} with "
                f"{self.n_tile_rows} x {self.n_tile_cols} tiles of {self.tile_size} cells"
            )

    def tile_window(self, tile_row: int, tile_col: int) -> Window:
        """Global-cell window of a tile (clipped at the grid's right and bottom edges).

        Raises
        ------
        GridError
            If the tile is outside the grid.
        """
        self._check_tile(tile_row, tile_col)
        r0, c0 = tile_row * self.tile_size, tile_col * self.tile_size
        return Window(c0, r0, min(self.tile_size, self.n_cols - c0), min(self.tile_size, self.n_rows - r0))

    def tile_transform(self, tile_row: int, tile_col: int) -> Affine:
        """Affine transform of a tile."""
        return self.window_transform(self.tile_window(tile_row, tile_col))

    def tile_bounds(self, tile_row: int, tile_col: int) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a tile in CRS units."""
        w = self.tile_window(tile_row, tile_col)
        left = self.x0 + w.col_off * self.cell
        top = self.y0 - w.row_off * self.cell
        return (left, top - w.height * self.cell, left + w.width * self.cell, top)

    def tile_polygon(self, tile_row: int, tile_col: int, lonlat: bool = True, densify: int = 16):
        """Shapely polygon of a tile, in lon/lat (default; edges densified) or in the grid CRS."""
        from shapely.geometry import box
        from shapely.ops import transform as shp_transform

        poly = box(*self.tile_bounds(tile_row, tile_col))
        if not lonlat or self.crs == "EPSG:4326":
            return poly
        poly = poly.segmentize(max(self.cell * self.tile_size / densify, self.cell))
        return shp_transform(lambda x, y: self.to_lonlat_xy(x, y), poly)

    def window_for_xy_bounds(self, left: float, bottom: float, right: float, top: float) -> Window:
        """Smallest global-cell window covering CRS bounds, clipped to the grid.

        Raises
        ------
        GridError
            If the bounds do not overlap the grid.
        """
        gl, gb, gr, gt = self.bounds
        left, right = max(left, gl), min(right, gr)
        bottom, top = max(bottom, gb), min(top, gt)
        if not (left < right and bottom < top):
            raise GridError(f"bounds do not overlap grid {self.name} {self.bounds}")
        c0 = int(math.floor((left - self.x0) / self.cell))
        c1 = int(math.ceil((right - self.x0) / self.cell))
        r0 = int(math.floor((self.y0 - top) / self.cell))
        r1 = int(math.ceil((self.y0 - bottom) / self.cell))
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, self.n_cols), min(r1, self.n_rows)
        return Window(c0, r0, c1 - c0, r1 - r0)

    def _geometry_to_grid_crs(self, geom):
        from shapely.ops import transform as shp_transform

        if self.crs == "EPSG:4326":
            return geom
        # Densify in degrees before projecting so long edges follow the projection.
        return shp_transform(lambda x, y: self.to_xy(x, y), geom.segmentize(0.05))

    def window_for_bbox(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Window:
        """Smallest window covering a lon/lat bounding box (clipped to the grid)."""
        from shapely.geometry import box

        return self.window_for_xy_bounds(*self._geometry_to_grid_crs(box(lon_min, lat_min, lon_max, lat_max)).bounds)

    def tiles_for_window(self, window: Window) -> list[tuple[int, int]]:
        """Tiles intersecting a global-cell window, row-major."""
        tr0, tc0 = window.row_off // self.tile_size, window.col_off // self.tile_size
        tr1 = (window.row_off + window.height - 1) // self.tile_size
        tc1 = (window.col_off + window.width - 1) // self.tile_size
        return [(tr, tc) for tr in range(int(tr0), int(tr1) + 1) for tc in range(int(tc0), int(tc1) + 1)]

    def tiles_for_bbox(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> list[tuple[int, int]]:
        """Tiles covering a lon/lat bounding box (the box is projected, edges densified)."""
        from shapely.geometry import box

        return self.tiles_for_geometry(box(lon_min, lat_min, lon_max, lat_max))

    def tiles_for_geometry(self, geom) -> list[tuple[int, int]]:
        """Tiles that intersect a shapely geometry given in lon/lat (polygon, multipolygon, ...).

        Raises
        ------
        GridError
            If the geometry does not overlap the grid.
        """
        import shapely
        from shapely.geometry import box

        g = self._geometry_to_grid_crs(geom)
        candidates = self.tiles_for_window(self.window_for_xy_bounds(*g.bounds))
        boxes = [box(*self.tile_bounds(tr, tc)) for tr, tc in candidates]
        hit = shapely.intersects(np.array(boxes, dtype=object), g)
        return [t for t, h in zip(candidates, hit) if h]

    def window_around(self, lon: float, lat: float, n_rows: int, n_cols: int, snap_to_tiles: bool = True) -> Window:
        """A window of ``n_rows x n_cols`` cells centred on a lon/lat point.

        With ``snap_to_tiles`` the window's upper-left corner is moved to the nearest tile corner, so
        a window whose sides are multiples of ``tile_size`` is exactly a block of whole tiles.

        Raises
        ------
        GridError
            If the window does not fit in the grid.
        """
        row, col = self.to_cell(lon, lat)
        r0, c0 = int(row) - n_rows // 2, int(col) - n_cols // 2
        if snap_to_tiles:
            r0 = int(round(r0 / self.tile_size)) * self.tile_size
            c0 = int(round(c0 / self.tile_size)) * self.tile_size
        if r0 < 0 or c0 < 0 or r0 + n_rows > self.n_rows or c0 + n_cols > self.n_cols:
            raise GridError(f"a {n_rows} x {n_cols} window around ({lon}, {lat}) does not fit in grid {self.name}")
        return Window(c0, r0, n_cols, n_rows)

    # -- nesting and aggregation ----------------------------------------------------------------
    def nest_factor(self, coarser: "Grid") -> int:
        """How many cells of this grid fit along one side of a cell of ``coarser``.

        Raises
        ------
        GridError
            If the grids do not nest (other CRS, non-integer ratio, or misaligned origins).
        """
        ratio = coarser.cell / self.cell
        factor = int(round(ratio))
        ok = (
            CRS.from_user_input(self.crs) == CRS.from_user_input(coarser.crs)
            and factor >= 1
            and math.isclose(ratio, factor, rel_tol=1e-9)
            and math.isclose(self.x0, coarser.x0, abs_tol=self.cell * 1e-6)
            and math.isclose(self.y0, coarser.y0, abs_tol=self.cell * 1e-6)
        )
        if not ok:
            raise GridError(f"grid {self.name} does not nest in {coarser.name} (CRS, cell ratio {ratio:.6f} or origin differ)")
        return factor

    def aggregate(self, values: np.ndarray, window: Window, coarser: "Grid", min_count: int = 1):
        """Exact block mean of a window of this grid onto a coarser nested grid.

        Each coarse cell is the mean of the valid (finite) fine cells inside it; coarse cells with
        fewer than ``min_count`` valid fine cells are NaN. A window not aligned to the coarse cells is
        padded with NaN, so partial coarse cells at the window's edges are means of what is there.

        Parameters
        ----------
        values : ndarray, shape (window.height, window.width)
        window : Window
            Where ``values`` sit in this grid (global cells).
        coarser : Grid
            A grid this one nests in.
        min_count : int
            Minimum number of valid fine cells for a coarse value.

        Returns
        -------
        mean : ndarray (float64)
        count : ndarray (int64)
            Valid fine cells per coarse cell.
        coarse_window : Window
            Where the result sits in ``coarser``.

        Raises
        ------
        GridError
            If the grids do not nest or ``values`` does not have the window's shape.
        """
        f = self.nest_factor(coarser)
        values = np.asarray(values, dtype="f8")
        if values.shape != (int(window.height), int(window.width)):
            raise GridError(f"values shape {values.shape} != window shape {(window.height, window.width)}")
        r0, c0 = int(window.row_off), int(window.col_off)
        cr0, cc0 = r0 // f, c0 // f
        cr1 = -(-(r0 + values.shape[0]) // f)
        cc1 = -(-(c0 + values.shape[1]) // f)
        padded = np.full(((cr1 - cr0) * f, (cc1 - cc0) * f), np.nan)
        pr, pc = r0 - cr0 * f, c0 - cc0 * f
        padded[pr:pr + values.shape[0], pc:pc + values.shape[1]] = values
        blocks = padded.reshape(cr1 - cr0, f, cc1 - cc0, f)
        valid = np.isfinite(blocks)
        count = valid.sum(axis=(1, 3))
        total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count >= max(min_count, 1), total / np.maximum(count, 1), np.nan)
        return mean, count.astype(np.int64), Window(cc0, cr0, cc1 - cc0, cr1 - cr0)

    def describe(self) -> dict:
        """Plain-data description (for manifests, logs and provenance)."""
        return {
            "name": self.name, "crs": self.crs, "x0": self.x0, "y0": self.y0, "cell": self.cell,
            "n_rows": self.n_rows, "n_cols": self.n_cols, "tile_size": self.tile_size,
            "n_tile_rows": self.n_tile_rows, "n_tile_cols": self.n_tile_cols,
        }


def iter_tile_windows(grid: Grid, tiles: Iterable[tuple[int, int]]):
    """Yield ``(tile_row, tile_col, window, transform)`` for tiles of a grid."""
    for tr, tc in tiles:
        w = grid.tile_window(tr, tc)
        yield tr, tc, w, grid.window_transform(w)
