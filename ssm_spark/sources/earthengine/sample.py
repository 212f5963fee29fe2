"""Point sampling through Earth Engine: cells x dates, batched within its request limits.

A cell is sampled at its centre, given in the grid's CRS, from the stacks of
:mod:`.requests` (already on the grid: ``reproject(crs, crsTransform)``), with ``reduceRegions``
(``Reducer.first``) at the grid's ``crs`` and ``crsTransform``: the value is the grid cell's, the
same one an export of the tile would hold. One request holds at most
``sample.max_points_per_request`` points (Earth Engine returns at most 5000 features per request)
and, for matchups, ``sample.max_dates_per_request`` dates; the answers keep our band names.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ssm_spark.sources.earthengine import requests as R
from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ssm_spark.grid import Grid
    from ssm_spark.sources.earthengine.settings import EarthEngineConfig

log = logging.getLogger(__name__)

__all__ = ["batches", "cells_request", "sample_cells", "sample_matchups", "acquisition_dates_request"]

BANDS = DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS


def batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(offset, chunk)`` of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield i, items[i:i + size]


def _points(grid: "Grid", cells: Sequence[tuple[int, int]], offset: int = 0, extra: dict | None = None):
    import ee

    crs = R.grid_crs(grid)
    feats = []
    for i, (r, c) in enumerate(cells):
        x, y = grid.cell_to_xy(r, c)
        feats.append(ee.Feature(ee.Geometry.Point([x, y], proj=crs), {"i": offset + i, "row": int(r), "col": int(c),
                                                                     **(extra or {})}))
    return ee.FeatureCollection(feats)


def full_stack(cfg: "EarthEngineConfig", grid: "Grid", date: Any):
    """Every band of the three stacks of a date in one image (dynamic float, classes as integers)."""
    return (R.dynamic_stack(cfg, date, grid).addBands(R.static_stack(cfg, grid))
            .addBands(R.classes_stack(cfg, grid)))


def cells_request(cfg: "EarthEngineConfig", grid: "Grid", cells: Sequence[tuple[int, int]], date: Any,
                  offset: int = 0):
    """One sampling request: the cells' values of every band on a date (``reduceRegions``, first)."""
    import ee

    if len(cells) > cfg.sample.max_points_per_request:
        raise ValueError(f"{len(cells)} points in one request; at most earthengine.sample.max_points_per_request = "
                         f"{cfg.sample.max_points_per_request}")
    day = R._day(date).isoformat()
    return full_stack(cfg, grid, date).reduceRegions(
        collection=_points(grid, cells, offset, {"date": day}), reducer=ee.Reducer.first(), crs=R.grid_crs(grid),
        crsTransform=R.crs_transform(grid))


def _values(props: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for b in BANDS:
        v = props.get(b)
        out[b] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def sample_cells(client: Any, cfg: "EarthEngineConfig", grid: "Grid", cells: Sequence[tuple[int, int]],
                 date: Any) -> list[dict[str, float | None] | None]:
    """Band values of each cell on a date (``None`` where Earth Engine returned no feature for it),
    in batches of ``sample.max_points_per_request`` requests through ``client.get_info``."""
    out: list[dict | None] = [None] * len(cells)
    for off, chunk in batches(list(cells), cfg.sample.max_points_per_request):
        fc = client.get_info(cells_request(cfg, grid, chunk, date, off), f"sample {len(chunk)} cell(s) on {date}")
        for f in (fc or {}).get("features", []):
            props = f.get("properties", {})
            out[int(props["i"])] = _values(props)
    return out


def sample_matchups(client: Any, cfg: "EarthEngineConfig", grid: "Grid", stations: "pd.DataFrame",
                    dates: Sequence[Any]) -> "pd.DataFrame":
    """Feature values of stations x dates (``station_id, lon, lat`` in; the pixel-table columns out).

    Requests hold at most ``max_points_per_request`` points and ``max_dates_per_request`` dates
    (one merged FeatureCollection per request); rows without backscatter (no acquisition) are dropped.
    """
    import ee
    import numpy as np
    import pandas as pd

    rows, cols = grid.to_cell(stations["lon"].to_numpy(), stations["lat"].to_numpy())
    cells = list(zip(np.atleast_1d(rows).tolist(), np.atleast_1d(cols).tolist()))
    ids = stations["station_id"].astype(str).tolist()
    days = [R._day(d).isoformat() for d in dates]
    out = []
    for _, dchunk in batches(days, cfg.sample.max_dates_per_request):
        for off, chunk in batches(cells, cfg.sample.max_points_per_request // max(1, len(dchunk)) or 1):
            fcs = [cells_request(cfg, grid, chunk, d, off) for d in dchunk]
            merged = ee.FeatureCollection(fcs).flatten() if len(fcs) > 1 else fcs[0]
            fc = client.get_info(merged, f"sample {len(chunk)} station(s) x {len(dchunk)} date(s)")
            for f in (fc or {}).get("features", []):
                p = f.get("properties", {})
                i = int(p["i"])
                vals = _values(p)
                if vals["vv_db"] is None and vals["vh_db"] is None:
                    continue
                lon, lat = grid.to_lonlat(cells[i][0], cells[i][1])
                out.append({"station_id": ids[i], "row": cells[i][0], "col": cells[i][1], "lon": lon, "lat": lat,
                            "date": dt.date.fromisoformat(p["date"]), **vals})
    return pd.DataFrame(out)


def acquisition_dates_request(cfg: "EarthEngineConfig", grid: "Grid", row: int, col: int, date: Any, days: int = 36):
    """The distinct dates (``YYYY-MM-DD``) of Sentinel-1 scenes over a cell within +- ``days``."""
    import ee

    d = R._day(date)
    x, y = grid.cell_to_xy(row, col)
    pt = ee.Geometry.Point([x, y], proj=R.grid_crs(grid))
    col_ = R.s1_collection(cfg, d - dt.timedelta(days=days), d + dt.timedelta(days=days + 1), pt)
    return col_.aggregate_array("system:time_start").map(
        lambda t: ee.Date(t).format("YYYY-MM-dd")).distinct().sort()
