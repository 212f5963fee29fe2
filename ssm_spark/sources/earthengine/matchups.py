"""``ssm-spark matchups --source ee``: station matchups from Earth Engine point extraction.

The stack path reads the stations' cells from feature stacks on disk; this one samples the same
cells from Earth Engine and then runs the very same steps, so the table has the same columns and
rules:

1. in situ: :func:`~ssm_spark.insitu.ismn.read_ismn`, daily means, stations located on the grid
   (:func:`~ssm_spark.matchups.locate_stations`; with ``matchups.tolerance_m`` the ring of
   candidate cells, :func:`~ssm_spark.matchups.candidate_cells`);
2. dates: the Sentinel-1 scene dates over each station's cell (one ``aggregate_array`` request per
   :data:`STATIONS_PER_DATES_REQUEST` stations) within its in-situ period +- ``matchups.window_days``,
   widened to ``physics.change_detection.window_start..window_end`` when set (the climatology's
   reference window);
3. values: every candidate cell x its station's dates, sampled in batches within
   ``earthengine.sample`` limits (:func:`~.sample.sample_pairs`, ``reduceRegions`` on the grid, our
   band names), stored as an export stores them (:func:`~.sample.as_stored`) and turned into pixel
   rows by the stack reader's value rules (:func:`ssm_spark.point.cells.pixel_frame`);
4. the stack path's own Spark steps: :func:`~ssm_spark.transforms.add_cell_climatology`,
   :func:`~ssm_spark.transforms.add_coupled_features`, :func:`~ssm_spark.matchups.build_matchups`,
   one atomic Parquet write.

Earth Engine failures (quota, HTTP 429 after the client's retries, an answer of another shape)
stop the run with :class:`~.client.EarthEngineError` naming the request (the CLI exits 2); nothing
is written then.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from ssm_spark.sources.earthengine import requests as R

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config
    from ssm_spark.grid import Grid
    from ssm_spark.sources.earthengine.settings import EarthEngineConfig

log = logging.getLogger(__name__)

__all__ = ["ee_matchups_run", "station_scene_dates", "STATIONS_PER_DATES_REQUEST"]

#: Stations whose scene-date lists one request gathers (each list is a few hundred short strings).
STATIONS_PER_DATES_REQUEST = 100


def station_scene_dates(client: Any, cfg: "EarthEngineConfig", grid: "Grid",
                        spans: Sequence[tuple[int, int, dt.date, dt.date]]) -> list[list[str]]:
    """Sentinel-1 scene dates over each ``(row, col, start, end)`` (inclusive), in batched requests
    (an ``ee.List`` of :func:`~.sample.dates_between_request`).

    Raises
    ------
    EarthEngineError
        The answer is not one list of dates per cell (naming the request).
    """
    import ee

    from ssm_spark.sources.earthengine.client import EarthEngineError
    from ssm_spark.sources.earthengine.sample import batches, dates_between_request

    out: list[list[str]] = []
    for off, chunk in batches(list(spans), STATIONS_PER_DATES_REQUEST):
        req = ee.List([dates_between_request(cfg, grid, r, c, s, e) for r, c, s, e in chunk])
        what = f"Sentinel-1 dates over {len(chunk)} station cell(s) (from #{off})"
        got = client.get_info(req, what)
        if not isinstance(got, list) or len(got) != len(chunk) or not all(
                isinstance(ds, list) and all(isinstance(d, str) for d in ds) for ds in got):
            raise EarthEngineError(f"{what}: Earth Engine answered {str(got)[:120]!r}, not {len(chunk)} lists "
                                   "of dates")
        for (_, _, s, e), ds in zip(chunk, got):
            out.append(sorted({d for d in ds if s.isoformat() <= d <= e.isoformat()}))
    return out


def _pixels(client: Any, cfg: "Config", grid: "Grid", located: pd.DataFrame, daily: pd.DataFrame) -> tuple[
        pd.DataFrame, dict]:
    """Pixel rows (the stack reader's table) of the stations' candidate cells on their scene dates."""
    from ssm_spark.matchups import candidate_cells
    from ssm_spark.point.cells import pixel_frame
    from ssm_spark.sources.earthengine.sample import as_stored, sample_pairs

    ec, w = cfg.earthengine, int(cfg.matchups.window_days)
    cdc = cfg.physics.change_detection
    days = pd.to_datetime(daily["date"]).dt.date
    span = days.groupby(daily["station_id"]).agg(["min", "max"])
    spans, order = [], []
    for s in located.itertuples(index=False):
        lo = span.loc[s.station_id, "min"] - dt.timedelta(days=w)
        hi = span.loc[s.station_id, "max"] + dt.timedelta(days=w)
        if cdc.enabled and cdc.window_start is not None:
            lo = min(lo, R._day(cdc.window_start))
        if cdc.enabled and cdc.window_end is not None:
            hi = max(hi, R._day(cdc.window_end))
        spans.append((int(s.row), int(s.col), lo, hi))
        order.append(s.station_id)
    scene = dict(zip(order, station_scene_dates(client, ec, grid, spans)))
    pairs = sorted({(r, c, d) for sid, _, _, _, r, c, _ in candidate_cells(located, grid, cfg.matchups.tolerance_m)
                    for d in scene[sid]}, key=lambda p: (p[2], p[0], p[1]))
    values = sample_pairs(client, ec, grid, pairs)
    got = [(p, as_stored(v)) for p, v in zip(pairs, values) if v is not None]
    px, kept = pixel_frame([v for _, v in got], grid, [p[0] for p, _ in got], [p[1] for p, _ in got],
                           [p[2] for p, _ in got], cfg.ingest.max_slope_deg)
    report = {"stations": len(order), "scene_dates": int(sum(len(v) for v in scene.values())),
              "points_sampled": len(pairs), "points_without_feature": len(pairs) - len(got),
              "points_without_backscatter": int((~kept).sum()), "pixel_rows": len(px)}
    return px, report


def ee_matchups_run(spark: "SparkSession", cfg: "Config", insitu: Path, output: Path, client: Any = None,
                    params: Any = None) -> dict:
    """ISMN in situ + Earth Engine point extraction -> matchup table (Parquet), as ``matchups_run``.

    Parameters
    ----------
    spark : SparkSession
    cfg : Config
        ``insitu``, ``matchups``, ``ingest``, ``physics.change_detection`` and ``earthengine``.
    insitu : path
        An ISMN download.
    output : path
        The matchup table (Parquet), written atomically.
    client : optional
        The Earth Engine client (default :meth:`~.client.EEClient.connect`; tests pass a
        recorded-response fake).
    params : optional
        WCM parameters of the coupled features (as ``matchups_run``).

    Returns
    -------
    dict
        ``insitu``, ``earthengine`` (stations, dates, points sampled and without values),
        ``matchups``, ``rows``, ``output``, ``seconds`` and, with change detection,
        ``change_detection``.

    Raises
    ------
    InputError, CredentialsError, EarthEngineError
    """
    from ssm_spark.errors import InputError
    from ssm_spark.insitu import daily_means, read_ismn
    from ssm_spark.matchups import locate_stations, write_station_matchups
    from ssm_spark.sources.earthengine.client import EEClient
    from ssm_spark.sources.stacks import pixel_schema

    grid = cfg.grid.build()
    t0 = time.perf_counter()
    ins = read_ismn(insitu, max_depth_m=cfg.insitu.max_depth_m, depth_tolerance_m=cfg.insitu.depth_tolerance_m,
                    good_flags=tuple(cfg.insitu.good_flags))
    daily = daily_means(ins.observations)
    located, _ = locate_stations(daily[["station_id", "network", "lon", "lat"]], grid)
    if located.empty:
        raise InputError(f"{insitu}: no station inside grid {grid.name}; nothing to sample from Earth Engine")
    client = client if client is not None else EEClient.connect(cfg.earthengine)
    px, ee_report = _pixels(client, cfg, grid, located, daily)
    log.info("matchups --source ee: %(pixel_rows)d pixel rows from %(points_sampled)d sampled points of "
             "%(stations)d stations", ee_report)
    pixels = spark.createDataFrame(px, pixel_schema(grid))
    n, report, cov = write_station_matchups(spark, cfg, pixels, daily, grid, output, params, "scene dates")
    summary = {"insitu": ins.report, "earthengine": ee_report, "matchups": report, "rows": n, "output": str(output),
               "seconds": round(time.perf_counter() - t0, 1)}
    if cov is not None:  # station cells with too few scene dates: no change-detection features
        summary["change_detection"] = cov
    log.info("matchups --source ee: %d rows from %d stations -> %s", n, report["stations_located"], output)
    return summary
