"""Simulated in-situ stations: placement, the hourly ISMN files and the stations' truth table.

**Stations**: ``n_stations`` stations, stratified by environment (land-cover group x Koppen main
class; none on water, built-up or snow), at least ``min_stations_per_env`` in each environment
large enough for them. Hourly 0-0.05 m soil moisture = the cell's truth (interpolated within the
day around the storm hour) with a persistent per-station offset and scale, AR(1)
representativeness noise and sensor noise; frozen hours read the liquid water and are flagged
``D01``/``D02``; a few ``D05``/``D06`` flags, gaps (absent lines and ``-9999 M M`` lines). A few
stations have a second 5 cm sensor and a 10 cm sensor (to exercise sensor averaging and the depth
filter).

Files (ISMN "header_values" format, read by :mod:`ssm_spark.insitu.ismn`)::

    insitu/<NETWORK>/<STATION>/*.stm, *_static_variables.csv
    truth/stations.csv          each station's true cell, environment and errors

References
----------
Dorigo, W. A. et al. (2013), Vadose Zone J. 12(3) (ISMN quality flags).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from scipy import ndimage, signal

from ssm_spark.config import SimulateConfig
from ssm_spark.grid import Grid
from ssm_spark.io import write_text_atomic
from ssm_spark.sources.simulate.contracts import KOPPEN_CODES
from ssm_spark.sources.simulate.world import STREAM_STATIONS, Static, logistic, quantile

__all__ = ["Station", "place_stations", "write_insitu", "write_stations_csv"]

_SENSOR = "SimProbe"
_DEPTH = (0.0, 0.05)

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


@dataclass
class Station:
    """One simulated station: where it is and its persistent errors (offset, scale)."""

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


def place_stations(sim: SimulateConfig, grid: Grid, window: Window, st: Static,
                   env: np.ndarray) -> tuple[list[Station], dict[str, dict[str, int]]]:
    """Stratified placement: every environment big enough gets ``min_stations_per_env`` stations."""
    rng = np.random.default_rng([sim.seed, STREAM_STATIONS])
    retr = st.retrievable
    # Not next to water, built-up or snow (mixed cells), not on the highest 3 % (frozen in spring).
    near_masked = ndimage.binary_dilation(~retr, iterations=1, border_value=1)   # also off the region's edge
    ok = retr & ~near_masked & (st.elevation_m <= quantile(st.elevation_m, retr, 0.97, np.inf))
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
    stations: list[Station] = []
    H, W = st.shape
    r0, c0 = int(window.row_off), int(window.col_off)
    for k in sorted(alloc):
        cand = np.flatnonzero(ok & (env == k))
        picks = np.sort(rng.choice(cand, size=alloc[k], replace=False))
        for p in picks:
            r, c = divmod(int(p), W)
            stations.append(Station(0, "", "", k, r, c, 0.0, 0.0, 0.0, 0.0, 1.0))
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


def _static_csv(st: Static, s: Station) -> str:
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


def write_insitu(sim: SimulateConfig, out: Path, st: Static, stations: list[Station],
                 days: list[dt.date], series: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    """Hourly ISMN header_values files for every station sensor; returns (files, flag counts)."""
    n_days = len(days)
    hours = np.arange(24, dtype="f8")
    stamps = [f"{d.year:04d}/{d.month:02d}/{d.day:02d} {h:02d}:00" for d in days for h in range(24)]
    flag_counts: dict[str, int] = {}
    n_files = 0
    t0, t1 = days[0], days[-1]
    for s in stations:
        rng = np.random.default_rng([sim.seed, STREAM_STATIONS, 1000 + s.index])
        th0 = series["theta0"][:, s.index][:, None]
        th1 = series["theta1"][:, s.index][:, None]
        rain = series["rain"][:, s.index][:, None]
        sh = series["storm_hour"][:, s.index][:, None]
        lst = series["lst"][:, s.index][:, None]
        step = logistic((hours[None, :] - sh) / 0.75)
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
        write_text_atomic(folder / f"{net_file}_{net_file}_{s.station}_static_variables.csv", _static_csv(st, s))
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
            write_text_atomic(folder / name, header + "\n" + "\n".join(body) + "\n")
            n_files += 1
    return n_files, dict(sorted(flag_counts.items()))


def write_stations_csv(path: Path, grid: Grid, window: Window, st: Static, stations: list[Station]) -> None:
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
    write_text_atomic(path, "\n".join(lines) + "\n")
