"""The simulator's entry point: :func:`simulate` runs the daily loop and writes every file.

Static fields first (:mod:`.world`), stations placed on them (:mod:`.stations`), then one step of
the water balance per day from the spin-up to the end (:mod:`.water`); on every stack date the
radar observation (:mod:`.radar`) and the truth are written per tile (:mod:`.writers`); last the
in-situ files, the stations' truth and the ``simulation.json`` manifest. Also :func:`iter_dates`
and :func:`truth_table` (the truth read back as a product-shaped table).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from ssm_spark import __version__
from ssm_spark.config import Config, SimulateConfig
from ssm_spark.grid import Grid
from ssm_spark.io import write_json_atomic
from ssm_spark.sources.simulate.contracts import (
    CLASS_BANDS,
    HIDDEN_BANDS,
    KOPPEN_CODES,
    STACK_BANDS,
    STATIC_BANDS,
    TRUTH_BANDS,
)
from ssm_spark.sources.simulate.radar import observe, overpass
from ssm_spark.sources.simulate.stations import place_stations, write_insitu, write_stations_csv
from ssm_spark.sources.simulate.water import WaterBalance
from ssm_spark.sources.simulate.world import build_static, cell_size_m, environment
from ssm_spark.sources.simulate.writers import tile_parts, write_tif

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["simulate", "SimulationSummary", "iter_dates", "truth_table"]


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


def _window_dict(window: Window) -> dict[str, int]:
    return {"row_off": int(window.row_off), "col_off": int(window.col_off),
            "height": int(window.height), "width": int(window.width)}


def _dates(sim: SimulateConfig) -> list[dt.date]:
    out, d = [], sim.start
    while d <= sim.end:
        out.append(d)
        d += dt.timedelta(days=sim.revisit_days)
    return out


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
    parts = tile_parts(grid, window)
    dates = _dates(sim)
    log.info("simulating %s: window %s of %s, %d tiles, %d dates (%s..%s), seed %d", cfg.region.name,
             _window_dict(window), grid.name, len(parts), len(dates), sim.start, sim.end, sim.seed)
    st = build_static(sim, grid, window)
    _, lat_c = grid.to_lonlat(int(window.row_off) + st.shape[0] // 2, int(window.col_off) + st.shape[1] // 2)
    cell_m = cell_size_m(grid, lat_c)
    env = environment(st.landcover, st.climate)
    stations, env_info = place_stations(sim, grid, window, st, env)
    log.info("static fields built; %d stations in %d environments (%.1f s)", len(stations),
             sum(1 for v in env_info.values() if v["stations"]), time.perf_counter() - t_start)

    chash = cfg.hash()
    base_tags = {"SOURCE": "ssm_spark.sources.simulate", "SSM_SPARK_VERSION": __version__,
                 "CONFIG_HASH": chash, "SEED": str(sim.seed), "GRID": grid.name}
    static_dir, stacks_dir, truth_dir = out / "static", out / "stacks", out / "truth"
    n_static = n_stack = n_truth = 0
    for tr, tc, tw, reg, til in parts:
        stem = f"{grid.name}_{tr}_{tc}"
        write_tif(static_dir / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                   [(b, getattr(st, b)) for b in STATIC_BANDS], "float32", {**base_tags, "KIND": "static"})
        write_tif(static_dir / f"{stem}_classes.tif", grid, tr, tc, tw, reg, til,
                   [("landcover", st.landcover), ("climate", st.climate)], "uint8", {**base_tags, "KIND": "classes"})
        hidden = {"porosity": st.porosity, "residual": st.residual, "field_capacity": st.field_capacity,
                  "wilting_point": st.wilting_point, "ks": st.ks}
        write_tif(truth_dir / "static" / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                   [(b, hidden[b]) for b in HIDDEN_BANDS], "float32", {**base_tags, "KIND": "truth_static"})
        n_static += 2

    # The daily loop: spin-up, then every day to the end; write stacks and truth on the dates.
    first = sim.start - dt.timedelta(days=sim.spinup_days)
    wb = WaterBalance(sim, st, first)
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
            bands, ssm = observe(sim, st, d, i, cell_m)
            bands["precip_mm"] = np.sum(window_buf, axis=0)
            direction, hour = overpass(i)
            overpasses.append({"date": day.isoformat(), "pass": direction, "hour_utc": hour})
            tags = {**base_tags, "DATE": day.isoformat(), "PASS": direction,
                    "OVERPASS_UTC": f"{day.isoformat()}T{hour:02d}:00:00Z"}
            for tr, tc, tw, reg, til in parts:
                stem = f"{grid.name}_{tr}_{tc}"
                write_tif(stacks_dir / day.isoformat() / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                           [(b, bands[b]) for b in STACK_BANDS], "float32", {**tags, "KIND": "stack"})
                write_tif(truth_dir / day.isoformat() / f"{stem}.tif", grid, tr, tc, tw, reg, til,
                           [("ssm", ssm)], "float32", {**tags, "KIND": "truth"})
                n_stack += 1
                n_truth += 1
        day += dt.timedelta(days=1)
    log.info("daily loop: %d days, %d dates written (%.1f s)", (sim.end - first).days + 1, len(dates),
             time.perf_counter() - t_loop)

    n_sensor_files, flag_counts = (0, {})
    if stations:
        n_sensor_files, flag_counts = write_insitu(sim, out / "insitu", st, stations, days_out, series)
    write_stations_csv(truth_dir / "stations.csv", grid, window, st, stations)

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
    write_json_atomic(out / "simulation.json", manifest, indent=2, sort_keys=False)
    summary.elapsed_s = time.perf_counter() - t_start
    log.info("simulation written to %s in %.1f s: %s", out, summary.elapsed_s, counts)
    return summary


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
