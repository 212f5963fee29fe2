"""The region of a product: the grid tiles it touches, then which cells of those tiles it keeps.

A region is a bbox, a GeoJSON file (Polygon/MultiPolygon in lon/lat), a name in
``produce.regions``, or the configured ``region`` section (a cell window, or its bbox)
(:func:`resolve_region`, on the driver). Its tiles come from :meth:`Grid.tiles_for_geometry`; on
the executors (:func:`clip_mask`), cells of tiles the region only partly covers are kept when their
centre (lon/lat) intersects the region, with shapely's vectorised ``intersects_xy`` on a prepared
geometry (GEOS, the engine behind JTS/Sedona's ``ST_Intersects``): the rows are already in the
Python task that reads and predicts them, so the test costs no round trip through the JVM; tiles
wholly inside the region are not tested cell by cell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.grid import Grid

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config

__all__ = ["Region", "resolve_region", "clip_mask"]

@dataclass(frozen=True)
class Region:
    """The cells a product covers: tiles of the grid, then a geometry (lon/lat) or a cell window.

    ``geometry_wkb`` (a polygon or multipolygon in lon/lat) or ``window`` (``row_off, col_off,
    height, width`` in global cells) decides which cells of the tiles are kept; ``full_tiles`` are
    the tiles wholly inside it (kept without a per-cell test).
    """

    name: str
    kind: str  # "bbox" | "geojson" | "config"
    source: str
    tiles: tuple[tuple[int, int], ...]
    full_tiles: frozenset = field(default_factory=frozenset)
    geometry_wkb: bytes | None = None
    window: tuple[int, int, int, int] | None = None

    @property
    def geometry(self):
        """The region as a shapely geometry in lon/lat (None for a window region)."""
        import shapely

        return None if self.geometry_wkb is None else shapely.from_wkb(self.geometry_wkb)

    def key(self) -> str:
        """What identifies the region's cells (enters the product hash)."""
        if self.geometry_wkb is not None:
            return "wkb:" + hashlib.sha256(self.geometry_wkb).hexdigest()
        return f"window:{list(self.window)}"

    def describe(self, grid: Grid) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "source": self.source, "tiles": len(self.tiles),
                               "tiles_partly_covered": len(self.tiles) - len(self.full_tiles)}
        if self.geometry_wkb is not None:
            out["bounds_lonlat"] = [round(float(v), 6) for v in self.geometry.bounds]
        else:
            r0, c0, h, w = self.window
            out["window"] = {"row_off": r0, "col_off": c0, "height": h, "width": w}
        return out

    def outline_xy(self, grid: Grid) -> list[np.ndarray]:
        """Outline rings in the grid's CRS (for the quicklooks)."""
        if self.window is not None:
            r0, c0, h, w = self.window
            x0, y0 = grid.x0 + c0 * grid.cell, grid.y0 - r0 * grid.cell
            x1, y1 = x0 + w * grid.cell, y0 - h * grid.cell
            return [np.array([[x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]])]
        rings = []
        g = self.geometry
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                lon, lat = np.asarray(ring.segmentize(0.05).coords).T
                x, y = grid.to_xy(lon, lat)
                rings.append(np.vstack([x, y]))
        return rings


def _parse_bbox(spec: str) -> tuple[float, float, float, float] | None:
    parts = spec.split(",")
    if len(parts) != 4:
        return None
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        return None
    return vals  # type: ignore[return-value]


def _check_bbox(b: Sequence[float], where: str) -> tuple[float, float, float, float]:
    lon0, lat0, lon1, lat1 = (float(v) for v in b)
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise InputError(f"{where}: bbox must be lon_min,lat_min,lon_max,lat_max in degrees with min < max, "
                         f"got {list(b)}")
    return lon0, lat0, lon1, lat1


def _read_geojson(path: Path):
    import shapely
    from shapely.geometry import shape

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the region as GeoJSON ({exc})") from exc
    crs = (data.get("crs") or {}).get("properties", {}).get("name", "") if isinstance(data, dict) else ""
    if crs and not any(k in crs.upper() for k in ("CRS84", "4326")):
        raise InputError(f"{path}: GeoJSON CRS {crs!r}; regions must be in lon/lat (WGS84, RFC 7946)")
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features", [])]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    polys = []
    for g in geoms:
        if not g:
            continue
        try:
            s = shape(g)
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise InputError(f"{path}: not a GeoJSON geometry ({exc})") from exc
        if s.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: region geometries must be Polygon or MultiPolygon, found {s.geom_type}")
        polys.append(s if s.is_valid else shapely.make_valid(s))
    if not polys:
        raise InputError(f"{path}: no polygon in the GeoJSON")
    geom = shapely.union_all(polys)
    if geom.is_empty or geom.area == 0:
        raise InputError(f"{path}: the region's polygons are empty")
    if geom.geom_type == "GeometryCollection":  # make_valid can add stray lines: keep the areas
        geom = shapely.union_all([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    lon0, lat0, lon1, lat1 = geom.bounds
    if lon0 < -180 or lon1 > 180 or lat0 < -90 or lat1 > 90:
        raise InputError(f"{path}: coordinates beyond lon/lat limits {geom.bounds}: is the file in lon/lat (WGS84)?")
    return geom


def _geometry_region(name: str, kind: str, source: str, geom, grid: Grid) -> Region:
    import shapely

    geom = shapely.normalize(geom)
    tiles = tuple(sorted(grid.tiles_for_geometry(geom)))
    if not tiles:
        raise InputError(f"region {name!r} ({source}) covers no tile of grid {grid.name}")
    shapely.prepare(geom)
    full = frozenset(t for t in tiles if geom.contains(grid.tile_polygon(*t)))
    return Region(name, kind, source, tiles, full, shapely.to_wkb(geom), None)


def resolve_region(spec: str | None, cfg: "Config", grid: Grid) -> Region:
    """The region of a product run.

    Parameters
    ----------
    spec : str or None
        ``"lon_min,lat_min,lon_max,lat_max"``; a GeoJSON file (Polygon/MultiPolygon, Feature or
        FeatureCollection, lon/lat); a name in ``produce.regions`` (a bbox or a GeoJSON path); the
        name of the configured ``region`` section (its window, or its bbox); None: the configured
        region.
    cfg : Config
    grid : Grid

    Returns
    -------
    Region

    Raises
    ------
    InputError
        If ``spec`` is none of the above, or the geometry is unreadable, not a polygon or outside
        the grid.
    """
    from shapely.geometry import box

    from ssm_spark.errors import GridError

    try:
        if spec is None or spec == cfg.region.name:
            r = cfg.region
            if r.bbox is not None:
                return _geometry_region(r.name, "config", "region.bbox", box(*r.bbox), grid)
            w = r.window(grid)
            win = (int(w.row_off), int(w.col_off), int(w.height), int(w.width))
            tiles = tuple(sorted(grid.tiles_for_window(w)))
            full = frozenset(t for t in tiles if _window_contains(win, grid.tile_window(*t)))
            return Region(r.name, "config", "region (center + size_km)", tiles, full, None, win)
        bbox = _parse_bbox(spec)
        if bbox is not None:
            return _geometry_region("bbox", "bbox", spec, box(*_check_bbox(bbox, "--region")), grid)
        if spec in cfg.produce.regions:
            named = cfg.produce.regions[spec]
            if isinstance(named, str):
                return _geometry_region(spec, "geojson", named, _read_geojson(Path(named)), grid)
            return _geometry_region(spec, "bbox", str(list(named)), box(*_check_bbox(named, f"produce.regions.{spec}")),
                                    grid)
        path = Path(spec)
        if path.is_file():
            return _geometry_region(path.stem, "geojson", str(path), _read_geojson(path), grid)
    except GridError as exc:
        raise InputError(f"region {spec!r}: {exc}") from exc
    known = sorted([cfg.region.name, *cfg.produce.regions])
    raise InputError(f"region {spec!r} is not a bbox 'lon_min,lat_min,lon_max,lat_max', an existing GeoJSON file, "
                     f"or a named region (known: {known}; add names under produce.regions)")


def _window_contains(win: tuple[int, int, int, int], w) -> bool:
    r0, c0, h, wd = win
    return r0 <= w.row_off and c0 <= w.col_off and w.row_off + w.height <= r0 + h and w.col_off + w.width <= c0 + wd


# ------------------------------------------------------------------- executor side (also no-Spark)

_GEOM_CACHE: dict[str, Any] = {}


def _prepared(region: Region):
    import shapely

    key = region.key()
    g = _GEOM_CACHE.get(key)
    if g is None:
        g = region.geometry
        shapely.prepare(g)
        _GEOM_CACHE[key] = g
    return g


def clip_mask(px: pd.DataFrame, region: Region) -> np.ndarray:
    """Rows of a pixel frame inside the region (tile list, then geometry or window per cell)."""
    import shapely

    n = len(px)
    if n == 0:
        return np.zeros(0, dtype=bool)
    tr = px["tile_row"].to_numpy(np.int64)
    tc = px["tile_col"].to_numpy(np.int64)
    code = tr * 10_000_000 + tc
    tiles = np.array([a * 10_000_000 + b for a, b in region.tiles], dtype=np.int64)
    full = np.array([a * 10_000_000 + b for a, b in region.full_tiles], dtype=np.int64)
    keep = np.isin(code, tiles)
    test = keep & ~np.isin(code, full)
    if test.any():
        if region.window is not None:
            r0, c0, h, w = region.window
            r = px["row"].to_numpy(np.int64)[test]
            c = px["col"].to_numpy(np.int64)[test]
            keep[test] = (r >= r0) & (r < r0 + h) & (c >= c0) & (c < c0 + w)
        else:
            lon, lat = px["lon"].to_numpy()[test], px["lat"].to_numpy()[test]
            keep[test] = shapely.intersects_xy(_prepared(region), lon, lat)
    return keep
