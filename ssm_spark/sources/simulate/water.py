"""The daily water balance of the 0-5 cm layer, the weather that drives it, and the vegetation.

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

One region-wide numpy step per day (:meth:`WaterBalance.step` returns a :class:`Day`).

References
----------
Jackson, T. J. et al. (2004), Remote Sens. Environ. 92, 475-482 (VWC from NDVI).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ssm_spark.config import SimulateConfig
from ssm_spark.physics import wcm
from ssm_spark.sources.simulate.world import STREAM_RAIN, Static, logistic, smooth_noise

__all__ = ["Day", "WaterBalance", "day_of_year", "theta_at"]

_LAYER_MM = 50.0          #: thickness of the simulated surface layer (0-5 cm), mm of soil


def day_of_year(day: dt.date) -> int:
    """Day of the year, 1 on 1 January."""
    return day.timetuple().tm_yday


def _phenology(st: Static, doy: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free NDVI and VWC (kg/m2) of a day of year."""
    p = st.veg
    t = np.float32(doy)
    up = logistic((t - p["t_up"]) / p["w_up"])
    down = logistic((t - p["t_down"]) / p["w_down"])
    ndvi = p["base"] + p["amp"] * (up - down)
    cut = doy >= p["harvest"]
    ndvi = np.where(cut, np.minimum(ndvi, p["base"] + 0.02), ndvi)
    foliage = wcm.vwc_from_ndvi(np.clip(ndvi, 0.0, 1.0))
    stem = np.where(p["stem_static"], p["stem"], p["stem"] * up * (1.0 - 0.6 * down) * ~cut)
    return ndvi, foliage + stem


def _seasonal_t(st: Static, doy: float) -> np.ndarray:
    """Climatological surface temperature (K) of a day of year, before weather and land-cover offsets."""
    return 273.15 + st.t_ann_c + 2.0 + 9.5 * np.cos(2.0 * np.pi * (doy - 205.0) / 365.25)


@dataclass
class Day:
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


class WaterBalance:
    """Daily bucket model of the 0-5 cm layer over the whole region (see the module docstring)."""

    def __init__(self, sim: SimulateConfig, st: Static, first_day: dt.date) -> None:
        self.sim, self.st = sim, st
        self.theta = self._deep(day_of_year(first_day))
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

    def step(self, day: dt.date) -> Day:
        st, sim = self.st, self.sim
        doy = day_of_year(day)
        rng = np.random.default_rng([sim.seed, STREAM_RAIN, day.toordinal()])
        e_w, e_t, e_h = rng.standard_normal(3)
        self.weather = 0.65 * self.weather + np.sqrt(1 - 0.65**2) * e_w
        self.t_anom = 0.75 * self.t_anom + np.sqrt(1 - 0.75**2) * 2.5 * e_t
        summer = np.exp(-(((doy - 205.0) / 40.0) ** 2))
        g = smooth_noise(rng, st.shape, self.rain_scale)
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
        return Day(day, rain, rain_obs, storm_hour, lst, ndvi, vwc, theta0, theta)


def theta_at(d: Day, hour: float | np.ndarray) -> np.ndarray:
    """Soil water at an hour of the day: a smooth step at the storm hour on rainy days, else linear."""
    rainy = d.rain > 1.0
    step = logistic((hour - d.storm_hour) / 0.75)
    w = np.where(rainy, step, (np.asarray(hour) + 1.0) / 24.0)
    return d.theta0 + (d.theta1 - d.theta0) * w
