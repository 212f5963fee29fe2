"""zonal: statistics per zone and date by a Sedona broadcast spatial join, known answers.

A small product (2 x 2 tiles of 36 EASE-Grid 1 km cells, two dates, water and urban cells masked,
cells without acquisition on the second date) is written in the product's layout. Tiles of 36 cells
are exactly the cells of EASE-Grid 2.0 36 km, so zones built from whole tiles must give the block
means of the grid's own aggregation (:func:`ssm_spark.product.aggregate.aggregate_rows` and
:meth:`Grid.aggregate`), whatever the zones' file format and CRS.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import box, mapping

from ssm_spark import zonal as Z
from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.io import write_json_atomic
from ssm_spark.product.aggregate import aggregate_rows, resolve_targets
from ssm_spark.product.schema import PRODUCT_FILE, arrow_table

pytestmark = pytest.mark.spark

GRID = Grid.ease2(1, tile_size=36)
TR, TC = (int(v) for v in GRID.tile_of(*GRID.to_cell(2.0, 44.0)))
TILES = [(TR, TC), (TR, TC + 1), (TR + 1, TC), (TR + 1, TC + 1)]
DATES = ["2024-04-01", "2024-04-07"]
WATER, URBAN = 8, 16


def _rows(date: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for tr, tc in TILES:
        w = GRID.tile_window(tr, tc)
        r, c = np.meshgrid(np.arange(w.row_off, w.row_off + 36), np.arange(w.col_off, w.col_off + 36), indexing="ij")
        r, c = r.ravel(), c.ravel()
        lon, lat = GRID.to_lonlat(r, c)
        qc = rng.choice([0, 0, 0, 0, 1, WATER, URBAN], r.size).astype("i4")
        # float32 values (the product files hold float32: schema.ESTIMATES), so the reference sees the same
        ssm = np.where(qc & (WATER | URBAN), np.nan, rng.uniform(0.05, 0.45, r.size)).astype("f4").astype("f8")
        df = pd.DataFrame({"grid": GRID.name, "tile_row": tr, "tile_col": tc, "row": r, "col": c, "lon": lon,
                           "lat": lat, "ssm": ssm, "ssm_p05": ssm - 0.05, "ssm_p95": ssm + 0.05, "env": "e",
                           "model_id": "x", "qc": qc})
        if date == DATES[1]:
            df = df.sample(frac=0.7, random_state=seed)  # cells without acquisition that date
        frames.append(df.sort_values(["row", "col"]))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> tuple[Path, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("zonal") / "product"
    rows = {}
    for i, date in enumerate(DATES):
        rows[date] = _rows(date, 10 + i)
        for (tr, tc), g in rows[date].groupby(["tile_row", "tile_col"]):
            path = out / "parquet" / f"date={date}" / f"{GRID.name}_{tr}_{tc}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(arrow_table(g, PRODUCT_FILE, {"manifest_id": "m1"}), path)
    write_json_atomic(out / "product.json", {"grid": GRID.describe(), "qc_bits": {"MASKED_WATER": WATER},
                                             "dates": DATES})
    return out, rows


def _expected(rows: pd.DataFrame, tiles) -> dict:
    g = rows[rows.set_index(["tile_row", "tile_col"]).index.isin(tiles)]
    v = g["ssm"].dropna().to_numpy()
    land = int(((g["qc"] & WATER) == 0).sum())
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"n_cells": len(g), "n_land": land, "n_valid": v.size, "frac_retrieved": v.size / land,
            "ssm_mean": v.mean(), "ssm_p10": p10, "ssm_median": p50, "ssm_p90": p90}


def _write_gpkg(path: Path, table: str, geoms, names, epsg: int) -> None:
    """A minimal GeoPackage (OGC 12-128r18: the three gpkg_ tables + a feature table of GP blobs)."""
    con = sqlite3.connect(path)
    con.executescript(f"""
        PRAGMA application_id = 1196444487;
        CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT
          NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
        CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT,
          description TEXT DEFAULT '', last_change DATETIME, min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
          srs_id INTEGER);
        CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name
          TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL);
        CREATE TABLE {table} (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom GEOMETRY, name TEXT);""")
    con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, '')",
                (f"EPSG:{epsg}", epsg, epsg, CRS.from_epsg(epsg).to_wkt("WKT1_GDAL")))
    con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) VALUES (?, 'features', ?, ?)",
                (table, table, epsg))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'GEOMETRY', ?, 0, 0)", (table, epsg))
    for g, n in zip(geoms, names):
        blob = b"GP" + bytes([0, 1]) + struct.pack("<i", epsg) + shapely.to_wkb(g, byte_order=1)
        con.execute(f"INSERT INTO {table} (geom, name) VALUES (?, ?)", (blob, n))
    con.commit()
    con.close()


def _by_zone(stats: pd.DataFrame, zones: Z.Zones, date: str) -> dict:
    s = stats[stats["date"] == date].merge(zones.frame[["zone"]], left_on="zone_idx", right_index=True)
    return {z: row for z, row in zip(s["zone"], s.to_dict("records"))}


def _check(got: dict, want: dict) -> None:
    for k in ("n_cells", "n_land", "n_valid"):
        assert got[k] == want[k], k
    for k in ("frac_retrieved", "ssm_mean", "ssm_p10", "ssm_median", "ssm_p90"):
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-12, err_msg=k)


def test_whole_tile_zones_give_the_grids_block_means(spark, product, tmp_path: Path, caplog):
    out, rows = product
    # GeoJSON (lon/lat): one tile, two tiles, and a zone far from the product
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "A", "date": "x"}, "geometry": mapping(GRID.tile_polygon(TR, TC))},
        {"type": "Feature", "properties": {"name": "B", "date": "y"},
         "geometry": mapping(shapely.union_all([GRID.tile_polygon(TR, TC + 1), GRID.tile_polygon(TR + 1, TC + 1)]))},
        {"type": "Feature", "properties": {"name": "far", "date": "z"}, "geometry": mapping(box(-60, -10, -59, -9))}]}
    (tmp_path / "z.geojson").write_text(json.dumps(fc))
    with caplog.at_level(logging.WARNING, logger="ssm_spark.zonal"):
        zones = Z.read_zones(spark, tmp_path / "z.geojson", id_column="name")
    assert "renamed zone_<name>" in caplog.text and list(zones.frame.columns) == ["zone", "zone_date", "wkb"]
    assert zones.crs == CRS.from_user_input("OGC:CRS84")
    sdf = Z.zonal_stats(spark, out, zones)
    assert "BroadcastIndexJoin" in sdf._jdf.queryExecution().executedPlan().toString()
    stats = sdf.toPandas()
    assert len(stats) == 4  # A and B on two dates; 'far' holds no cell
    for date in DATES:
        got = _by_zone(stats, zones, date)
        _check(got["A"], _expected(rows[date], [(TR, TC)]))
        _check(got["B"], _expected(rows[date], [(TR, TC + 1), (TR + 1, TC + 1)]))

    # GeoParquet in EPSG:3035 (written by Sedona), one zone per tile: the 36 km block means
    t = Transformer.from_crs(4326, 3035, always_xy=True)
    polys = [shapely.transform(GRID.tile_polygon(tr, tc, densify=64), lambda xy: np.column_stack(
        t.transform(xy[:, 0], xy[:, 1]))) for tr, tc in TILES]
    pdf = pd.DataFrame({"tile": [f"{tr}_{tc}" for tr, tc in TILES], "wkb": [bytes(b) for b in shapely.to_wkb(polys)]})
    spark.createDataFrame(pdf).selectExpr("tile", "ST_GeomFromWKB(wkb) AS geometry").write.format("geoparquet") \
        .option("geoparquet.crs", CRS.from_epsg(3035).to_json()).save(str(tmp_path / "tiles.parquet"))
    tz = Z.read_zones(spark, tmp_path / "tiles.parquet", id_column="tile")
    assert tz.crs.to_epsg() == 3035
    tstats = Z.zonal_stats(spark, out, tz).toPandas()
    target = resolve_targets(["ease2_36km"], GRID, 0.0)[0]
    coarse = Grid.ease2(36)
    for date in DATES:
        agg = aggregate_rows(rows[date], target).set_index(["row", "col"])
        got = _by_zone(tstats, tz, date)
        assert len(agg) == len(got) == 4
        for tr, tc in TILES:
            g, a = got[f"{tr}_{tc}"], agg.loc[(tr, tc)]  # tile (tr, tc) of 36 cells = 36 km cell (tr, tc)
            assert (g["n_cells"], g["n_valid"]) == (a["n_cells"], a["n_valid"])
            np.testing.assert_allclose(g["ssm_mean"], a["ssm"], rtol=0, atol=1e-12)
            _check(g, _expected(rows[date], [(tr, tc)]))
        # and Grid.aggregate on the rasterised date: same block means and counts
        w0 = GRID.tile_window(TR, TC)
        ras = np.full((72, 72), np.nan)
        d = rows[date]
        ras[d["row"] - w0.row_off, d["col"] - w0.col_off] = d["ssm"]
        from rasterio.windows import Window

        mean, count, cw = GRID.aggregate(ras, Window(w0.col_off, w0.row_off, 72, 72), coarse)
        assert (cw.row_off, cw.col_off) == (TR, TC)
        for tr, tc in TILES:
            g = got[f"{tr}_{tc}"]
            assert g["n_valid"] == count[tr - TR, tc - TC]
            np.testing.assert_allclose(g["ssm_mean"], mean[tr - TR, tc - TC], rtol=0, atol=1e-12)

    # GeoPackage in lon/lat (Sedona's reader; CRS from gpkg_spatial_ref_sys): half a tile
    left, bottom, right, top = GRID.tile_bounds(TR + 1, TC)
    (lon0, lon1), (lat0, lat1) = GRID.to_lonlat_xy([left, (left + right) / 2], [bottom, top])
    half = box(lon0, lat0, lon1, lat1)  # a grid-CRS box is a lon/lat box on a cylindrical grid
    _write_gpkg(tmp_path / "z.gpkg", "districts", [half, box(-60, -10, -59, -9)], ["west half", "far"], 4326)
    gz = Z.read_zones(spark, tmp_path / "z.gpkg")
    g = _by_zone(Z.zonal_stats(spark, out, gz, dates=[DATES[0]]).toPandas(), gz, DATES[0])[0]
    d = rows[DATES[0]]
    w = GRID.tile_window(TR + 1, TC)
    west = d[(d["tile_row"] == TR + 1) & (d["tile_col"] == TC) & (d["col"] < w.col_off + 18)]
    assert g["n_cells"] == len(west) == 36 * 18
    np.testing.assert_allclose(g["ssm_mean"], west["ssm"].mean(), rtol=0, atol=1e-12)
    # approximate percentiles: within a rank of n / 10000 (here: the exact values)
    a = _by_zone(Z.zonal_stats(spark, out, gz, dates=[DATES[0]], approx=True).toPandas(), gz, DATES[0])[0]
    assert np.min(np.abs(west["ssm"].dropna().to_numpy() - a["ssm_median"])) == 0


def test_zonal_command_writes_geoparquet_and_csv(spark, product, tmp_path: Path, capsys):
    from ssm_spark.cli import main

    out, rows = product
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": 7}, "geometry": mapping(GRID.tile_polygon(TR, TC))},
        {"type": "Feature", "properties": {"code": 8}, "geometry": mapping(box(-60, -10, -59, -9))}]}
    (tmp_path / "d.geojson").write_text(json.dumps(fc))
    assert main(["zonal", "--product", str(out), "--zones", str(tmp_path / "d.geojson"), "--id", "code",
                 "--output", str(tmp_path / "res" / "districts"), "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["zones"], summary["zones_without_cells"], summary["rows"]) == (2, 1, 2)
    csv = pd.read_csv(tmp_path / "res" / "districts.csv")
    assert list(csv.columns) == ["zone", *Z.STAT_COLUMNS] and list(csv["date"]) == DATES
    _check(csv.iloc[0].to_dict(), _expected(rows[DATES[0]], [(TR, TC)]))
    gp = spark.read.format("geoparquet").load(str(tmp_path / "res" / "districts.parquet"))
    back = gp.selectExpr("zone", "date", "ssm_mean", "ST_AsBinary(geometry) AS wkb").toPandas()
    assert list(back["zone"]) == [7, 7]
    assert shapely.from_wkb(bytes(back["wkb"][0])).equals(GRID.tile_polygon(TR, TC))
    np.testing.assert_allclose(back["ssm_mean"], csv["ssm_mean"], rtol=1e-9)
    geo = json.loads(pq.read_schema(next((tmp_path / "res" / "districts.parquet").glob("*.parquet"))).metadata[b"geo"])
    assert CRS.from_json_dict(geo["columns"]["geometry"]["crs"]) == CRS.from_user_input("OGC:CRS84")
    assert not [p for p in (tmp_path / "res").iterdir() if p.name.startswith(".")]


def test_zones_refused_with_the_reason(spark, product, tmp_path: Path):
    out, _ = product
    with pytest.raises(InputError, match="no such file"):
        Z.read_zones(spark, tmp_path / "nothere.geojson")
    (tmp_path / "z.shp").write_text("")
    with pytest.raises(InputError, match=r"unknown format '.shp'.*GeoJSON"):
        Z.read_zones(spark, tmp_path / "z.shp")
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Point", "coordinates": [2, 44]}},
        {"type": "Feature", "properties": {"name": "a"}, "geometry": mapping(box(2, 44, 3, 45))}]}
    (tmp_path / "p.geojson").write_text(json.dumps(fc))
    with pytest.raises(InputError, match="--layer 'x' names a GeoPackage table, and this is geojson"):
        Z.read_zones(spark, tmp_path / "p.geojson", layer="x")
    with pytest.raises(InputError, match="no column 'code' for --id"):
        Z.read_zones(spark, tmp_path / "p.geojson", id_column="code")
    with pytest.raises(InputError, match="--id 'name' is not a unique"):
        Z.read_zones(spark, tmp_path / "p.geojson", id_column="name")
    with pytest.raises(InputError, match="zone 0 is a Point, not a Polygon"):
        Z.zonal_stats(spark, out, Z.read_zones(spark, tmp_path / "p.geojson"))
    with pytest.raises(InputError, match="product.json not found"):
        Z.zonal_stats(spark, tmp_path, Z.read_zones(spark, tmp_path / "p.geojson"))
