"""Earth Engine request builders: one per input, each a function of (settings, date or window, grid).

Every builder returns an ``ee.Image`` whose bands carry the project's band names (docs/contracts.md,
"Feature stacks") and stored values converted to our units (the ``scale``/``offset`` of the configured
:class:`~ssm_spark.sources.earthengine.settings.Layer`). Images are put on the grid by
:func:`on_grid`: ``reduceResolution`` (mean, so a 1 km cell is the mean of the 10 m pixels under it;
backscatter averaged in linear power) then ``reproject`` with the grid's ``crs`` and
``crsTransform`` (not just a scale), so an exported pixel is exactly a grid cell. Three stacks make
the three files the stack reader reads (:mod:`ssm_spark.sources.stacks`):

=================  =============================================================  ========
stack              bands                                                          type
=================  =============================================================  ========
dynamic (per date) vv_db, vh_db, incidence_deg, ndvi, lst_k, precip_mm             float32
static             clay_pct, sand_pct, bulk_density, elevation_m, slope_deg        float32
classes            landcover (WorldCover), climate (Koppen-Geiger 1-30)            uint8
=================  =============================================================  ========

``ee`` is imported inside the functions; initialise it first (live: :class:`.client.EEClient`;
offline, for tests and ``--dry-run``: :func:`.client.offline`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.grid import Grid
    from ssm_spark.sources.earthengine.settings import EarthEngineConfig, Layer

__all__ = ["grid_crs", "crs_transform", "tile_region", "on_grid", "layer_image", "s1", "ndvi", "lst", "precip",
           "soil", "terrain", "landcover", "climate", "dynamic_stack", "static_stack", "classes_stack", "STACKS"]

#: The three files per tile, their bands and GeoTIFF data type.
STACKS = {"dynamic": (DYNAMIC_BANDS, "float32"), "static": (STATIC_BANDS, "float32"), "classes": (CLASS_BANDS, "uint8")}


def _ee():
    import ee

    return ee


def _day(date: Any) -> dt.date:
    return date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))


def _iso(d: dt.date) -> str:
    return d.isoformat()


# ------------------------------------------------------------------------------------------- grid


def grid_crs(grid: "Grid") -> str:
    """The grid's CRS as Earth Engine names it (``EPSG:6933``, ``EPSG:4326``)."""
    from pyproj import CRS

    epsg = CRS.from_user_input(grid.crs).to_epsg()
    return f"EPSG:{epsg}" if epsg else CRS.from_user_input(grid.crs).to_wkt()


def crs_transform(grid: "Grid") -> list[float]:
    """The grid's affine transform as Earth Engine's ``crsTransform`` ``[a, b, c, d, e, f]``."""
    t = grid.transform
    return [float(t.a), float(t.b), float(t.c), float(t.d), float(t.e), float(t.f)]


def tile_bounds(grid: "Grid", tile_row: int, tile_col: int) -> list[float]:
    """``[x_min, y_min, x_max, y_max]`` of a tile in the grid's CRS (exactly its cells' edges)."""
    w = grid.tile_window(tile_row, tile_col)
    x0 = grid.x0 + int(w.col_off) * grid.cell
    y1 = grid.y0 - int(w.row_off) * grid.cell
    return [x0, y1 - int(w.height) * grid.cell, x0 + int(w.width) * grid.cell, y1]


def tile_region(grid: "Grid", tile_row: int, tile_col: int):
    """The tile as a planar ``ee.Geometry.Rectangle`` in the grid's CRS (the export region)."""
    ee = _ee()
    return ee.Geometry.Rectangle(tile_bounds(grid, tile_row, tile_col), proj=grid_crs(grid), geodesic=False)


def on_grid(image, grid: "Grid", cfg: "EarthEngineConfig", *, reducer: str = "mean", native_m: float | None = None):
    """``image`` resampled onto the grid: ``reduceResolution`` (``mean``, or ``mode`` for classes) at
    most ``cfg.reduce_max_pixels`` inputs per cell, then ``reproject(crs, crsTransform)``.

    A composite of a collection has no fixed projection (Earth Engine would sample it at the output
    cell instead of averaging): ``native_m`` gives it one first, the grid's CRS at the input's own
    pixel size, so ``reduceResolution`` averages the native pixels under each cell."""
    ee = _ee()
    red = ee.Reducer.mode() if reducer == "mode" else ee.Reducer.mean()
    if native_m is not None:
        image = image.setDefaultProjection(crs=grid_crs(grid), scale=float(native_m))
    return (image.reduceResolution(reducer=red, maxPixels=cfg.reduce_max_pixels)
            .reproject(crs=grid_crs(grid), crsTransform=crs_transform(grid)))


def layer_image(layer: "Layer", start: dt.date | None = None, end: dt.date | None = None, reducer: str = "mean"):
    """The configured layer's band in our unit (``value * scale + offset``); a collection is filtered
    to ``[start, end)`` when given and reduced (``mean``, ``sum``, ``first`` or ``mosaic``)."""
    ee = _ee()
    if layer.image:
        img = ee.Image(layer.collection).select([layer.band])
    else:
        col = ee.ImageCollection(layer.collection).select([layer.band])
        if start is not None:
            col = col.filterDate(_iso(start), _iso(end))
        img = {"mean": col.mean, "sum": col.sum, "first": col.first, "mosaic": col.mosaic}[reducer]()
        img = ee.Image(img)
    if layer.scale != 1.0:
        img = img.multiply(layer.scale)
    if layer.offset != 0.0:
        img = img.add(layer.offset)
    return img


# ----------------------------------------------------------------------------------------- dynamic


def s1_collection(cfg: "EarthEngineConfig", start: dt.date, end: dt.date, region=None):
    """COPERNICUS/S1_GRD scenes of ``[start, end)``: IW, VV + VH, the orbit pass when configured."""
    ee = _ee()
    s = cfg.s1
    col = (ee.ImageCollection(s.collection).filterDate(_iso(start), _iso(end))
           .filter(ee.Filter.eq("instrumentMode", s.instrument_mode))
           .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
           .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
           .filter(ee.Filter.eq("resolution_meters", s.resolution_m)))
    if s.orbit_pass:
        col = col.filter(ee.Filter.eq("orbitProperties_pass", s.orbit_pass))
    if region is not None:
        col = col.filterBounds(region)
    return col


def _s1_clean(cfg: "EarthEngineConfig"):
    """Per scene: border noise and scene-edge angles masked, speckle filtered; VV, VH in linear power."""
    ee = _ee()
    s = cfg.s1

    def clean(img):
        angle = img.select("angle")
        db = img.select(["VV", "VH"])
        ok = angle.gte(s.angle_range_deg[0]).And(angle.lte(s.angle_range_deg[1]))
        if s.border_noise_db is not None:
            ok = ok.And(db.reduce(ee.Reducer.min()).gt(s.border_noise_db))
        lin = ee.Image(10).pow(db.divide(10))
        if s.speckle == "focal_median":
            lin = lin.focalMedian(radius=s.speckle_radius_m, kernelType="circle", units="meters")
        return ee.Image(lin.addBands(angle).updateMask(ok).copyProperties(img, ["system:time_start"]))

    return clean


def s1(cfg: "EarthEngineConfig", date: Any, grid: "Grid", region=None):
    """``vv_db, vh_db, incidence_deg`` on the grid for a date (scenes of that UTC day, or within +-
    ``s1.window_days``; with ``speckle: temporal_mean``, backscatter is the mean over +-
    ``s1.temporal_days``). Averaged in linear power, returned in dB."""
    ee = _ee()
    s = cfg.s1
    d = _day(date)
    w = s.temporal_days if s.speckle == "temporal_mean" else s.window_days
    col = s1_collection(cfg, d - dt.timedelta(days=w), d + dt.timedelta(days=w + 1), region).map(_s1_clean(cfg))
    mean = col.mean()
    lin = on_grid(mean.select(["VV", "VH"]), grid, cfg, native_m=s.resolution_m)
    angle = on_grid(mean.select(["angle"]), grid, cfg, native_m=s.resolution_m)
    db = lin.log10().multiply(10)
    return db.rename(["vv_db", "vh_db"]).addBands(angle.rename(["incidence_deg"]))


def ndvi(cfg: "EarthEngineConfig", date: Any, grid: "Grid", region=None):
    """``ndvi`` on the grid at the date.

    Sentinel-2 (default): surface reflectance scenes within +- ``ndvi.window_days`` with the SCL
    classes of ``ndvi.s2_scl_masked`` masked; per pixel the last clear NDVI before the date and the
    first after it are interpolated linearly in time (the nearest one alone where only one side
    has a clear observation). MODIS: the mean of the 16-day composites in the window.
    """
    ee = _ee()
    n = cfg.ndvi
    d = _day(date)
    t0 = ee.Date(_iso(d))
    start, end = d - dt.timedelta(days=n.window_days), d + dt.timedelta(days=n.window_days + 1)
    if n.source == "modis":
        return on_grid(layer_image(n.modis, start, end), grid, cfg, native_m=n.modis.native_m).rename(["ndvi"])
    col = (ee.ImageCollection(n.s2_collection).filterDate(_iso(start), _iso(end))
           .filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", n.s2_max_cloud_pct)))
    if region is not None:
        col = col.filterBounds(region)
    masked = ee.List(n.s2_scl_masked)

    def clear_ndvi(img):
        scl = img.select(n.s2_scl_band)
        ok = scl.remap(masked, ee.List.repeat(0, masked.size()), 1).eq(1)
        v = img.normalizedDifference([n.s2_nir, n.s2_red]).rename("ndvi")
        days = ee.Date(img.get("system:time_start")).difference(t0, "day")
        return v.addBands(ee.Image.constant(days).float().rename("dt")).updateMask(ok)

    # latest before (largest dt <= 0) and earliest after (smallest dt >= 0, via -dt as quality); the
    # scenes are split by date before the NDVI (normalizedDifference keeps no properties)
    before = col.filter(ee.Filter.lte("system:time_start", t0.millis())).map(clear_ndvi)
    after = col.filter(ee.Filter.gte("system:time_start", t0.millis())).map(clear_ndvi)
    b = before.qualityMosaic("dt")
    a = after.map(lambda i: i.addBands(i.select("dt").multiply(-1).rename("q"))).qualityMosaic("q")
    tb, ta = b.select("dt").abs(), a.select("dt").abs()
    wa = tb.divide(tb.add(ta).max(1e-6))  # weight of the after-observation
    interp = b.select("ndvi").multiply(ee.Image(1).subtract(wa)).add(a.select("ndvi").multiply(wa))
    v = interp.unmask(b.select("ndvi")).unmask(a.select("ndvi"))
    return on_grid(v.rename(["ndvi"]), grid, cfg, native_m=n.s2_native_m)


def lst(cfg: "EarthEngineConfig", date: Any, grid: "Grid"):
    """``lst_k`` on the grid: the mean MODIS daytime LST (K) within +- ``lst.window_days``."""
    d = _day(date)
    w = cfg.lst.window_days
    img = layer_image(cfg.lst.layer, d - dt.timedelta(days=w), d + dt.timedelta(days=w + 1))
    return on_grid(img, grid, cfg, native_m=cfg.lst.layer.native_m).rename(["lst_k"])


def precip(cfg: "EarthEngineConfig", date: Any, grid: "Grid"):
    """``precip_mm`` on the grid: the sum over the ``precip.window_days`` days ending on the date
    (the configured source's stored unit times its scale gives mm per image)."""
    p = cfg.precip
    d = _day(date)
    layer = {"chirps": p.chirps, "gpm": p.gpm, "era5_land": p.era5_land}[p.source]
    img = layer_image(layer, d - dt.timedelta(days=p.window_days - 1), d + dt.timedelta(days=1), reducer="sum")
    return on_grid(img, grid, cfg, native_m=layer.native_m).rename(["precip_mm"])


def dynamic_stack(cfg: "EarthEngineConfig", date: Any, grid: "Grid", region=None):
    """The per-date stack: :data:`~ssm_spark.sources.stacks.DYNAMIC_BANDS`, float32, on the grid."""
    return (s1(cfg, date, grid, region).addBands(ndvi(cfg, date, grid, region)).addBands(lst(cfg, date, grid))
            .addBands(precip(cfg, date, grid)).select(list(DYNAMIC_BANDS)).toFloat())


# ------------------------------------------------------------------------------------------ static


def soil(cfg: "EarthEngineConfig", grid: "Grid"):
    """``clay_pct, sand_pct, bulk_density`` (SoilGrids 0-5 cm) on the grid."""
    st = cfg.static
    img = layer_image(st.clay).addBands(layer_image(st.sand)).addBands(layer_image(st.bulk_density))
    return on_grid(img, grid, cfg).rename(["clay_pct", "sand_pct", "bulk_density"])


def terrain(cfg: "EarthEngineConfig", grid: "Grid"):
    """``elevation_m, slope_deg`` on the grid: the DEM's mean and the mean of its native-resolution
    slope (``ee.Terrain.slope``) over each cell."""
    ee = _ee()
    dem = cfg.static.dem
    if dem.image:
        elev = layer_image(dem)
    else:  # a tiled collection (Copernicus GLO-30): mosaic in its own projection, then slope
        col = ee.ImageCollection(dem.collection).select([dem.band])
        proj = col.first().select(0).projection()
        elev = col.mosaic().setDefaultProjection(proj)
        if dem.scale != 1.0 or dem.offset != 0.0:
            elev = elev.multiply(dem.scale).add(dem.offset)
    slope = ee.Terrain.slope(elev)
    return on_grid(elev.rename(["elevation_m"]).addBands(slope.rename(["slope_deg"])), grid, cfg)


def static_stack(cfg: "EarthEngineConfig", grid: "Grid"):
    """The static stack: :data:`~ssm_spark.sources.stacks.STATIC_BANDS`, float32, on the grid."""
    return soil(cfg, grid).addBands(terrain(cfg, grid)).select(list(STATIC_BANDS)).toFloat()


def landcover(cfg: "EarthEngineConfig", grid: "Grid"):
    """``landcover``: ESA WorldCover codes, the most frequent 10 m class of each cell."""
    lc = cfg.static.landcover
    img = layer_image(lc, reducer="mosaic")
    return on_grid(img, grid, cfg, reducer="mode", native_m=None if lc.image else lc.native_m).rename(["landcover"])


def climate(cfg: "EarthEngineConfig", grid: "Grid"):
    """``climate``: Koppen-Geiger class 1-30, the most frequent class of each cell."""
    cl = cfg.static.climate
    img = layer_image(cl, reducer="mosaic")
    return on_grid(img, grid, cfg, reducer="mode", native_m=None if cl.image else cl.native_m).rename(["climate"])


def classes_stack(cfg: "EarthEngineConfig", grid: "Grid"):
    """The classes stack: ``landcover, climate``, uint8 (0 = nodata), on the grid."""
    return landcover(cfg, grid).addBands(climate(cfg, grid)).select(list(CLASS_BANDS)).unmask(0).toUint8()


def stack(kind: str, cfg: "EarthEngineConfig", grid: "Grid", date: Any = None, region=None):
    """One of :data:`STACKS` (``dynamic`` needs ``date``)."""
    if kind == "dynamic":
        return dynamic_stack(cfg, date, grid, region)
    if kind == "static":
        return static_stack(cfg, grid)
    if kind == "classes":
        return classes_stack(cfg, grid)
    raise ValueError(f"unknown stack kind {kind!r}; expected one of {list(STACKS)}")
