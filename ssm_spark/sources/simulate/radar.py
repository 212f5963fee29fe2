"""The Sentinel-1 observation of a simulated day: pass geometry and the forward backscatter model.

**Backscatter** follows a forward path richer than any retrieval assumes: the soil permittivity
from Dobson et al. (1985) with the cell's texture and bulk density, mapped to the "effective"
moisture of the Oh model through Topp's inverse, Oh (2002) VV and VH with the cell's roughness at
the *local* incidence angle (terrain slope and aspect), a Water Cloud Model with VWC and
land-cover specific A and B (jittered per cell), frozen soil seen through its liquid water only,
unmodelled clutter, gamma speckle of the cell's equivalent number of looks and an additive noise
floor. Water (wind-roughened), built-up (bright) and snow (wet in summer) have their own
signatures. The incidence angle runs 30-46 deg across the columns, ascending (increasing to the
east, 18 UTC) and descending (increasing to the west, 06 UTC) passes alternating between dates.

References
----------
Oh, Y., Sarabandi, K. and Ulaby, F. T. (2002), IEEE TGRS 40(6), 1348-1355. Dobson, M. C. et al.
(1985), IEEE TGRS GE-23(1), 35-46. Attema, E. P. W. and Ulaby, F. T. (1978), Radio Science 13(2),
357-364.
"""

from __future__ import annotations

import numpy as np

from ssm_spark.config import SimulateConfig
from ssm_spark.physics import dielectric, oh, wcm
from ssm_spark.sources.simulate.water import Day, day_of_year, theta_at
from ssm_spark.sources.simulate.world import STREAM_OBS, Static, smooth_noise

__all__ = ["overpass", "observe"]

_OVERPASS_HOUR = {"descending": 6, "ascending": 18}   #: Sentinel-1 over Europe, UTC
_INC_RANGE = (30.0, 46.0)  #: IW swath incidence angles (deg)


def overpass(index: int) -> tuple[str, int]:
    """Pass direction and UTC hour of the ``index``-th date: descending (06 UTC) and ascending (18 UTC)
    alternate, starting with descending."""
    direction = "descending" if index % 2 == 0 else "ascending"
    return direction, _OVERPASS_HOUR[direction]


def _incidence(st: Static, direction: str) -> np.ndarray:
    """Ellipsoid incidence angle (deg) across the columns: increasing to the east on ascending passes."""
    lo, hi = _INC_RANGE
    across = st.u if direction == "ascending" else 1.0 - st.u
    return lo + (hi - lo) * across


def observe(sim: SimulateConfig, st: Static, d: Day, index: int,
            cell_m: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stack bands of an output date (all but ``precip_mm``) and the truth SSM at its overpass hour."""
    direction, hour = overpass(index)
    rng = np.random.default_rng([sim.seed, STREAM_OBS, d.day.toordinal()])
    doy = day_of_year(d.day)
    ssm = theta_at(d, float(hour))
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

    wind = rng.standard_normal() * 0.8 + 0.3 * smooth_noise(rng, st.shape, max(2.0, min(st.shape) / 6.0))
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
