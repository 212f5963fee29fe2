"""The built-in simulator: a deterministic, physically based synthetic region with known truth.

:func:`simulate` writes, for the configured region of the configured grid, the same files a real run
would read (feature stacks per date and tile, static layers, ISMN station files), plus the truth kept
apart (``truth/``) for tests and evaluation. Everything comes from one seed
(``np.random.default_rng``): the same configuration gives byte-identical files.

Output layout under ``output/``::

    stacks/<YYYY-MM-DD>/<grid>_<tile_row>_<tile_col>.tif   float32, NaN nodata:
                                                            vv_db, vh_db, incidence_deg, ndvi, lst_k, precip_mm
    static/<grid>_<tr>_<tc>.tif                             float32, NaN nodata:
                                                            clay_pct, sand_pct, bulk_density, elevation_m, slope_deg
    static/<grid>_<tr>_<tc>_classes.tif                     uint8, nodata 0: landcover, climate
    insitu/<NETWORK>/<STATION>/*.stm, *_static_variables.csv   ISMN "header_values" format
    truth/<YYYY-MM-DD>/<grid>_<tr>_<tc>.tif                 float32 ssm (m3/m3) at the overpass time
    truth/static/<grid>_<tr>_<tc>.tif                       float32 hidden soil and surface parameters:
                                                            porosity, residual, field_capacity, wilting_point, ks
    truth/stations.csv                                      each station's true cell, environment and errors
    simulation.json                                         provenance: config hash, seed, grid, window,
                                                            dates, overpasses, counts

The model, one region-wide numpy step per day (the region is a window of the grid; its climate and
terrain gradients span the window whatever its size, so a 64 x 64 test region holds the same classes
as the 512 x 512 demo):

* **Static fields** are spatially correlated Gaussian random fields (white noise smoothed with
  :func:`scipy.ndimage.gaussian_filter` on a coarse grid and interpolated). Elevation (uplands in the
  north, a coastal plain and sea in the south-east), slope from the DEM gradient, a synthetic climate
  (annual mean temperature with a 6 K/km lapse rate, precipitation) classified with Koppen-Geiger
  rules into B (semi-arid south), C (temperate lowlands), D (cold uplands) and E (summits), ESA
  WorldCover land cover as patches whose odds depend on terrain and climate, soil texture and bulk
  density, and the hidden C-band roughness ``ks``.
* **Soil moisture** of the 0-5 cm layer (50 mm of soil) follows a daily bucket water balance:
  rain from spatially correlated storms (a regional AR(1) weather state times a daily Gaussian field,
  drier summers in the south), interception, snow accumulation and melt below/above 0 degC,
  irrigation of some summer crops, evaporation from LST and NDVI limited by soil wetness, gravity
  drainage above field capacity and exchange with a deeper layer; bounded by the residual water
  content and the porosity ``1 - bulk_density / 2.65``. Wetlands are fed by shallow groundwater.
* **Vegetation**: NDVI follows land-cover and climate specific double-logistic seasons (winter
  cereals green in April and harvested in July, maize and sunflower from June to September,
  grassland peaking in May, forest high and flat, later seasons in cold climates); vegetation water
  content (VWC, kg/m2) is the foliage term of :func:`ssm_spark.physics.wcm.vwc_from_ndvi` plus a
  stem term that grows with the season and is cut at harvest.
* **Backscatter** follows a forward path richer than any retrieval assumes: the soil permittivity
  from Dobson et al. (1985) with the cell's texture and bulk density, mapped to the "effective"
  moisture of the Oh model through Topp's inverse, Oh (2002) VV and VH with the cell's roughness at
  the *local* incidence angle (terrain slope and aspect), a Water Cloud Model with VWC and
  land-cover specific A and B (jittered per cell), frozen soil seen through its liquid water only,
  unmodelled clutter, gamma speckle of the cell's equivalent number of looks and an additive noise
  floor. Water (wind-roughened), built-up (bright) and snow (wet in summer) have their own
  signatures. The incidence angle runs 30-46 deg across the columns, ascending (increasing to the
  east, 18 UTC) and descending (increasing to the west, 06 UTC) passes alternating between dates.
* **Stations**: ``n_stations`` stations, stratified by environment (land-cover group x Koppen main
  class; none on water, built-up or snow), at least ``min_stations_per_env`` in each environment
  large enough for them. Hourly 0-0.05 m soil moisture = the cell's truth (interpolated within the
  day around the storm hour) with a persistent per-station offset and scale, AR(1)
  representativeness noise and sensor noise; frozen hours read the liquid water and are flagged
  ``D01``/``D02``; a few ``D05``/``D06`` flags, gaps (absent lines and ``-9999 M M`` lines). A few
  stations have a second 5 cm sensor and a 10 cm sensor (to exercise sensor averaging and the depth
  filter).

References
----------
Oh, Y., Sarabandi, K. and Ulaby, F. T. (2002), IEEE TGRS 40(6), 1348-1355. Dobson, M. C. et al.
(1985), IEEE TGRS GE-23(1), 35-46. Attema, E. P. W. and Ulaby, F. T. (1978), Radio Science 13(2),
357-364. Jackson, T. J. et al. (2004), Remote Sens. Environ. 92, 475-482. Beck, H. E. et al. (2018),
Present and future Koppen-Geiger climate classification maps at 1-km resolution, Sci. Data 5, 180214
(class numbering 1-30). Dorigo, W. A. et al. (2013), Vadose Zone J. 12(3) (ISMN quality flags).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage, signal

from ssm_spark import __version__
from ssm_spark import environments
from ssm_spark.environments import LANDCOVER_GROUPS
from ssm_spark.environments import climate_main as koppen_main
from ssm_spark.config import Config, SimulateConfig
from ssm_spark.grid import Grid
from ssm_spark.physics import dielectric, oh, wcm

log = logging.getLogger(__name__)

__all__ = [
    "simulate",
    "SimulationSummary",
    "STACK_BANDS",
    "STATIC_BANDS",
    "CLASS_BANDS",
    "TRUTH_BANDS",
    "HIDDEN_BANDS",
    "LANDCOVER_GROUPS",
    "MASKED_LANDCOVER",
    "KOPPEN_CODES",
    "koppen_main",
    "environment",
    "porosity",
    "residual_water",
    "overpass",
    "iter_dates",
]

# -- file contracts ----------------------------------------------------------------------------------
STACK_BANDS: tuple[str, ...] = ("vv_db", "vh_db", "incidence_deg", "ndvi", "lst_k", "precip_mm")
STATIC_BANDS: tuple[str, ...] = ("clay_pct", "sand_pct", "bulk_density", "elevation_m", "slope_deg")
CLASS_BANDS: tuple[str, ...] = ("landcover", "climate")
TRUTH_BANDS: tuple[str, ...] = ("ssm",)
HIDDEN_BANDS: tuple[str, ...] = ("porosity", "residual", "field_capacity", "wilting_point", "ks")
_UNITS: dict[str, str] = {
    "vv_db": "dB", "vh_db": "dB", "incidence_deg": "degree", "ndvi": "1", "lst_k": "K", "precip_mm": "mm",
    "clay_pct": "%", "sand_pct": "%", "bulk_density": "g/cm3", "elevation_m": "m", "slope_deg": "degree",
    "landcover": "ESA WorldCover code", "climate": "Koppen-Geiger class (Beck et al. 2018)",
    "ssm": "m3/m3", "porosity": "m3/m3", "residual": "m3/m3", "field_capacity": "m3/m3",
    "wilting_point": "m3/m3", "ks": "1",
}

#: Land cover with no retrieval (masked).
MASKED_LANDCOVER: dict[int, str] = {50: "built-up", 70: "snow/ice", 80: "water"}
#: Koppen-Geiger classes 1-30 in the numbering of Beck et al. (2018); index 0 is nodata.
KOPPEN_CODES: tuple[str, ...] = (
    "", "Af", "Am", "Aw", "BWh", "BWk", "BSh", "BSk", "Csa", "Csb", "Csc", "Cwa", "Cwb", "Cwc", "Cfa",
    "Cfb", "Cfc", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb", "Dwc", "Dwd", "Dfa", "Dfb", "Dfc", "Dfd",
    "ET", "EF",
)
_KOPPEN_NAMES: dict[str, str] = {
    "BWk": "Arid - Desert - Cold", "BSh": "Arid - Steppe - Hot", "BSk": "Arid - Steppe - Cold",
    "Csa": "Temperate - Dry Summer - Hot Summer", "Csb": "Temperate - Dry Summer - Warm Summer",
    "Cfa": "Temperate - Without dry season - Hot Summer", "Cfb": "Temperate - Without dry season - Warm Summer",
    "Dsa": "Cold - Dry Summer - Hot Summer", "Dsb": "Cold - Dry Summer - Warm Summer",
    "Dfa": "Cold - Without dry season - Hot Summer", "Dfb": "Cold - Without dry season - Warm Summer",
    "Dfc": "Cold - Without dry season - Cold Summer", "ET": "Polar - Tundra", "EF": "Polar - Frost",
}
_WORLDCOVER_NAMES: dict[int, str] = {
    10: "Tree cover", 20: "Shrubland", 30: "Grassland", 40: "Cropland", 50: "Built-up",
    60: "Bare / sparse vegetation", 70: "Snow and ice", 80: "Permanent water bodies",
    90: "Herbaceous wetland", 95: "Mangroves", 100: "Moss and lichen",
}
#: WorldCover -> ESA CCI land cover (the classification ISMN's static-variable files carry).
_WORLDCOVER_TO_CCI: dict[int, tuple[int, str]] = {
    10: (60, "Tree cover, broadleaved, deciduous, closed to open (>15%)"), 20: (120, "Shrubland"),
    30: (130, "Grassland"), 40: (10, "Cropland, rainfed"), 50: (190, "Urban areas"),
    60: (200, "Bare areas"), 70: (220, "Permanent snow and ice"), 80: (210, "Water bodies"),
    90: (180, "Shrub or herbaceous cover, flooded, fresh/saline/brakish water"),
    95: (170, "Tree cover, flooded, saline water"), 100: (140, "Lichens and mosses"),
}

_LAYER_MM = 50.0          #: thickness of the simulated surface layer (0-5 cm), mm of soil
_SOLID_DENSITY = 2.65     #: particle density used for the porosity (g/cm3)
_OVERPASS_HOUR = {"descending": 6, "ascending": 18}   #: Sentinel-1 over Europe, UTC
_INC_RANGE = (30.0, 46.0)  #: IW swath incidence angles (deg)
_SENSOR = "SimProbe"
_DEPTH = (0.0, 0.05)

# Random streams: rng = default_rng([seed, STREAM, ...]); each stream is independent of the others and
# keyed by date where it is drawn per date, so a date's draws never depend on the loop's history.
_S_STATIC, _S_WEATHER, _S_RAIN, _S_OBS, _S_STATIONS = 0, 1, 2, 3, 4


# -- small public helpers ----------------------------------------------------------------------------
def environment(landcover: np.ndarray | int, climate: np.ndarray | int) -> np.ndarray:
    """:func:`ssm_spark.environments.environment` as a string array, '' where masked (for numpy masks)."""
    env = environments.environment(landcover, climate)
    return np.where(env == None, "", env).astype(str)  # noqa: E711 - elementwise on an object array


def porosity(bulk_density: np.ndarray) -> np.ndarray:
    """Total porosity ``1 - bulk_density / 2.65`` (m3/m3), the simulator's upper bound of SSM."""
    return 1.0 - np.asarray(bulk_density, dtype=np.float64) / _SOLID_DENSITY


def residual_water(clay_pct: np.ndarray) -> np.ndarray:
    """Residual water content ``0.02 + 0.12 clay`` (m3/m3, clay as a fraction), the lower bound of SSM."""
    return 0.02 + 0.12 * np.asarray(clay_pct, dtype=np.float64) / 100.0


def overpass(index: int) -> tuple[str, int]:
    """Pass direction and UTC hour of the ``index``-th date: descending (06 UTC) and ascending (18 UTC)
    alternate, starting with descending."""
    direction = "descending" if index % 2 == 0 else "ascending"
    return direction, _OVERPASS_HOUR[direction]


# -- summary -------------------------------------------------------------------------------------------
@dataclass
class SimulationSummary:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    output : Path
        The output folder.
    config_hash, seed
        Provenance.
    grid : dict
        :meth:`Grid.describe` of the grid.
    window : dict
        The region's window (global cells): ``row_off, col_off, height, width``.
    tiles : list of (tile_row, tile_col)
    dates : list of str
        ISO dates of the stacks.
    counts : dict
        Files and objects written (``stack_files``, ``truth_files``, ``static_files``, ``stations``,
        ``sensor_files``, ``cells``, ``land_cells``).
    stations_per_env : dict
        Stations per environment key.
    paths : dict
        Sub-folders and files, relative to ``output``.
    elapsed_s : float
        Wall time of the run (not written to ``simulation.json``, which stays byte-identical).
    """

    output: Path
    config_hash: str
    seed: int
    grid: dict
    window: dict
    tiles: list
    dates: list
    counts: dict
    stations_per_env: dict
    paths: dict
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (paths as strings)."""
        d = dataclasses.asdict(self)
        d["output"] = str(self.output)
        return d


# -- random fields -------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``scale`` (cells).

    White noise on a grid ``f`` times coarser is smoothed with a Gaussian of sigma ``scale / f`` and
    interpolated bilinearly back to ``shape`` (cheap for long correlation lengths).
    """
    scale = max(float(scale), 0.5)
    f = max(1, int(scale // 3))
    ch, cw = shape[0] // f + 3, shape[1] // f + 3
    z = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), scale / f, mode="wrap", truncate=3.0)
    if f > 1:
        z = ndimage.zoom(z, f, order=1, mode="nearest", grid_mode=False)
    z = z[: shape[0], : shape[1]]
    sd = z.std()
    return (z - z.mean()) / (sd if sd > 0 else 1.0)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _quantile(a: np.ndarray, mask: np.ndarray, q: float, default: float = np.inf) -> float:
    vals = a[mask]
    return float(np.quantile(vals, q)) if vals.size else default


def _top(score: np.ndarray, eligible: np.ndarray, fraction: float, min_cells: int = 1) -> np.ndarray:
    """The ``fraction`` of eligible cells with the highest score (at least ``min_cells`` when possible)."""
    n_el = int(eligible.sum())
    n = min(n_el, max(min_cells, int(round(fraction * n_el)))) if fraction > 0 else 0
    out = np.zeros(score.shape, dtype=bool)
    if n <= 0:
        return out
    idx = np.flatnonzero(eligible)
    order = np.argsort(-score.ravel()[idx], kind="stable")[:n]
    out.ravel()[idx[order]] = True
    return out


# -- the static region --------------------------------------------------------------------------------
@dataclass
class _Static:
    """Static fields of the region (2-D arrays of the window's shape) and per-cell model parameters."""

    shape: tuple[int, int]
    u: np.ndarray                # 0 (west) .. 1 (east)
    v: np.ndarray                # 0 (north) .. 1 (south)
    elevation_m: np.ndarray
    slope_deg: np.ndarray
    aspect_deg: np.ndarray       # direction the slope faces, clockwise from north
    t_ann_c: np.ndarray          # annual mean air temperature (degC)
    wet_index: np.ndarray        # 0 (arid) .. 1 (humid)
    summer_dry: np.ndarray       # 0 .. 1: strength of the summer drought (Mediterranean south)
    landcover: np.ndarray        # uint8 WorldCover
    climate: np.ndarray          # uint8 Koppen-Geiger 1-30
    clay_pct: np.ndarray
    sand_pct: np.ndarray
    bulk_density: np.ndarray
    porosity: np.ndarray
    residual: np.ndarray
    field_capacity: np.ndarray
    wilting_point: np.ndarray
    ks: np.ndarray               # C-band normalised rms height (hidden)
    crop_summer: np.ndarray      # bool: summer crop (maize, sunflower) rather than winter cereal
    irrigated: np.ndarray        # bool
    ploughed: np.ndarray         # bool: ploughed after harvest (roughness up)
    irr_phase: np.ndarray        # int: day phase of the irrigation rota
    veg: dict[str, np.ndarray]   # phenology: base, amp, t_up, w_up, t_down, w_down, stem, harvest
    wcm: dict[str, np.ndarray]   # A_vv, B_vv, A_vh, B_vh
    urban_db: np.ndarray         # VV of built-up cells
    lst_offset: np.ndarray       # land-cover LST offset (K)
    intercept: np.ndarray        # fraction of rain intercepted
    k_drain: np.ndarray          # drainage rate above field capacity (1/day)
    k_deep: np.ndarray           # exchange rate with the deep layer (1/day)
    deep_wet: np.ndarray         # 0..1 wetness of the deep layer (climatological)
    rain_bias: np.ndarray        # additive bias of the storm index (wetter uplands, drier south)

    @property
    def land(self) -> np.ndarray:
        return ~np.isin(self.landcover, (80,))

    @property
    def retrievable(self) -> np.ndarray:
        return np.isin(self.landcover, tuple(LANDCOVER_GROUPS))


def _cell_size_m(grid: Grid, lat: float) -> float:
    if grid.is_geographic:
        return grid.cell * 111_320.0 * max(np.cos(np.deg2rad(lat)), 0.05)
    return grid.cell


def _build_static(sim: SimulateConfig, grid: Grid, window: Window) -> _Static:
    rng = np.random.default_rng([sim.seed, _S_STATIC])
    H, W = int(window.height), int(window.width)
    shape = (H, W)
    L = float(min(H, W))

    def F(frac: float) -> np.ndarray:
        return _smooth_noise(rng, shape, max(1.0, L * frac))

    v = np.broadcast_to((np.arange(H, dtype="f8") / max(H - 1, 1))[:, None], shape).copy()
    u = np.broadcast_to((np.arange(W, dtype="f8") / max(W - 1, 1))[None, :], shape).copy()
    _, lat_c = grid.to_lonlat(int(window.row_off) + H // 2, int(window.col_off) + W // 2)
    cell_m = _cell_size_m(grid, lat_c)

    # Terrain: broad uplands in the north and centre, ridges, a coastal plain and sea in the south-east.
    e1, e2, e3, e4 = F(1 / 6), F(1 / 14), F(1 / 40), F(1 / 120)
    coast = (v - 0.86) + 0.5 * (u - 0.75) + 0.04 * F(1 / 10)
    sea = coast > 0.0
    relief = float(np.clip(L / 256.0, 0.3, 1.0))    # gentler relief in small (test) regions: sane slopes
    ridge = np.maximum(e2 + 0.6 * e1 - 0.35, 0.0) ** 1.2
    elev_km = 0.30 + 0.18 * e1 + 0.35 * (0.6 - v) + relief * 0.6 * ridge + 0.03 * e3
    elev_km = 3.2 * np.tanh(np.maximum(elev_km, 0.0) / 3.2)
    dist = ndimage.distance_transform_edt(~sea) / L if sea.any() else np.ones(shape)
    elev_km = np.maximum(elev_km, 0.02) * np.clip(dist / 0.15, 0.08, 1.0) ** 0.7
    elev_km = elev_km + (0.015 + 0.05 * ridge) * e4
    elev_km = np.where(sea, 0.0, np.maximum(elev_km, 0.002))
    elevation_m = elev_km * 1000.0
    gy, gx = np.gradient(elevation_m, cell_m)     # rows run south: d/drow = -d/dy
    slope_deg = np.degrees(np.arctan(np.hypot(gx, gy)))
    aspect_deg = np.degrees(np.arctan2(-gx, gy)) % 360.0   # downslope direction, clockwise from north
    land = ~sea

    # Climate: temperature with a lapse rate and a north-south gradient, precipitation with orography.
    t_ann = 12.5 + 3.5 * v - 6.0 * elev_km + 0.4 * F(1 / 8)
    t_ann = np.where(sea, t_ann + 1.0, t_ann)
    # Calibrate so that about 22 % of the land is cold (coldest month below 0 degC): class D or E.
    t_ann = t_ann - (_quantile(t_ann, land, 0.22, 9.0) - 9.0)
    t_warm, t_cold = t_ann + 9.0, t_ann - 9.0
    p_ann = 800.0 + 500.0 * elev_km - 380.0 * v * (1.0 - 0.3 * u) + 140.0 * F(1 / 6)
    aridity = p_ann / (20.0 * (t_ann + 7.0) + 1e-6)
    warm_land = land & (t_cold >= 0.0)
    # About 18 % of the temperate land is semi-arid (B): rescale precipitation to put it there.
    q18 = _quantile(aridity, warm_land, 0.18, 1.0)
    p_ann = p_ann / max(q18, 1e-6)
    aridity = aridity / max(q18, 1e-6)
    summer_dry = np.clip((v - 0.35 + 0.08 * F(1 / 8)) / 0.45, 0.0, 1.0) * (1.0 - np.clip(elev_km - 0.8, 0.0, 1.0))
    wet_index = np.clip((p_ann - 350.0) / 900.0, 0.0, 1.0)

    climate = np.zeros(shape, dtype=np.uint8)
    is_e = t_warm < 10.0
    is_d = ~is_e & (t_cold < 0.0)
    is_b = ~is_e & ~is_d & (aridity < 1.0)
    is_c = ~is_e & ~is_d & ~is_b
    climate[is_e] = 29                                                         # ET
    climate[is_d] = np.where(t_warm[is_d] < 14.0, 27,                          # Dfc
                             np.where(summer_dry[is_d] > 0.5, 18, np.where(t_warm[is_d] >= 22.0, 25, 26)))
    climate[is_b] = np.where(aridity[is_b] < 0.5, 5, np.where(t_ann[is_b] >= 18.0, 6, 7))  # BWk BSh BSk
    climate[is_c] = np.where(summer_dry[is_c] > 0.45,
                             np.where(t_warm[is_c] >= 22.0, 8, 9),              # Csa Csb
                             np.where(t_warm[is_c] >= 22.0, 14, 15))            # Cfa Cfb
    main = koppen_main(climate)

    # Land cover: masked classes first (quantile-controlled), then the vegetated classes as patches.
    lc = np.zeros(shape, dtype=np.uint8)
    lc[sea] = 80
    free = land.copy()
    lowland = elev_km < _quantile(elev_km, land, 0.6, 1.0)
    lakes = _top(F(1 / 45) - 3.0 * np.clip(slope_deg / 10.0, 0, 1), free & lowland, 0.012, 2)
    lc[lakes] = 80
    free &= ~lakes
    snow = _top(elev_km + 0.02 * e4, free, 0.004, 3)
    lc[snow] = 70
    free &= ~snow
    built = _top(F(1 / 60) - 1.5 * elev_km + 0.3 * (1 - v), free, 0.03, 3)
    lc[built] = 50
    free &= ~built
    water = lc == 80
    dist_water = ndimage.distance_transform_edt(~water) / L if water.any() else np.ones(shape)
    wet_score = F(1 / 30) - 4.0 * np.clip(slope_deg / 8.0, 0, 1) - 2.0 * elev_km - 6.0 * np.minimum(dist_water, 0.3)
    wetland = _top(wet_score, free, 0.04, 3)
    lc[wetland] = 90
    free &= ~wetland
    bare_score = F(1 / 15) + 2.0 * (main == "B") + 1.2 * (main == "E") + 1.0 * np.clip(elev_km - 1.8, 0, 1)
    bare = _top(bare_score, free, 0.06, 3)
    lc[bare] = 60
    free &= ~bare
    isB, isC, isDE = main == "B", main == "C", np.isin(main, ("D", "E"))
    s_forest = F(1 / 20) + 1.0 * np.clip(elev_km - 0.3, 0, 1.2) + 0.06 * slope_deg + 0.3 * isDE - 0.9 * isB
    s_crop = F(1 / 20) - 2.2 * np.clip(elev_km - 0.35, 0, 2) - 0.10 * slope_deg + 0.55 * isC + 0.2 * isB + 0.2
    s_grass = F(1 / 20) + 0.55 * isDE + 0.25 * isB - 0.15
    s_shrub = F(1 / 20) + 0.75 * isB + 0.5 * summer_dry * isC - 0.55
    pick = np.argmax(np.stack([s_forest, s_crop, s_grass, s_shrub]), axis=0)
    lc[free] = np.array([10, 40, 30, 20], dtype=np.uint8)[pick[free]]
    lc[free & isDE & (lc == 30) & (elev_km > _quantile(elev_km, land, 0.97, 9.0))] = 100   # moss and lichen
    climate[sea] = 0     # Koppen-Geiger maps have no class over the sea

    # Soil texture and bulk density (percent, g/cm3), tied to land cover, climate and terrain.
    def is_lc(*codes: int) -> np.ndarray:
        return np.isin(lc, codes)

    clay = (22.0 + 8.0 * F(1 / 12) + 8.0 * is_lc(90) + 5.0 * is_lc(40) - 7.0 * is_lc(60) - 3.0 * is_lc(10)
            - 5.0 * np.clip(elev_km, 0, 2) - 3.0 * isB)
    clay = np.clip(clay, 4.0, 55.0)
    sand = (38.0 + 13.0 * F(1 / 12) - 0.5 * (clay - 22.0) + 16.0 * is_lc(60) + 9.0 * isB + 7.0 * np.clip(elev_km, 0, 2)
            - 6.0 * is_lc(90))
    sand = np.clip(sand, 5.0, 90.0)
    sand = np.minimum(sand, 95.0 - clay)
    bd = (1.42 + 0.0030 * (sand - 38.0) - 0.0035 * (clay - 22.0) - 0.10 * is_lc(10, 95) - 0.25 * is_lc(90)
          - 0.06 * is_lc(30, 100) + 0.05 * F(1 / 25))
    bd = np.clip(bd, 0.95, 1.70)
    clay_f, sand_f = clay / 100.0, sand / 100.0
    silt_f = 1.0 - clay_f - sand_f
    phi = porosity(bd)
    theta_r = residual_water(clay)
    theta_wp = 0.03 + 0.35 * clay_f
    theta_fc = np.minimum(0.10 + 0.50 * clay_f + 0.20 * silt_f, phi - 0.05)
    theta_wp = np.minimum(theta_wp, theta_fc - 0.04)

    # Roughness (ks at 5.405 GHz), hidden: land-cover specific, lognormal per cell.
    ks_base = np.select(
        [is_lc(10, 95), is_lc(20), is_lc(30, 100), is_lc(40), is_lc(60), is_lc(90)],
        [1.6, 1.4, 0.7, 0.9, 1.6, 0.45], default=1.0)
    ks_base = ks_base * np.where(is_lc(60) & isDE, 1.5, 1.0)
    ks = np.clip(ks_base * np.exp(0.18 * F(1 / 50)), 0.15, 4.0)

    # Crops: winter cereals or summer crops; irrigation of summer crops in dry climates; ploughing.
    crop = is_lc(40)
    crop_summer = crop & (F(1 / 35) + 0.4 * (1 - summer_dry) > 0.2)
    irr_score = F(1 / 30) + 1.2 * (summer_dry + isB)
    irrigated = crop_summer & (irr_score > 0.9) & ~isDE
    ploughed = crop & (F(1 / 40) > 0.0)
    irr_phase = rng.integers(0, 8, size=shape)

    # Phenology per land cover (day of year): NDVI = base + amp * (up(t) - down(t)).
    jit = F(1 / 25)
    params = {  # base, amp, t_up, w_up, t_down, w_down, stem (kg/m2)
        10: (0.62, 0.20, 105, 9, 295, 10, 4.5), 95: (0.70, 0.10, 90, 10, 320, 10, 5.0),
        20: (0.30, 0.22, 85, 10, 170, 12, 1.4), 30: (0.26, 0.46, 95, 8, 172, 10, 0.15),
        100: (0.18, 0.30, 160, 8, 240, 10, 0.05), 60: (0.10, 0.04, 110, 10, 200, 10, 0.0),
        90: (0.48, 0.20, 105, 10, 280, 12, 0.6), 50: (0.20, 0.05, 100, 10, 280, 10, 0.0),
        80: (-0.05, 0.03, 120, 10, 260, 10, 0.0), 70: (0.02, 0.05, 170, 8, 235, 8, 0.0),
    }
    keys = ("base", "amp", "t_up", "w_up", "t_down", "w_down", "stem")
    veg = {k: np.zeros(shape) for k in keys}
    for code, vals in params.items():
        m = lc == code
        for k, val in zip(keys, vals):
            veg[k][m] = val
    winter = crop & ~crop_summer
    for m, vals in ((winter, (0.20, 0.62, 68, 9, 168, 7, 2.0)), (crop_summer, (0.18, 0.68, 168, 8, 248, 8, 4.0))):
        for k, val in zip(keys, vals):
            veg[k][m] = val
    veg["amp"] = veg["amp"] * np.where(isB, 0.7, 1.0) * np.where(main == "E", 0.8, 1.0)
    veg["base"] = veg["base"] * np.where(isB & ~crop, 0.85, 1.0)
    natural = ~crop
    veg["t_up"] = veg["t_up"] + natural * (20.0 * is_d + 35.0 * is_e) + 6.0 * jit
    veg["t_down"] = veg["t_down"] + natural * (12.0 * is_d - 15.0 * isB - 10.0 * summer_dry * isC) + 6.0 * jit
    veg["amp"] = veg["amp"] * (1.0 + 0.12 * F(1 / 25))
    veg["stem"] = veg["stem"] * np.exp(0.2 * F(1 / 25)) * np.where(is_lc(10) & isDE, 1.3, 1.0)
    veg["harvest"] = np.where(crop, veg["t_down"] + 16.0 + 4.0 * jit, 999.0)
    veg["stem_static"] = is_lc(10, 20, 95)   # wood: no seasonal cycle
    for k in keys + ("harvest",):             # float32: the daily phenology is the loop's hot spot
        veg[k] = veg[k].astype(np.float32)

    # Water Cloud Model parameters with VWC (kg/m2) as the vegetation descriptor.
    wp = {  # A_vv, B_vv, A_vh, B_vh
        10: (0.035, 0.09, 0.0110, 0.07), 95: (0.035, 0.09, 0.0110, 0.07), 20: (0.060, 0.12, 0.0160, 0.09),
        30: (0.090, 0.15, 0.0200, 0.12), 100: (0.090, 0.15, 0.0200, 0.12), 40: (0.060, 0.10, 0.0140, 0.08),
        60: (0.090, 0.15, 0.0200, 0.12), 90: (0.040, 0.09, 0.0120, 0.07),
    }
    wcm_p = {k: np.full(shape, d) for k, d in zip(("A_vv", "B_vv", "A_vh", "B_vh"), (0.08, 0.12, 0.02, 0.1))}
    for code, vals in wp.items():
        m = lc == code
        for k, val in zip(("A_vv", "B_vv", "A_vh", "B_vh"), vals):
            wcm_p[k][m] = val
    for k, val in zip(("A_vv", "B_vv", "A_vh", "B_vh"), (0.045, 0.16, 0.010, 0.08)):   # cereals: vertical stems
        wcm_p[k][winter] = val
    wcm_p["B_vv"] = wcm_p["B_vv"] * np.where(is_lc(10) & isDE, 1.15, 1.0)
    jA, jB = F(1 / 30), F(1 / 30)
    for pol in ("vv", "vh"):
        wcm_p[f"A_{pol}"] = wcm_p[f"A_{pol}"] * np.exp(0.10 * jA)
        wcm_p[f"B_{pol}"] = wcm_p[f"B_{pol}"] * np.exp(0.10 * jB)

    urban_db = -2.0 + 2.0 * F(1 / 80)
    lst_offset = np.select([is_lc(10, 95), is_lc(50), is_lc(60), is_lc(80), is_lc(90), is_lc(70)],
                           [-2.0, 3.5, 2.5, -3.0, -2.0, -4.0], default=0.0)
    intercept = np.select([is_lc(10, 95), is_lc(20)], [0.20, 0.10], default=0.05)
    k_drain = 0.30 + 0.50 * sand_f
    k_deep = np.where(is_lc(90), 0.30, 0.10)
    deep_wet = np.where(is_lc(90), 0.95, np.clip(0.25 + 0.55 * wet_index + 0.1 * F(1 / 20), 0.05, 0.9))
    rain_bias = 0.45 * np.clip(elev_km, 0, 2) - 0.45 * v + 0.12 * F(1 / 10)

    return _Static(
        shape=shape, u=u, v=v, elevation_m=elevation_m, slope_deg=slope_deg, aspect_deg=aspect_deg,
        t_ann_c=t_ann, wet_index=wet_index, summer_dry=summer_dry, landcover=lc, climate=climate,
        clay_pct=clay, sand_pct=sand, bulk_density=bd, porosity=phi, residual=theta_r,
        field_capacity=theta_fc, wilting_point=theta_wp, ks=ks, crop_summer=crop_summer,
        irrigated=irrigated, ploughed=ploughed, irr_phase=irr_phase, veg=veg, wcm=wcm_p,
        urban_db=urban_db, lst_offset=lst_offset, intercept=intercept, k_drain=k_drain, k_deep=k_deep,
        deep_wet=deep_wet, rain_bias=rain_bias,
    )


# -- daily state ---------------------------------------------------------------------------------------
def _doy(day: dt.date) -> int:
    return day.timetuple().tm_yday


def _phenology(st: _Static, doy: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free NDVI and VWC (kg/m2) of a day of year."""
    p = st.veg
    t = np.float32(doy)
    up = _logistic((t - p["t_up"]) / p["w_up"])
    down = _logistic((t - p["t_down"]) / p["w_down"])
    ndvi = p["base"] + p["amp"] * (up - down)
    cut = doy >= p["harvest"]
    ndvi = np.where(cut, np.minimum(ndvi, p["base"] + 0.02), ndvi)
    foliage = wcm.vwc_from_ndvi(np.clip(ndvi, 0.0, 1.0))
    stem = np.where(p["stem_static"], p["stem"], p["stem"] * up * (1.0 - 0.6 * down) * ~cut)
    return ndvi, foliage + stem


def _seasonal_t(st: _Static, doy: float) -> np.ndarray:
    """Climatological surface temperature (K) of a day of year, before weather and land-cover offsets."""
    return 273.15 + st.t_ann_c + 2.0 + 9.5 * np.cos(2.0 * np.pi * (doy - 205.0) / 365.25)


@dataclass
class _Day:
    """One simulated day: forcing and the soil water at the day's start and end."""

    day: dt.date
    rain: np.ndarray        # mm, true rain
    rain_obs: np.ndarray    # mm, the satellite precipitation product
    storm_hour: np.ndarray  # UTC hour of the day's storm (fronts move west to east)
    lst: np.ndarray         # K
    ndvi: np.ndarray
    vwc: np.ndarray
    theta0: np.ndarray      # at 00 UTC
    theta1: np.ndarray      # at 24 UTC


class _WaterBalance:
    """Daily bucket model of the 0-5 cm layer over the whole region (see the module docstring)."""

    def __init__(self, sim: SimulateConfig, st: _Static, first_day: dt.date) -> None:
        self.sim, self.st = sim, st
        self.theta = self._deep(_doy(first_day))
        self.swe = np.zeros(st.shape)
        self.weather = 0.0       # regional synoptic state (AR(1), unit variance)
        self.t_anom = 0.0        # regional temperature anomaly (K)
        self.rain_scale = max(1.0, min(st.shape) / 9.0)

    def _deep(self, doy: float) -> np.ndarray:
        st = self.st
        summer = np.exp(-(((doy - 215.0) / 50.0) ** 2))
        wet = st.deep_wet * (1.0 - 0.45 * summer * (1.0 - st.wet_index))
        deep = st.wilting_point + (st.field_capacity - st.wilting_point) * wet
        deep = np.where(st.k_deep >= 0.3, st.porosity - 0.05 - 0.15 * summer, deep)   # wetlands: groundwater
        return np.clip(deep, st.residual, st.porosity)

    def step(self, day: dt.date) -> _Day:
        st, sim = self.st, self.sim
        doy = _doy(day)
        rng = np.random.default_rng([sim.seed, _S_RAIN, day.toordinal()])
        e_w, e_t, e_h = rng.standard_normal(3)
        self.weather = 0.65 * self.weather + np.sqrt(1 - 0.65**2) * e_w
        self.t_anom = 0.75 * self.t_anom + np.sqrt(1 - 0.75**2) * 2.5 * e_t
        summer = np.exp(-(((doy - 205.0) / 40.0) ** 2))
        g = _smooth_noise(rng, st.shape, self.rain_scale)
        z = 0.75 * g + 0.65 * self.weather + st.rain_bias - 1.1 * summer * st.summer_dry - 0.25 * summer
        rain = 12.0 * np.maximum(z - 0.5, 0.0) ** 1.5
        rain_obs = ndimage.gaussian_filter(rain, 2.0, mode="nearest", truncate=2.0) * np.exp(
            0.25 * rng.standard_normal() - 0.03)
        storm_hour = np.clip(12.0 + 4.0 * e_h + 6.0 * (st.u - 0.5), 0.0, 23.0)

        ndvi, vwc = _phenology(st, doy)
        fcover = np.clip((ndvi - 0.1) / 0.75, 0.0, 1.0)
        theta0 = self.theta
        rel = np.clip((theta0 - st.residual) / (st.field_capacity - st.residual), 0.0, 1.0)
        cloudy = rain > 2.0
        lst = (_seasonal_t(st, doy) + self.t_anom + st.lst_offset - 2.5 * cloudy
               + 5.0 * (1.0 - rel) * (1.0 - fcover) * (st.landcover != 80))
        frozen = lst < 273.15

        # Snow: precipitation below 0 degC is stored and melts with degree days.
        snowfall = np.where(frozen, rain, 0.0)
        melt = np.where(frozen, 0.0, np.minimum(self.swe, 4.0 * (lst - 273.15)))
        self.swe = self.swe + snowfall - melt
        liquid = np.where(frozen, 0.0, rain) * (1.0 - st.intercept * (0.5 + 0.5 * fcover)) + melt
        irrig = st.irrigated & (doy >= 165) & (doy <= 245) & ((day.toordinal() + st.irr_phase) % 8 == 0) & (
            theta0 < st.wilting_point + 0.5 * (st.field_capacity - st.wilting_point))
        theta = np.minimum(theta0 + (liquid + 30.0 * irrig) / _LAYER_MM, st.porosity)
        pet = np.maximum(0.0, 0.16 * (lst - 275.0)) * (1.0 - 0.25 * fcover)
        beta = np.clip((theta - st.residual) / (st.field_capacity - st.residual), 0.0, 1.0) ** 1.2
        theta = theta - np.where(frozen, 0.0, pet * beta) / _LAYER_MM
        theta = theta - st.k_drain * np.maximum(theta - st.field_capacity, 0.0)
        theta = theta + st.k_deep * (self._deep(doy) - theta)
        theta = np.clip(theta, st.residual, st.porosity)
        self.theta = theta
        return _Day(day, rain, rain_obs, storm_hour, lst, ndvi, vwc, theta0, theta)


def _theta_at(d: _Day, hour: float | np.ndarray) -> np.ndarray:
    """Soil water at an hour of the day: a smooth step at the storm hour on rainy days, else linear."""
    rainy = d.rain > 1.0
    step = _logistic((hour - d.storm_hour) / 0.75)
    w = np.where(rainy, step, (np.asarray(hour) + 1.0) / 24.0)
    return d.theta0 + (d.theta1 - d.theta0) * w


# -- backscatter ---------------------------------------------------------------------------------------
def _incidence(st: _Static, direction: str) -> np.ndarray:
    lo, hi = _INC_RANGE
    across = st.u if direction == "ascending" else 1.0 - st.u
    return lo + (hi - lo) * across


def _observe(sim: SimulateConfig, st: _Static, d: _Day, index: int,
             cell_m: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stack bands of an output date (all but ``precip_mm``) and the truth SSM at its overpass hour."""
    direction, hour = overpass(index)
    rng = np.random.default_rng([sim.seed, _S_OBS, d.day.toordinal()])
    doy = _doy(d.day)
    ssm = _theta_at(d, float(hour))
    theta = _incidence(st, direction)
    look_az = 90.0 if direction == "ascending" else 270.0    # right-looking: east on ascending passes
    # Local incidence: slopes facing the radar (aspect opposite to the look direction) steepen less.
    facing = np.cos(np.deg2rad(st.aspect_deg - (look_az + 180.0) % 360.0))
    theta_loc = np.clip(theta - st.slope_deg * facing, 15.0, 65.0)

    lc = st.landcover
    frozen = d.lst < 273.15
    liquid = np.where(frozen, np.minimum(ssm, st.residual + 0.03), ssm)
    eps = dielectric.dobson(np.clip(liquid, 0.0, 1.0), st.sand_pct / 100.0, st.clay_pct / 100.0, st.bulk_density)
    mv_eff = np.clip(dielectric.topp_inverse(eps), 0.02, 0.55)
    cut = doy >= st.veg["harvest"] + 10.0
    ks = st.ks * np.where(st.ploughed & cut, 1.5, 1.0)
    vv_s, vh_s = oh.forward(mv_eff, ks, theta_loc)
    vwc = np.where(np.isfinite(d.vwc), d.vwc, 0.0)
    vv = wcm.db_to_linear(wcm.forward(vv_s, vwc, theta_loc, st.wcm["A_vv"], st.wcm["B_vv"]))
    vh = wcm.db_to_linear(wcm.forward(vh_s, vwc, theta_loc, st.wcm["A_vh"], st.wcm["B_vh"]))

    wind = rng.standard_normal() * 0.8 + 0.3 * _smooth_noise(rng, st.shape, max(2.0, min(st.shape) / 6.0))
    water_vv = -20.0 + 4.0 * wind - 0.25 * (theta - 38.0)
    snow_wet = np.clip((d.lst - 271.0) / 4.0, 0.0, 1.0)
    snow_vv = -12.0 - 6.0 * snow_wet - 0.1 * (theta - 38.0)
    urban_vv = st.urban_db - 0.05 * (theta - 38.0)
    special_vv = np.select([lc == 80, lc == 70, lc == 50], [water_vv, snow_vv, urban_vv], default=np.nan)
    special_vh = special_vv - np.select([lc == 80, lc == 70, lc == 50], [9.0, 8.0, 7.0], default=np.nan)
    special = np.isfinite(special_vv)
    vv = np.where(special, wcm.db_to_linear(special_vv), vv)
    vh = np.where(special, wcm.db_to_linear(special_vh), vh)

    # Unmodelled clutter (lognormal, VV and VH correlated 0.6), speckle, noise floor.
    n1 = rng.standard_normal(st.shape)
    n2 = 0.6 * n1 + 0.8 * rng.standard_normal(st.shape)
    vv = vv * 10.0 ** (sim.clutter_db * n1 / 10.0)
    vh = vh * 10.0 ** (sim.clutter_db * n2 / 10.0)
    enl = sim.looks * max(1.0, (cell_m / sim.grd_resolution_m) ** 2)
    nesz = 10.0 ** (sim.noise_floor_db / 10.0)
    out_db = {}
    for name, lin in (("vv_db", vv), ("vh_db", vh)):
        speckled = (lin + nesz) * rng.gamma(enl, 1.0 / enl, size=st.shape)
        out_db[name] = 10.0 * np.log10(np.maximum(speckled, 1e-6))
    ndvi_obs = np.clip(d.ndvi + 0.02 * rng.standard_normal(st.shape), -0.2, 0.95)
    lst_obs = d.lst + 0.8 * rng.standard_normal(st.shape)
    bands = {
        "vv_db": out_db["vv_db"], "vh_db": out_db["vh_db"], "incidence_deg": theta, "ndvi": ndvi_obs,
        "lst_k": lst_obs,
    }
    return bands, ssm


# -- stations ------------------------------------------------------------------------------------------
@dataclass
class _Station:
    index: int
    station: str
    network: str
    env: str
    r: int          # region row / col
    c: int
    lon: float
    lat: float
    elevation: float
    offset: float
    scale: float
    sensors: list = field(default_factory=list)   # (instrument, depth_from, depth_to)


def _place_stations(sim: SimulateConfig, grid: Grid, window: Window, st: _Static,
                    env: np.ndarray) -> tuple[list[_Station], dict[str, dict[str, int]]]:
    """Stratified placement: every environment big enough gets ``min_stations_per_env`` stations."""
    rng = np.random.default_rng([sim.seed, _S_STATIONS])
    retr = st.retrievable
    # Not next to water, built-up or snow (mixed cells), not on the highest 3 % (frozen in spring).
    near_masked = ndimage.binary_dilation(~retr, iterations=1, border_value=1)   # also off the region's edge
    ok = retr & ~near_masked & (st.elevation_m <= _quantile(st.elevation_m, retr, 0.97, np.inf))
    keys, counts = np.unique(env[ok], return_counts=True)
    areas = {str(k): int(n) for k, n in zip(keys, counts) if k}
    info: dict[str, dict[str, int]] = {
        str(k): {"cells": int((env == k).sum()), "stations": 0} for k in np.unique(env[retr])}
    n = sim.n_stations
    need = sim.min_stations_per_env
    # Big enough: room for 3x the stations wanted, and at least 0.2 % of the retrievable cells.
    min_cells = max(3 * need, int(0.002 * retr.sum()))
    eligible = sorted((k for k, a in areas.items() if a >= min_cells), key=lambda k: (-areas[k], k))
    if not eligible:
        eligible = sorted(areas, key=lambda k: (-areas[k], k))
    alloc: dict[str, int] = {}
    if n > 0 and eligible:
        # As many environments as can have `need` stations each (the largest first); with fewer
        # stations than that, one environment per `need` stations, or one station per environment.
        n_env = len(eligible) if n >= need * len(eligible) else max(1, n // need)
        eligible = eligible[:n_env]
        base = min(need, n // len(eligible))
        alloc = {k: base for k in eligible}
        rest = n - base * len(eligible)
        w = np.sqrt(np.array([areas[k] for k in eligible], dtype=float))
        extra = np.floor(rest * w / w.sum()).astype(int)
        for i in np.argsort(-(rest * w / w.sum() - extra), kind="stable")[: rest - int(extra.sum())]:
            extra[i] += 1
        for k, e in zip(eligible, extra):
            alloc[k] += int(e)
        for k in alloc:
            alloc[k] = min(alloc[k], areas[k])
    stations: list[_Station] = []
    H, W = st.shape
    r0, c0 = int(window.row_off), int(window.col_off)
    for k in sorted(alloc):
        cand = np.flatnonzero(ok & (env == k))
        picks = np.sort(rng.choice(cand, size=alloc[k], replace=False))
        for p in picks:
            r, c = divmod(int(p), W)
            stations.append(_Station(0, "", "", k, r, c, 0.0, 0.0, 0.0, 0.0, 1.0))
        info[k]["stations"] = alloc[k]
    # Deterministic order west to east, then north to south; networks split the columns.
    stations.sort(key=lambda s: (s.c, s.r))
    nets = sim.networks
    for i, s in enumerate(stations):
        s.index = i
        s.network = nets[min(len(nets) - 1, s.c * len(nets) // max(W, 1))]
        s.station = f"S{i + 1:03d}"
        x, y = grid.cell_to_xy(r0 + s.r, c0 + s.c)
        dx, dy = rng.uniform(-0.4, 0.4, 2) * grid.cell
        s.lon, s.lat = (float(a) for a in grid.to_lonlat_xy(x + dx, y + dy))
        s.elevation = float(st.elevation_m[s.r, s.c] + rng.normal(0.0, 15.0))
        s.offset = float(rng.normal(0.0, 0.025))
        s.scale = float(rng.uniform(0.8, 1.15))
        s.sensors = [(_SENSOR, *_DEPTH)]
        extra = rng.uniform()
        if extra < 0.10:
            s.sensors.append((f"{_SENSOR}-B", *_DEPTH))
        elif extra < 0.20:
            s.sensors.append((f"{_SENSOR}-D", 0.10, 0.10))
    return stations, info


def _fmt(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def _static_csv(st: _Static, s: _Station) -> str:
    r, c = s.r, s.c
    lc = int(st.landcover[r, c])
    code = KOPPEN_CODES[int(st.climate[r, c])]
    cci, cci_name = _WORLDCOVER_TO_CCI[lc]
    clay, sand = float(st.clay_pct[r, c]), float(st.sand_pct[r, c])
    sat = float(st.porosity[r, c])
    oc = 1.0 + 2.0 * (lc in (10, 90, 95))
    src = "SIM_soil;simulated soil (ssm_spark.sources.simulate);ssm_spark;1;1 km;;;"
    lines = ["quantity_name;unit;depth_from[m];depth_to[m];value;description;quantity_source_name;"
             "quantity_source_description;quantity_source_provider;quantity_source_version;"
             "quantity_source_resolution;quantity_source_timerange;quantity_source_url;"]
    for d0, d1, k in ((0.0, 0.3, 1.0), (0.3, 1.0, 0.95)):
        lines += [
            f"saturation;m^3*m^-3;{d0:.2f};{d1:.2f};{sat * k:.2f};;{src}",
            f"clay fraction;% weight;{d0:.2f};{d1:.2f};{clay * (2 - k):.2f};;{src}",
            f"organic carbon;% weight;{d0:.2f};{d1:.2f};{oc * k * k:.2f};;{src}",
            f"sand fraction;% weight;{d0:.2f};{d1:.2f};{sand * k:.2f};;{src}",
            f"silt fraction;% weight;{d0:.2f};{d1:.2f};{100 - clay * (2 - k) - sand * k:.2f};;{src}",
        ]
    for year in (2000, 2005, 2010):
        lines.append(f"land cover classification;;;;{cci};{cci_name};CCI_landcover_{year};ESA CCI Land Cover "
                     f"(mapped from the simulated WorldCover class);ESA;{year}-v1.6.1;300m;;;")
    lines.append(f"land cover classification;;;;{lc};{_WORLDCOVER_NAMES[lc]};ESA_WorldCover;simulated ESA "
                 "WorldCover class;ssm_spark;1;1 km;;;")
    lines.append(f"climate classification;;;;{code};{_KOPPEN_NAMES.get(code, code)};koeppen_geiger_2007;"
                 "Koeppen-Geiger Climate Classification (simulated);;ssm_spark;1 km;;;")
    return "\n".join(lines) + "\n"


def _write_insitu(sim: SimulateConfig, out: Path, st: _Static, stations: list[_Station],
                  days: list[dt.date], series: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    """Hourly ISMN header_values files for every station sensor; returns (files, flag counts)."""
    n_days = len(days)
    hours = np.arange(24, dtype="f8")
    stamps = [f"{d.year:04d}/{d.month:02d}/{d.day:02d} {h:02d}:00" for d in days for h in range(24)]
    flag_counts: dict[str, int] = {}
    n_files = 0
    t0, t1 = days[0], days[-1]
    for s in stations:
        rng = np.random.default_rng([sim.seed, _S_STATIONS, 1000 + s.index])
        th0 = series["theta0"][:, s.index][:, None]
        th1 = series["theta1"][:, s.index][:, None]
        rain = series["rain"][:, s.index][:, None]
        sh = series["storm_hour"][:, s.index][:, None]
        lst = series["lst"][:, s.index][:, None]
        step = _logistic((hours[None, :] - sh) / 0.75)
        w = np.where(rain > 1.0, step, (hours[None, :] + 1.0) / 24.0)
        truth = (th0 + (th1 - th0) * w).ravel()
        t_soil2 = lst - 273.15 - 1.0 + 4.0 * np.sin(2 * np.pi * (hours[None, :] - 9.0) / 24.0)
        t_soil = t_soil2.ravel()
        t_air = (t_soil2 - 1.5 + 2.0 * np.sin(2 * np.pi * (hours[None, :] - 10.0) / 24.0)).ravel()
        r_, c_ = s.r, s.c
        theta_r = float(st.residual[r_, c_])
        liquid = np.where(t_soil < 0.0, np.minimum(truth, theta_r + 0.03), truth)
        mean_cell = float(np.mean(truth))
        n_h = truth.size
        net_file = s.network.replace("_", "-")
        folder = out / s.network / s.station
        folder.mkdir(parents=True, exist_ok=True)
        _write_text(folder / f"{net_file}_{net_file}_{s.station}_static_variables.csv", _static_csv(st, s))
        for k, (instrument, d0, d1) in enumerate(s.sensors):
            deep = d1 > 0.05
            # AR(1) representativeness noise, phi = 0.985 per hour (about 3 days of memory), sd 0.012.
            e = rng.normal(0.0, 0.012 * np.sqrt(1 - 0.985**2), n_h)
            ar, _ = signal.lfilter([1.0], [1.0, -0.985], e, zi=[0.985 * rng.normal(0.0, 0.012)])
            base = liquid
            if deep:   # a 10 cm sensor: smoother and lagged
                base = ndimage.uniform_filter1d(np.concatenate([np.full(36, liquid[0]), liquid]), 48)[36:]
            off = s.offset + (rng.normal(0.0, 0.01) if k else 0.0)
            obs = mean_cell + s.scale * (base - mean_cell) + off + ar + rng.normal(0.0, 0.004, n_h)
            obs = obs + 0.002 * np.sin(2 * np.pi * (np.tile(hours, n_days) - 15.0) / 24.0)
            flags = np.full(n_h, "G", dtype="<U12")
            d01, d02 = t_soil < 0.0, t_air < 0.0
            flags[d01 & d02] = "D01,D02"
            flags[d01 & ~d02] = "D01"
            flags[~d01 & d02] = "D02"
            # Suspicious peaks (D05, in 6-12 h clusters) and spikes (D06).
            for _ in range(rng.poisson(3.0)):
                a = int(rng.integers(0, n_h))
                seg = slice(a, min(n_h, a + int(rng.integers(6, 13))))
                obs[seg] += 0.03
                has = np.char.find(flags[seg], "D05") >= 0
                added = np.where(has, flags[seg], np.char.add(flags[seg], ",D05"))
                flags[seg] = np.where(flags[seg] == "G", "D05", added)
            spikes = rng.uniform(size=n_h) < 0.001
            obs[spikes] += 0.12
            flags[spikes] = np.where(flags[spikes] == "G", "D06", np.char.add(flags[spikes], ",D06"))
            obs = np.clip(obs, 0.005, 0.60)
            missing = rng.uniform(size=n_h) < 0.01
            if rng.uniform() < 0.3:      # a logger outage written as -9999 M M
                a = int(rng.integers(0, n_h))
                missing[a: a + int(rng.integers(24, 120))] = True
            keep = np.ones(n_h, dtype=bool)
            keep[rng.uniform(size=n_h) < 0.004] = False   # hours absent from the file
            if rng.uniform() < 0.4:      # days absent from the file
                a = int(rng.integers(0, n_h))
                keep[a: a + 24 * int(rng.integers(1, 8))] = False
            keep[0] = keep[-1] = True
            missing[0] = missing[-1] = False
            flags[missing] = "M"
            vals = np.char.mod("%.4f", obs)
            vals[missing] = "-9999"
            for f_, n_ in zip(*np.unique(flags[keep], return_counts=True)):
                flag_counts[str(f_)] = flag_counts.get(str(f_), 0) + int(n_)
            header = (f"{s.network:<10} {s.network:<15} {s.station:<17} {s.lat:11.5f} {s.lon:11.5f} "
                      f"{s.elevation:7.2f} {d0:7.2f} {d1:7.2f} {instrument}")
            body = [f"{stamps[i]} {vals[i]:>8} {flags[i]} M" for i in np.flatnonzero(keep)]
            name = (f"{net_file}_{net_file}_{s.station}_sm_{d0:.6f}_{d1:.6f}_{instrument}_"
                    f"{t0:%Y%m%d}_{t1:%Y%m%d}.stm")
            _write_text(folder / name, header + "\n" + "\n".join(body) + "\n")
            n_files += 1
    return n_files, dict(sorted(flag_counts.items()))


# -- writing -------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tile_parts(grid: Grid, window: Window) -> list[tuple[int, int, Window, tuple[slice, slice], tuple[slice, slice]]]:
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


def _write_tif(path: Path, grid: Grid, tr: int, tc: int, tw: Window, reg: tuple[slice, slice],
               til: tuple[slice, slice], bands: Sequence[tuple[str, np.ndarray]], dtype: str,
               tags: dict[str, str]) -> None:
    """Write a tile GeoTIFF atomically (tmp file in the same folder, then ``os.replace``)."""
    h, w = int(tw.height), int(tw.width)
    nodata: float = 0 if dtype == "uint8" else float("nan")
    data = np.full((len(bands), h, w), nodata, dtype=dtype)
    for i, (_, arr) in enumerate(bands):
        data[i][til] = arr[reg]
    block = grid.tile_size if grid.tile_size % 16 == 0 else 0
    blk = min(256, block)
    tiled = blk >= 16 and h % blk == 0 and w % blk == 0
    profile: dict[str, Any] = dict(
        driver="GTiff", width=w, height=h, count=len(bands), dtype=dtype, crs=grid.crs,
        transform=grid.tile_transform(tr, tc), nodata=nodata, compress="deflate", interleave="band",
        predictor=2 if dtype == "uint8" else 3,
    )
    if tiled:
        profile.update(tiled=True, blockxsize=blk, blockysize=blk)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        dst.units = tuple(_UNITS.get(name, "") for name, _ in bands)
        for i, (name, _) in enumerate(bands, start=1):
            dst.set_band_description(i, name)
    os.replace(tmp, path)


def _window_dict(window: Window) -> dict[str, int]:
    return {"row_off": int(window.row_off), "col_off": int(window.col_off),
            "height": int(window.height), "width": int(window.width)}


def _dates(sim: SimulateConfig) -> list[dt.date]:
    out, d = [], sim.start
    while d <= sim.end:
        out.append(d)
        d += dt.timedelta(days=sim.revisit_days)
    return out


# -- entry point ---------------------------------------------------------------------------------------
def simulate(cfg: Config, output: str | Path) -> SimulationSummary:
    """Simulate the configured region and write its inputs and truth under ``output``.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.grid``, ``cfg.region`` (the window ``cfg.region.window(cfg.grid.build())``) and
        ``cfg.simulate`` (seed, dates, stations, sensor settings).
    output : str or Path
        Output folder (created). Files already there are replaced file by file, atomically.

    Returns
    -------
    SimulationSummary
        Counts, paths, dates; also written (without the wall time) to ``output/simulation.json``.

    Raises
    ------
    GridError
        If the region does not fit in the grid.
    ConfigError
        If the configuration is invalid (raised when it is built, before this call).
    """
    t_start = time.perf_counter()
    sim = cfg.simulate
    out = Path(output)
    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    parts = _tile_parts(grid, window)
    dates = _dates(sim)
    log.info("simulating %s: window %s of %s, %d tiles, %d dates (%s..%s), seed %d", cfg.region.name,
             _window_dict(window), grid.name, len(parts), len(dates), sim.start, sim.end, sim.seed)
    st = _build_static(sim, grid, window)
    _, lat_c = grid.to_lonlat(int(window.row_off) + st.shape[0] // 2, int(window.col_off) + st.shape[1] // 2)
    cell_m = _cell_size_m(grid, lat_c)
    env = environment(st.landcover, st.climate)
    stations, env_info = _place_stations(sim, grid, window, st, env)
    log.info("static fields built; %d stations in %d environments (%.1f s)", len(stations),
             sum(1 for v in env_info.values() if v["stations"]), time.perf_counter() - t_start)

    chash = cfg.hash()
    base_tags = {"SOURCE": "ssm_spark.sources.simulate", "SSM_SPARK_VERSION": __version__,
                 "CONFIG_HASH": chash, "SEED": str(sim.seed), "GRID": grid.name}
    static_dir, stacks_dir, truth_dir = out / "static", out / "stacks", out / "truth"
    n_static = n_stack = n_truth = 0
    for tr, tc, tw, reg, til in parts:
        stem = f"{grid.name}_{tr}_{tc}"
        _write_tif(static_dir / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                   [(b, getattr(st, b)) for b in STATIC_BANDS], "float32", {**base_tags, "KIND": "static"})
        _write_tif(static_dir / f"{stem}_classes.tif", grid, tr, tc, tw, reg, til,
                   [("landcover", st.landcover), ("climate", st.climate)], "uint8", {**base_tags, "KIND": "classes"})
        hidden = {"porosity": st.porosity, "residual": st.residual, "field_capacity": st.field_capacity,
                  "wilting_point": st.wilting_point, "ks": st.ks}
        _write_tif(truth_dir / "static" / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                   [(b, hidden[b]) for b in HIDDEN_BANDS], "float32", {**base_tags, "KIND": "truth_static"})
        n_static += 2

    # The daily loop: spin-up, then every day to the end; write stacks and truth on the dates.
    first = sim.start - dt.timedelta(days=sim.spinup_days)
    wb = _WaterBalance(sim, st, first)
    date_index = {d: i for i, d in enumerate(dates)}
    window_buf: list[np.ndarray] = []
    days_out = [sim.start + dt.timedelta(days=i) for i in range((sim.end - sim.start).days + 1)]
    n_st = len(stations)
    sr = np.array([s.r for s in stations], dtype=int)
    sc = np.array([s.c for s in stations], dtype=int)
    series = {k: np.zeros((len(days_out), n_st)) for k in ("theta0", "theta1", "rain", "storm_hour", "lst")}
    overpasses = []
    day = first
    t_loop = time.perf_counter()
    while day <= sim.end:
        d = wb.step(day)
        window_buf.append(d.rain_obs)
        if len(window_buf) > sim.precip_window_days:
            window_buf.pop(0)
        if day >= sim.start:
            j = (day - sim.start).days
            for k in series:
                series[k][j] = getattr(d, k)[sr, sc]
        if day in date_index:
            i = date_index[day]
            bands, ssm = _observe(sim, st, d, i, cell_m)
            bands["precip_mm"] = np.sum(window_buf, axis=0)
            direction, hour = overpass(i)
            overpasses.append({"date": day.isoformat(), "pass": direction, "hour_utc": hour})
            tags = {**base_tags, "DATE": day.isoformat(), "PASS": direction,
                    "OVERPASS_UTC": f"{day.isoformat()}T{hour:02d}:00:00Z"}
            for tr, tc, tw, reg, til in parts:
                stem = f"{grid.name}_{tr}_{tc}"
                _write_tif(stacks_dir / day.isoformat() / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                           [(b, bands[b]) for b in STACK_BANDS], "float32", {**tags, "KIND": "stack"})
                _write_tif(truth_dir / day.isoformat() / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                           [("ssm", ssm)], "float32", {**tags, "KIND": "truth"})
                n_stack += 1
                n_truth += 1
        day += dt.timedelta(days=1)
    log.info("daily loop: %d days, %d dates written (%.1f s)", (sim.end - first).days + 1, len(dates),
             time.perf_counter() - t_loop)

    n_sensor_files, flag_counts = (0, {})
    if stations:
        n_sensor_files, flag_counts = _write_insitu(sim, out / "insitu", st, stations, days_out, series)
    _write_stations_csv(truth_dir / "stations.csv", grid, window, st, stations)

    stations_per_env = {k: v["stations"] for k, v in sorted(env_info.items()) if v["stations"]}
    land = st.landcover != 80
    codes, n_codes = np.unique(st.landcover, return_counts=True)
    ccodes, n_ccodes = np.unique(st.climate[land], return_counts=True)
    counts = {
        "cells": int(st.landcover.size), "land_cells": int(land.sum()),
        "stack_files": n_stack, "truth_files": n_truth, "static_files": n_static,
        "stations": len(stations), "sensor_files": n_sensor_files,
    }
    paths = {"stacks": "stacks", "static": "static", "insitu": "insitu", "truth": "truth",
             "stations": "truth/stations.csv", "manifest": "simulation.json"}
    summary = SimulationSummary(
        output=out, config_hash=chash, seed=sim.seed, grid=grid.describe(), window=_window_dict(window),
        tiles=[[tr, tc] for tr, tc, *_ in parts], dates=[d.isoformat() for d in dates], counts=counts,
        stations_per_env=stations_per_env, paths=paths,
    )
    manifest = {
        "generator": "ssm_spark.sources.simulate", "ssm_spark_version": __version__,
        "config_hash": chash, "seed": sim.seed, "region": cfg.region.name, "grid": grid.describe(),
        "window": _window_dict(window), "tiles": summary.tiles, "dates": summary.dates,
        "overpasses": overpasses, "precip_window_days": sim.precip_window_days,
        "bands": {"stacks": list(STACK_BANDS), "static": list(STATIC_BANDS), "classes": list(CLASS_BANDS),
                  "truth": list(TRUTH_BANDS), "truth_static": list(HIDDEN_BANDS)},
        "counts": counts, "paths": paths,
        "landcover_cells": {str(int(c)): int(n) for c, n in zip(codes, n_codes)},
        "climate_cells_land": {KOPPEN_CODES[int(c)]: int(n) for c, n in zip(ccodes, n_ccodes)},
        "environments": {k: v for k, v in sorted(env_info.items())},
        "insitu_flags": flag_counts,
        "simulate": sim.model_dump(mode="json"),
    }
    _write_text(out / "simulation.json", json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    summary.elapsed_s = time.perf_counter() - t_start
    log.info("simulation written to %s in %.1f s: %s", out, summary.elapsed_s, counts)
    return summary


def _write_stations_csv(path: Path, grid: Grid, window: Window, st: _Static, stations: list[_Station]) -> None:
    cols = ["station_id", "network", "station", "lon", "lat", "elevation_m", "row", "col", "tile_row", "tile_col",
            "env", "landcover", "climate", "porosity", "residual", "offset", "scale", "sensors"]
    lines = [",".join(cols)]
    for s in stations:
        row, col = int(window.row_off) + s.r, int(window.col_off) + s.c
        tr, tc = grid.tile_of(row, col)
        sensors = "|".join(f"{i}:{a:.2f}-{b:.2f}" for i, a, b in s.sensors)
        lines.append(",".join([
            f"{s.network}.{s.station}", s.network, s.station, f"{s.lon:.6f}", f"{s.lat:.6f}", f"{s.elevation:.1f}",
            str(row), str(col), str(tr), str(tc), s.env, str(int(st.landcover[s.r, s.c])),
            str(int(st.climate[s.r, s.c])), f"{st.porosity[s.r, s.c]:.4f}", f"{st.residual[s.r, s.c]:.4f}",
            f"{s.offset:.4f}", f"{s.scale:.4f}", sensors]))
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, "\n".join(lines) + "\n")


def iter_dates(cfg: Config) -> Iterator[dt.date]:
    """The stack dates of a configuration (``start`` to ``end`` every ``revisit_days``)."""
    yield from _dates(cfg.simulate)


def truth_table(output: str | Path, grid: Grid, cells: "Sequence[tuple[int, int]] | None" = None) -> "pd.DataFrame":
    """The simulated truth as a product-shaped table: ``row, col, date, ssm`` for every land cell
    (or only ``cells``, global (row, col) pairs).

    For evaluating products and in situ against the truth kept apart in ``output/truth/`` (without
    ``cells`` it holds every cell of every date in memory: small regions).
    """
    import pandas as pd

    want = None if cells is None else {(int(r), int(c)) for r, c in cells}

    frames = []
    for day_dir in sorted(p for p in (Path(output) / "truth").iterdir() if p.is_dir() and p.name[:2].isdigit()):
        for tif in sorted(day_dir.glob("*.tif")):
            with rasterio.open(tif) as src:
                a = src.read(1)
                t = src.transform
            r0 = round((grid.y0 - t.f) / grid.cell)
            c0 = round((t.c - grid.x0) / grid.cell)
            keep = np.isfinite(a)
            if want is not None:
                sel = np.zeros_like(keep)
                for r, c in want:
                    if 0 <= r - r0 < a.shape[0] and 0 <= c - c0 < a.shape[1]:
                        sel[r - r0, c - c0] = True
                keep &= sel
            rr, cc = np.nonzero(keep)
            frames.append(pd.DataFrame({"row": (rr + r0).astype("int32"), "col": (cc + c0).astype("int32"),
                                        "date": dt.date.fromisoformat(day_dir.name), "ssm": a[rr, cc].astype("f8")}))
    return pd.concat(frames, ignore_index=True)
