"""Stations x cells x dates: own cell, nearest usable cell within a tolerance, time windows."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ssm_spark.grid import Grid
from ssm_spark.matchups import build_matchups, locate_stations

GRID = Grid.ease2(1, tile_size=8)
R0, C0 = GRID.to_cell(2.5, 44.0)


def _pixels(spark, rows):
    pdf = pd.DataFrame(rows, columns=["row", "col", "date", "vv_db", "env", "qc"])
    lon, lat = GRID.to_lonlat(pdf["row"].to_numpy(), pdf["col"].to_numpy())
    pdf = pdf.assign(grid=GRID.name, tile_row=pdf.row // 8, tile_col=pdf.col // 8, lon=lon, lat=lat)
    return spark.createDataFrame(pdf[["grid", "tile_row", "tile_col", "row", "col", "lon", "lat", "date", "vv_db", "env", "qc"]])


def test_locate_stations_rejects_outside_grid():
    st = pd.DataFrame({"station_id": ["a", "b"], "network": ["N", "N"], "lon": [2.5, 0.0], "lat": [44.0, 89.0]})
    located, rejected = locate_stations(st, GRID)
    assert located["station_id"].tolist() == ["a"] and (located.row[0], located.col[0]) == (R0, C0)
    assert rejected == [{"station_id": "b", "reason": "outside grid ease2_1km"}]


@pytest.mark.spark
def test_matchups_own_cell_nearest_and_window(spark):
    d1, d2 = dt.date(2024, 5, 1), dt.date(2024, 5, 7)
    lon, lat = GRID.to_lonlat(R0, C0)
    pixels = _pixels(spark, [
        (R0, C0, d1, -10.0, "cropland_C", 0),       # own cell, usable
        (R0, C0, d2, -11.0, None, 8),               # own cell masked (water) on d2
        (R0, C0 + 1, d2, -12.0, "cropland_C", 0),   # east neighbour, ~1 km away, usable
        (R0 + 5, C0, d2, -13.0, "cropland_C", 0),   # 5 km away
    ])
    insitu = pd.DataFrame({"station_id": "N.s1", "network": "N", "lon": lon, "lat": lat,
                           "date": [d1, d2 - dt.timedelta(days=1), d2, d2 + dt.timedelta(days=1)],
                           "ssm": [0.20, 0.30, 0.31, 0.32]})
    exact, rep = build_matchups(spark, pixels, insitu, GRID)
    got = exact.orderBy("date").toPandas()
    assert list(got.columns[:5]) == ["station_id", "network", "lon", "lat", "date"]
    assert got["vv_db"].tolist() == [-10.0, -11.0] and got["ssm"].tolist() == pytest.approx([0.20, 0.31])
    assert got["distance_m"].max() < 1.0 and rep["stations_located"] == 1

    near, _ = build_matchups(spark, pixels, insitu, GRID, window_days=1, tolerance_m=2000, usable_qc_mask=8)
    got = near.orderBy("date").toPandas()
    assert got["vv_db"].tolist() == [-10.0, -12.0]  # d2 moves to the usable neighbour, not the 5 km cell
    assert got["ssm"].tolist() == pytest.approx([0.20, (0.30 + 0.31 + 0.32) / 3])
    assert got["insitu_days"].tolist() == [1, 3]
    # east-west spacing of EASE-Grid 2.0 1 km cells at 44 N: R cos(44) * cell / (a k0)
    # = 6371 km * 0.7193 * 1000.895 / (6378137 * 0.86675) = 830 m (cells are 0.83 x 1.2 km there)
    assert got["distance_m"][1] == pytest.approx(830, abs=10)
