"""Point sampling through Earth Engine: cells x dates, batched within its request limits.

A cell is sampled at its centre, given in the grid's CRS, from the stacks of
:mod:`.requests` (already on the grid: ``reproject(crs, crsTransform)``), with ``reduceRegions``
(``Reducer.first``) at the grid's ``crs`` and ``crsTransform``: the value is the grid cell's, the
same one an export of the tile would hold. One request holds at most
``sample.max_points_per_request`` points (Earth Engine returns at most 5000 features per request)
and, for matchups and series, ``sample.max_dates_per_request`` dates; the answers keep our band
names. Entry points: :func:`sample_cells` (cells on a date: a point), :func:`sample_pairs` ((cell,
date) pairs: matchups), :func:`sample_series` (a cell on its scene dates, found first by
:func:`scene_dates`: a series, a climatology with ``stack="s1"``). Every call goes through the
client's ``get_info`` (retried on quota and transient errors); an answer of another shape than
Earth Engine's is refused (:class:`~.client.EarthEngineError` naming the request), never read as
"no data".
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

__all__ = ["batches", "cells_request", "sample_cells", "sample_pairs", "sample_matchups", "sample_series",
           "scene_dates", "as_stored", "dates_between_request", "S1_BANDS"]

BANDS = DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS
#: The bands a change-detection climatology needs (``stack="s1"``: the Sentinel-1 image alone).
S1_BANDS = ("vv_db", "vh_db", "incidence_deg")


def batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(offset, chunk)`` of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield i, items[i:i + size]


def _points(grid: "Grid", cells: Sequence[tuple[int, int]], offset: int = 0, extra: dict | None = None,
            ids: Sequence[int] | None = None):
    import ee

    crs = R.grid_crs(grid)
    feats = []
    for i, (r, c) in enumerate(cells):
        x, y = grid.cell_to_xy(r, c)
        k = int(ids[i]) if ids is not None else offset + i
        feats.append(ee.Feature(ee.Geometry.Point([x, y], proj=crs), {"i": k, "row": int(r), "col": int(c),
                                                                     **(extra or {})}))
    return ee.FeatureCollection(feats)


def full_stack(cfg: "EarthEngineConfig", grid: "Grid", date: Any):
    """Every band of the three stacks of a date in one image (dynamic float, classes as integers)."""
    return (R.dynamic_stack(cfg, date, grid).addBands(R.static_stack(cfg, grid))
            .addBands(R.classes_stack(cfg, grid)))


def cells_request(cfg: "EarthEngineConfig", grid: "Grid", cells: Sequence[tuple[int, int]], date: Any,
                  offset: int = 0, stack: str = "full", ids: Sequence[int] | None = None):
    """One sampling request: the cells' values of every band on a date (``reduceRegions``, first);
    ``stack="s1"``: only :data:`S1_BANDS` (the Sentinel-1 image, :func:`.requests.s1`)."""
    import ee

    if len(cells) > cfg.sample.max_points_per_request:
        raise ValueError(f"{len(cells)} points in one request; at most earthengine.sample.max_points_per_request = "
                         f"{cfg.sample.max_points_per_request}")
    day = R._day(date).isoformat()
    image = full_stack(cfg, grid, date) if stack == "full" else R.s1(cfg, date, grid)
    return image.reduceRegions(
        collection=_points(grid, cells, offset, {"date": day}, ids), reducer=ee.Reducer.first(), crs=R.grid_crs(grid),
        crsTransform=R.crs_transform(grid))


def _values(props: dict, bands: Sequence[str] = BANDS) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for b in bands:
        v = props.get(b)
        out[b] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def _features(fc: Any, what: str) -> list[dict]:
    """The features of a getInfo'd FeatureCollection, or :class:`EarthEngineError` on another shape."""
    from ssm_spark.sources.earthengine.client import EarthEngineError

    if fc is None:
        return []
    feats = fc.get("features") if isinstance(fc, dict) else None
    if not isinstance(feats, list):
        raise EarthEngineError(f"{what}: Earth Engine answered {type(fc).__name__} "
                               f"{str(fc)[:120]!r}, not a FeatureCollection (no 'features' list)")
    return feats


def sample_cells(client: Any, cfg: "EarthEngineConfig", grid: "Grid", cells: Sequence[tuple[int, int]],
                 date: Any) -> list[dict[str, float | None] | None]:
    """Band values of each cell on a date (``None`` where Earth Engine returned no feature for it),
    in batches of ``sample.max_points_per_request`` requests through ``client.get_info``."""
    out: list[dict | None] = [None] * len(cells)
    for off, chunk in batches(list(cells), cfg.sample.max_points_per_request):
        what = f"sample {len(chunk)} cell(s) on {date}"
        for f in _features(client.get_info(cells_request(cfg, grid, chunk, date, off), what), what):
            props = f.get("properties", {})
            out[int(props["i"])] = _values(props)
    return out


def sample_pairs(client: Any, cfg: "EarthEngineConfig", grid: "Grid", pairs: Sequence[tuple[int, int, Any]], *,
                 stack: str = "full") -> list[dict[str, float | None] | None]:
    """Band values of ``(row, col, date)`` pairs (``None`` where Earth Engine returned no feature).

    Pairs are grouped by date; one request stacks at most ``sample.max_dates_per_request`` dates
    and ``sample.max_points_per_request`` points over all of them (one merged FeatureCollection).
    ``stack="s1"``: only :data:`S1_BANDS` are sampled (a climatology's series).
    """
    import ee

    bands = BANDS if stack == "full" else S1_BANDS
    by_date: dict[str, list[int]] = {}
    for k, (_, _, d) in enumerate(pairs):
        by_date.setdefault(R._day(d).isoformat(), []).append(k)
    out: list[dict | None] = [None] * len(pairs)
    cap_p, cap_d = cfg.sample.max_points_per_request, cfg.sample.max_dates_per_request

    def flush(req: list[tuple[str, Sequence[int]]]) -> None:
        fcs = [cells_request(cfg, grid, [pairs[k][:2] for k in ks], d, stack=stack, ids=ks) for d, ks in req]
        what = (f"sample {sum(len(ks) for _, ks in req)} point(s) on {len(req)} date(s) "
                f"({req[0][0]}..{req[-1][0]})")
        merged = ee.FeatureCollection(fcs).flatten() if len(fcs) > 1 else fcs[0]
        for f in _features(client.get_info(merged, what), what):
            p = f.get("properties", {})
            k = int(p["i"])
            if 0 <= k < len(out):
                out[k] = _values(p, bands)

    req: list[tuple[str, Sequence[int]]] = []
    n = 0
    for d in sorted(by_date):
        for _, chunk in batches(by_date[d], cap_p):
            if req and (len(req) == cap_d or n + len(chunk) > cap_p):
                flush(req)
                req, n = [], 0
            req.append((d, chunk))
            n += len(chunk)
    if req:
        flush(req)
    return out


def dates_between_request(cfg: "EarthEngineConfig", grid: "Grid", row: int, col: int, start: Any, end: Any):
    """The distinct dates (``YYYY-MM-DD``, UTC) of Sentinel-1 scenes over a cell in ``[start, end]``."""
    import ee

    x, y = grid.cell_to_xy(row, col)
    pt = ee.Geometry.Point([x, y], proj=R.grid_crs(grid))
    col_ = R.s1_collection(cfg, R._day(start), R._day(end) + dt.timedelta(days=1), pt)
    return col_.aggregate_array("system:time_start").map(
        lambda t: ee.Date(t).format("YYYY-MM-dd")).distinct().sort()


def scene_dates(client: Any, cfg: "EarthEngineConfig", grid: "Grid", row: int, col: int, start: Any,
                end: Any) -> list[str]:
    """Dates with a Sentinel-1 scene over the cell in ``[start, end]`` (one request)."""
    from ssm_spark.sources.earthengine.client import EarthEngineError

    s, e = R._day(start).isoformat(), R._day(end).isoformat()
    what = f"Sentinel-1 dates over cell (row {row}, col {col}) {s}..{e}"
    got = client.get_info(dates_between_request(cfg, grid, row, col, s, e), what)
    if got is None:
        return []
    if not isinstance(got, list) or not all(isinstance(d, str) for d in got):
        raise EarthEngineError(f"{what}: Earth Engine answered {str(got)[:120]!r}, not a list of dates")
    return sorted({d for d in got if s <= d <= e})


def sample_series(client: Any, cfg: "EarthEngineConfig", grid: "Grid", row: int, col: int, dates: Sequence[Any], *,
                  stack: str = "full") -> dict[str, dict[str, float | None] | None]:
    """A cell's values on every date of ``dates`` with a Sentinel-1 scene over it: one request for
    the scene dates, then :func:`sample_pairs` (batched) on those; ``{date: values}`` for the scene
    dates (``None`` where Earth Engine returned no feature); dates without a scene are absent."""
    days = sorted({R._day(d).isoformat() for d in dates})
    if not days:
        return {}
    have = set(scene_dates(client, cfg, grid, row, col, days[0], days[-1]))
    todo = [d for d in days if d in have]
    vals = sample_pairs(client, cfg, grid, [(row, col, d) for d in todo], stack=stack)
    return dict(zip(todo, vals))


def as_stored(values: dict[str, float | None]) -> dict[str, float]:
    """Sampled values as an exported GeoTIFF stores them (:data:`.requests.STACKS`): float32 bands,
    uint8 classes (0, their nodata, and anything outside 1..255: missing); None: NaN."""
    import numpy as np

    out = {}
    for b, v in values.items():
        if v is None or not np.isfinite(v):
            out[b] = np.nan
        elif b in CLASS_BANDS:
            out[b] = float(int(v)) if 0 < v < 256 and float(v).is_integer() else np.nan
        else:
            out[b] = float(np.float32(v))
    return out


def sample_matchups(client: Any, cfg: "EarthEngineConfig", grid: "Grid", stations: "pd.DataFrame",
                    dates: Sequence[Any]) -> "pd.DataFrame":
    """Feature values of stations x dates (``station_id, lon, lat`` in; ``station_id, row, col, lon,
    lat, date`` and the bands out): :func:`sample_pairs` of every station cell and date (the
    packing of ``ssm-spark matchups --source ee``); rows without backscatter (no acquisition) are
    dropped.
    """
    import numpy as np
    import pandas as pd

    rows, cols = grid.to_cell(stations["lon"].to_numpy(), stations["lat"].to_numpy())
    cells = list(zip(np.atleast_1d(rows).tolist(), np.atleast_1d(cols).tolist()))
    ids = stations["station_id"].astype(str).tolist()
    days = [R._day(d).isoformat() for d in dates]
    pairs = [(r, c, d) for d in days for r, c in cells]
    owner = [i for _ in days for i in range(len(cells))]
    out = []
    for (r, c, d), i, vals in zip(pairs, owner, sample_pairs(client, cfg, grid, pairs)):
        if vals is None or (vals["vv_db"] is None and vals["vh_db"] is None):
            continue
        lon, lat = grid.to_lonlat(r, c)
        out.append({"station_id": ids[i], "row": r, "col": c, "lon": lon, "lat": lat,
                    "date": dt.date.fromisoformat(d), **vals})
    return pd.DataFrame(out)
