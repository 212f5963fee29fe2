"""Matchups: in-situ stations x grid cells x acquisition dates.

A station is matched to the grid cell that contains it (exact cell arithmetic with pyproj, see
:mod:`ssm_spark.grid`). Optionally, where that cell has no usable pixel on a date (masked class,
no acquisition), the nearest cell with one within ``tolerance_m`` is taken instead, using Sedona's
``ST_DistanceSphere`` between the station and the candidate cell centres in lon/lat. In time, a
pixel on date d is matched with the station's daily in-situ means within ``window_days`` of d
(0 = the same day), averaged.

Output: one row per station and acquisition date, with the columns of the matchup table (docs/contracts.md, Tables)
(``station_id, network, lon, lat, date``, the feature columns, ``ssm``, ``env``) followed by
``row, col, distance_m, insitu_days``. Stations that match nothing are reported with the reason.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ssm_spark.grid import Grid

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_PIXEL_ADDRESS = ("grid", "tile_row", "tile_col", "row", "col", "lon", "lat", "date")


def locate_stations(stations: pd.DataFrame, grid: Grid) -> tuple[pd.DataFrame, list[dict]]:
    """Cells of stations (driver side): adds ``row``, ``col``; stations outside the grid are returned
    as rejections ``{"station_id", "reason"}``."""
    st = stations.drop_duplicates("station_id").reset_index(drop=True).copy()
    rows, cols = grid.to_cell(st["lon"].to_numpy(float), st["lat"].to_numpy(float), strict=False)
    st["row"], st["col"] = np.atleast_1d(rows).astype("int32"), np.atleast_1d(cols).astype("int32")
    outside = st["row"] < 0
    rejected = [{"station_id": s, "reason": f"outside grid {grid.name}"} for s in st.loc[outside, "station_id"]]
    return st[~outside].reset_index(drop=True), rejected


def candidate_cells(stations: pd.DataFrame, grid: Grid, tolerance_m: float = 0.0) -> list[tuple]:
    """Cells each located station may match: its own cell, and the ring of cells within ``tolerance_m``.

    Returns ``(station_id, network, lon, lat, row, col, own)`` tuples; also what the stack reader is
    told to explode, so a matchup run reads only the cells near stations.
    """
    if tolerance_m > 0:
        cell_m = grid.cell if not grid.is_geographic else grid.cell * 111_320.0
        k = int(math.ceil(tolerance_m / cell_m))
    else:
        k = 0
    out = []
    for s in stations.itertuples(index=False):
        for dr in range(-k, k + 1):
            for dc in range(-k, k + 1):
                r, c = int(s.row + dr), int(s.col + dc)
                if 0 <= r < grid.n_rows and 0 <= c < grid.n_cols:
                    out.append((s.station_id, s.network, float(s.lon), float(s.lat), r, c, dr == 0 and dc == 0))
    return out


def build_matchups(spark: "SparkSession", pixels: "DataFrame", insitu_daily: pd.DataFrame, grid: Grid, *,
                   window_days: int = 0, tolerance_m: float = 0.0, usable_qc_mask: int = 0) -> tuple["DataFrame", dict]:
    """Match daily in-situ means to pixels.

    Parameters
    ----------
    pixels : DataFrame
        The pixel table (:func:`ssm_spark.sources.stacks.read_pixels`, optionally with features).
    insitu_daily : pandas.DataFrame
        ``station_id, network, lon, lat, date, ssm`` (daily means, m3/m3).
    grid : Grid
    window_days : int
        In-situ days within this many days of the acquisition are averaged (0: same day only).
    tolerance_m : float
        0: the station's own cell only. > 0: the nearest usable cell within this distance where the
        own cell has no usable pixel on that date.
    usable_qc_mask : int
        Pixels with any of these QC bits set are not usable for the nearest-cell search (e.g. the
        mask bits); the own cell is always kept, with its QC, so nothing is dropped silently.

    Returns
    -------
    matchups : DataFrame
    report : dict
        Stations in, located, rejected (with reasons), matched.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window as W

    need = {"station_id", "network", "lon", "lat", "date", "ssm"}
    missing = need - set(insitu_daily.columns)
    if missing:
        from ssm_spark.errors import InputError

        raise InputError(f"in-situ table lacks column(s) {sorted(missing)}")
    stations, rejected = locate_stations(insitu_daily[["station_id", "network", "lon", "lat"]], grid)
    cand = candidate_cells(stations, grid, tolerance_m)
    cand_df = spark.createDataFrame(cand, "station_id string, network string, s_lon double, s_lat double, "
                                          "row int, col int, own boolean")
    px = pixels.withColumnRenamed("lon", "p_lon").withColumnRenamed("lat", "p_lat")
    joined = cand_df.join(px, on=["row", "col"], how="inner").withColumn(
        "distance_m", F.expr("ST_DistanceSphere(ST_Point(s_lon, s_lat), ST_Point(p_lon, p_lat))"))
    usable = (F.col("qc").bitwiseAND(F.lit(usable_qc_mask)) == 0) if usable_qc_mask and "qc" in px.columns else F.lit(True)
    joined = joined.where(F.col("own") | (usable & (F.col("distance_m") <= F.lit(tolerance_m))))
    # own cell first when it is usable; otherwise the nearest usable one; otherwise the own cell anyway
    rank_key = F.when(F.col("own") & usable, F.lit(0)).when(usable, F.lit(1)).otherwise(F.lit(2))
    best = W.partitionBy("station_id", "date").orderBy(rank_key, F.col("distance_m"))
    chosen = joined.withColumn("_rk", F.row_number().over(best)).where("_rk = 1").drop("_rk", "own")

    ins = spark.createDataFrame(insitu_daily[["station_id", "date", "ssm"]].assign(
        date=pd.to_datetime(insitu_daily["date"]).dt.date)).withColumnRenamed("date", "i_date")
    cond = (F.col("m.station_id") == F.col("i.station_id")) & (F.abs(F.datediff(F.col("m.date"), F.col("i.i_date"))) <= window_days)
    m = chosen.alias("m").join(ins.alias("i"), cond, "inner")
    keys = [c for c in chosen.columns]
    agg = m.groupBy(*[F.col(f"m.{c}") for c in keys]).agg(F.avg("i.ssm").alias("ssm"), F.count("i.ssm").alias("insitu_days"))
    feature_cols = [c for c in pixels.columns if c not in _PIXEL_ADDRESS and c not in ("env",)]
    out = agg.select(
        "station_id", "network", F.col("s_lon").alias("lon"), F.col("s_lat").alias("lat"), "date",
        *feature_cols, "ssm", "env", "row", "col", "distance_m", "insitu_days")
    report = {"stations_in": int(insitu_daily["station_id"].nunique()), "stations_located": len(stations),
              "stations_rejected": rejected, "window_days": window_days, "tolerance_m": tolerance_m}
    return out, report



def climatology_coverage(table, min_dates: int) -> dict:
    """A matchup file's rows and stations with fewer than ``min_dates`` climatology dates (``clim_n`` null or
    below), on the executors (:mod:`ssm_spark.remote_dataset`): the counts the local run takes from the
    written table."""
    import pyarrow.compute as pc

    short = table.filter(pc.or_kleene(pc.is_null(table["clim_n"]), pc.less(table["clim_n"], min_dates)))
    return {"rows_without_climatology": short.num_rows,
            "stations_without_climatology": sorted(set(short["station_id"].to_pylist()))}


def write_station_matchups(spark: "SparkSession", cfg, pixels: "DataFrame", daily: pd.DataFrame, grid: Grid,
                           output, params=None, dates_word: str = "stack dates") -> tuple[int, dict, dict | None]:
    """The common end of both matchup paths (stacks, Earth Engine): the station cells' pixels get
    their climatology (each cell's own dates, backscatter only) and the coupled physics features,
    are joined with the in-situ daily means, and the table is written atomically to ``output`` (a URL: staged
    on the store by the executors and published, :mod:`ssm_spark.remote_dataset`).

    Returns
    -------
    (rows, join report, change-detection coverage)
        The coverage counts the rows and stations with fewer than ``min_dates`` ``dates_word`` (no
        change-detection features, QC 4096; warned about when any); None without change detection.
    """
    from ssm_spark import storage
    from ssm_spark.environments import MASK_BITS
    from ssm_spark.parquet import write_parquet_atomic
    from ssm_spark.transforms import add_cell_climatology, add_coupled_features

    cdc = cfg.physics.change_detection
    if cdc.enabled:
        pixels = add_cell_climatology(pixels, cdc)
    pixels = add_coupled_features(pixels, params)
    m, report = build_matchups(spark, pixels, daily, grid, window_days=cfg.matchups.window_days,
                               tolerance_m=cfg.matchups.tolerance_m, usable_qc_mask=MASK_BITS)
    if storage.is_remote(output):  # staged on the store by the executors, published; counted by the tasks
        from functools import partial

        from ssm_spark.remote_dataset import write_dataset

        res = write_dataset(m, output, what="matchup table",
                            stats=partial(climatology_coverage, min_dates=int(cdc.min_dates)) if cdc.enabled else None)
        n = res["rows"]
        if not cdc.enabled:
            return n, report, None
        cov = {"min_dates": cdc.min_dates, "rows_without_climatology": res["stats"].get("rows_without_climatology", 0),
               "stations_without_climatology": len(res["stats"].get("stations_without_climatology", []))}
    else:
        write_parquet_atomic(m, output)
        written = spark.read.parquet(str(output))
        n = written.count()
        if not cdc.enabled:
            return n, report, None
        short = written.filter(f"clim_n IS NULL OR clim_n < {int(cdc.min_dates)}")
        cov = {"min_dates": cdc.min_dates, "rows_without_climatology": short.count(),
               "stations_without_climatology": short.select("station_id").distinct().count()}
    if cov["rows_without_climatology"]:
        log.warning("matchups: %d rows of %d stations have fewer than %d %s: no change-detection features "
                    "(QC 4096)", cov["rows_without_climatology"], cov["stations_without_climatology"],
                    cov["min_dates"], dates_word)
    return n, report, cov
