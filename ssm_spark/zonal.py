"""``ssm-spark zonal``: statistics of a product's SSM per zone (districts, catchments) and date, on Sedona.

::

    zones (GeoJSON, GeoPackage or GeoParquet; any CRS)  -- Sedona's readers, on the driver's side
      -> the zone polygons transformed once to the grid's CRS (pyproj, on the driver: a few
         thousand polygons)
      -> a Sedona spatial join of the product's cell centres (``ST_Point`` from row/col, in the grid
         CRS, exactly the centres of :meth:`Grid.cell_to_xy`) with the zones: ``ST_Contains``,
         zones broadcast (Sedona's broadcast index join: an STR-tree of the zones on every executor,
         the cells never shuffled)
      -> per (zone, date): counts, mean, exact percentiles (Spark SQL)
      -> GeoParquet (with the zone geometry, in the zones' own CRS) + CSV (no geometry)

A cell belongs to a zone when its centre is inside the zone (``ST_Contains``: a centre exactly on
the boundary belongs to neither side, so neighbouring zones never share a cell). Per zone and date,
over the product's cells in the zone that date (the region's cells with an acquisition; cells
outside the product count nowhere):

- ``n_cells``: product cells; ``n_land``: those without the ``MASKED_WATER`` bit in ``qc``;
  ``n_valid``: those with an ``ssm`` (not masked, estimated);
- ``frac_retrieved = n_valid / n_land``: the fraction of the zone's land cells retrieved (null
  when the zone has no land cell); urban, snow/ice, frozen and steep cells are land not retrieved;
- ``ssm_mean``; ``ssm_p10``, ``ssm_median``, ``ssm_p90``: exact percentiles of the valid ``ssm``
  (Spark's ``percentile``: linear interpolation between order statistics, numpy's default). Exact
  because a zone-date's values fit one executor (a 10,000 km2 district at 1 km is 10^4 values;
  at 100 m, 10^6 values, some 30 MB), and the result is then testable against numpy;
  ``approx=True`` (``--approx``) takes ``percentile_approx`` (rank error at most n/10,000) for
  zones too large for that.

A row is written per zone and date with at least one product cell; a zone with none on any date is
named in a warning. Zone attributes (the file's columns) are carried into the outputs; ``zone`` is
the ``--id`` column's value, or the feature's index in the file (from 0).

Why pyproj and not ``ST_Transform``: Sedona 1.8's ``ST_Transform`` (GeoTools) has no transform for
EPSG:6933 (EASE-Grid 2.0, "Lambert Cylindrical Equal Area"), and given the CRS as WKT it returns
coordinates 15 % off (measured: lon 2 deg -> x = 222,639 m against PROJ's 192,973 m). The zones are
few, so they are transformed once with PROJ (vertices; edges stay straight in the grid CRS).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.io import atomic_dir, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from pyproj import CRS
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

__all__ = ["Zones", "read_zones", "zones_on_grid", "zonal_stats", "write_zonal", "STAT_COLUMNS",
           "run"]

#: The statistics' columns, in order (after ``zone`` and the zone attributes).
STAT_COLUMNS = ("date", "n_cells", "n_land", "n_valid", "frac_retrieved", "ssm_mean", "ssm_p10", "ssm_median",
                "ssm_p90")
_FORMATS = {".geojson": "geojson", ".json": "geojson", ".gpkg": "geopackage", ".parquet": "geoparquet",
            ".geoparquet": "geoparquet"}
_WATER_BIT_DEFAULT = 8  # QC.MASKED_WATER, when product.json carries no qc_bits


@dataclass(frozen=True)
class Zones:
    """Zone polygons as read: ``frame`` has ``zone``, the attributes and ``wkb`` (in ``crs``)."""

    frame: pd.DataFrame
    crs: "CRS"
    source: str

    @property
    def attributes(self) -> list[str]:
        return [c for c in self.frame.columns if c not in ("zone", "wkb")]

    def label(self, i: int) -> str:
        """How messages name zone ``i``: its id, as Python writes it."""
        z = self.frame["zone"].iloc[int(i)]
        return repr(z.item() if isinstance(z, np.generic) else z)


# ------------------------------------------------------------------------------------ reading


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if path.is_dir():
        return "geoparquet"
    if suffix not in _FORMATS:
        raise InputError(f"zones {path}: unknown format {suffix or '(no suffix)'!r}; give GeoJSON (.geojson, .json), "
                         "GeoPackage (.gpkg) or GeoParquet (.parquet, .geoparquet, or a folder of them)")
    return _FORMATS[suffix]


def _gpkg_layer(path: Path, layer: str | None) -> tuple[str, "CRS"]:
    """The feature table and its CRS, from the GeoPackage's own tables (it is an SQLite file)."""
    from pyproj import CRS

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features'")]
            if layer is None and len(tables) != 1:
                raise InputError(f"zones {path}: {len(tables)} feature tables ({', '.join(tables) or 'none'}); "
                                 "name one with --layer")
            table = layer or tables[0]
            if table not in tables:
                raise InputError(f"zones {path}: no feature table {table!r} (tables: {', '.join(tables)})")
            org, code, wkt = con.execute(
                "SELECT s.organization, s.organization_coordsys_id, s.definition FROM gpkg_geometry_columns g "
                "JOIN gpkg_spatial_ref_sys s ON s.srs_id = g.srs_id WHERE g.table_name = ?", (table,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise InputError(f"zones {path}: not a readable GeoPackage ({exc})") from None
    except TypeError:
        raise InputError(f"zones {path}: table {table!r} has no geometry column with a spatial reference") from None
    if str(org).upper() == "EPSG" and int(code) > 0:
        return table, CRS.from_epsg(int(code))
    return table, CRS.from_user_input(wkt)


def _geoparquet_crs(path: Path) -> "CRS":
    """The primary geometry column's CRS from the GeoParquet ``geo`` metadata (absent: OGC:CRS84)."""
    import pyarrow.parquet as pq
    from pyproj import CRS

    first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
    if first is None:
        raise InputError(f"zones {path}: no .parquet file in the folder")
    meta = (pq.read_schema(first).metadata or {}).get(b"geo")
    if meta is None:
        raise InputError(f"zones {first}: Parquet without GeoParquet 'geo' metadata: no geometry column is declared")
    geo = json.loads(meta)
    col = geo.get("columns", {}).get(geo.get("primary_column"), {})
    if "crs" not in col:
        return CRS.from_user_input("OGC:CRS84")
    if col["crs"] is None:
        raise InputError(f"zones {first}: the GeoParquet CRS is null (undefined): set it in the file")
    return CRS.from_json_dict(col["crs"]) if isinstance(col["crs"], dict) else CRS.from_user_input(col["crs"])


def read_zones(spark: "SparkSession", path: os.PathLike | str, layer: str | None = None,
               id_column: str | None = None) -> Zones:
    """Read zone polygons with Sedona's GeoJSON, GeoPackage or GeoParquet reader.

    The CRS: GeoJSON is lon/lat (RFC 7946; a legacy ``crs`` member is honoured); a GeoPackage's from
    its ``gpkg_spatial_ref_sys``; a GeoParquet's from its ``geo`` metadata.

    Raises
    ------
    InputError
        A missing file, an unknown format, no features, a non-polygon geometry, a missing or
        non-unique ``id_column``.
    """
    from pyproj import CRS

    path = Path(path)
    if not path.exists():
        raise InputError(f"zones {path}: no such file")
    fmt = _format(path)
    if layer is not None and fmt != "geopackage":
        raise InputError(f"zones {path}: --layer {layer!r} names a GeoPackage table, and this is {fmt}")
    if fmt == "geojson":
        raw = spark.read.format("geojson").option("multiLine", "true").load(str(path))
        if "features" not in raw.columns:
            raise InputError(f"zones {path}: not a GeoJSON FeatureCollection (columns: {', '.join(raw.columns)})")
        crs_name = None
        if "crs" in raw.columns:
            crs_name = raw.selectExpr("crs.properties.name AS n").first()["n"]
        crs = CRS.from_user_input(crs_name or "OGC:CRS84")
        feats = raw.selectExpr("explode(features) AS f")
        props = ["f.properties.*"] if "properties" in feats.schema["f"].dataType.names else []
        df = feats.selectExpr(*props, "f.geometry AS __geom")
    elif fmt == "geopackage":
        table, crs = _gpkg_layer(path, layer)
        df = spark.read.format("geopackage").option("tableName", table).load(str(path))
    else:
        crs = _geoparquet_crs(path)
        df = spark.read.format("geoparquet").load(str(path))
    geoms = [f.name for f in df.schema.fields if f.dataType.typeName() == "geometrytype"]
    if not geoms:
        raise InputError(f"zones {path}: no geometry column (columns: {', '.join(df.columns)})")
    atomic = ("string", "integer", "long", "short", "byte", "double", "float", "boolean", "date", "decimal")
    attrs = [f.name for f in df.schema.fields if f.name not in geoms and f.dataType.typeName() in atomic]
    dropped = [f.name for f in df.schema.fields if f.name not in geoms and f.name not in attrs]
    if dropped:
        log.warning("zones %s: columns %s are not plain values and are not carried to the outputs", path, dropped)
    if id_column is not None and id_column not in attrs:
        raise InputError(f"zones {path}: no column {id_column!r} for --id (columns: {', '.join(attrs)})")
    reserved = {*STAT_COLUMNS, "zone", "zone_idx", "wkb", "geometry"}
    names = {a: (f"zone_{a}" if a in reserved and a != id_column else a) for a in attrs}
    if any(a != n for a, n in names.items()):
        log.warning("zones %s: attribute columns %s renamed zone_<name> (they are output columns)", path,
                    [a for a, n in names.items() if a != n])
    frame = df.selectExpr(*[f"`{a}` AS `{names[a]}`" for a in attrs], f"ST_AsBinary(`{geoms[0]}`) AS wkb").toPandas()
    if frame.empty:
        raise InputError(f"zones {path}: no features")
    frame["wkb"] = frame["wkb"].map(lambda b: None if b is None else bytes(b))
    if id_column is not None:
        ids = frame.pop(id_column)
        if ids.isna().any() or ids.duplicated().any():
            dup = ids[ids.duplicated() | ids.isna()].tolist()[:5]
            raise InputError(f"zones {path}: --id {id_column!r} is not a unique, non-null key (e.g. {dup})")
        frame.insert(0, "zone", ids)
    else:
        frame.insert(0, "zone", np.arange(len(frame), dtype="i8"))
    return Zones(frame=frame.reset_index(drop=True), crs=crs, source=str(path))


def zones_on_grid(zones: Zones, grid: Grid) -> np.ndarray:
    """The zone polygons in the grid's CRS (shapely array, one per zone), transformed once with PROJ.

    Invalid polygons are repaired (``make_valid``, with a warning).

    Raises
    ------
    InputError
        A zone that is not a polygon or multipolygon, or that does not transform (outside the
        grid CRS's domain).
    """
    import shapely
    from pyproj import Transformer

    geoms = shapely.from_wkb(zones.frame["wkb"].to_numpy())
    kinds = shapely.get_type_id(geoms)
    bad = np.flatnonzero(~np.isin(kinds, [3, 6]))  # Polygon, MultiPolygon
    if bad.size:
        i = int(bad[0])
        raise InputError(f"zones {zones.source}: zone {zones.label(i)} is a "
                         f"{geoms[i].geom_type if geoms[i] is not None else 'missing geometry'}, not a Polygon or MultiPolygon "
                         f"({bad.size} such zone(s))")
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.warning("zones %s: %d invalid polygon(s) repaired with make_valid (e.g. zone %s: %s)", zones.source,
                    int(invalid.sum()), zones.label(np.flatnonzero(invalid)[0]),
                    shapely.is_valid_reason(geoms[invalid][0]))
        geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    t = Transformer.from_crs(zones.crs, grid.crs, always_xy=True)
    out = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    broken = np.flatnonzero([not np.isfinite(shapely.get_coordinates(g)).all() for g in out])
    if broken.size:
        raise InputError(f"zones {zones.source}: zone {zones.label(broken[0])} does not "
                         f"transform from {zones.crs.to_string()} to the grid CRS {grid.crs} (outside its domain)")
    return out


# ------------------------------------------------------------------------------------ the join


def _product(product: Path) -> tuple[Grid, int]:
    p = product / "product.json"
    try:
        info = json.loads(p.read_text())
        g = info["grid"]
        grid = Grid(**{k: g[k] for k in ("name", "crs", "x0", "y0", "cell", "n_rows", "n_cols", "tile_size")})
    except FileNotFoundError:
        raise InputError(f"{p} not found: {product} is not a product folder (made by ssm-spark produce)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: no readable grid ({exc!r})") from None
    return grid, int((info.get("qc_bits") or {}).get("MASKED_WATER", _WATER_BIT_DEFAULT))


def zonal_stats(spark: "SparkSession", product: os.PathLike | str, zones: Zones, dates: Sequence[str] | None = None,
                approx: bool = False) -> "DataFrame":
    """Per (zone, date) statistics of a product's SSM (columns ``zone_idx`` + :data:`STAT_COLUMNS`).

    ``zone_idx`` is the zone's row in ``zones.frame``. See the module docstring for the definitions.

    Raises
    ------
    InputError
        If ``product`` is not a product folder, or has no Parquet rows.
    """
    from pyspark.sql import functions as F

    product = Path(product)
    grid, water = _product(product)
    polys = zones_on_grid(zones, grid)
    import shapely

    zdf = spark.createDataFrame(pd.DataFrame({"zone_idx": np.arange(len(polys), dtype="i8"),
                                              "zwkb": [bytes(b) for b in shapely.to_wkb(polys)]}))
    zdf = zdf.selectExpr("zone_idx", "ST_GeomFromWKB(zwkb) AS zgeom")
    if not (product / "parquet").is_dir():
        raise InputError(f"{product}/parquet not found: the product has no committed date")
    cells = spark.read.parquet(str(product / "parquet")).select("date", "row", "col", "ssm", "qc")
    if dates:
        cells = cells.where(F.col("date").isin([str(d) for d in dates]))
    cells = cells.selectExpr("CAST(date AS STRING) AS date", "ssm", "qc",
                             f"ST_Point({grid.x0!r} + (col + 0.5) * {grid.cell!r}, "
                             f"{grid.y0!r} - (row + 0.5) * {grid.cell!r}) AS pt")
    joined = cells.join(F.broadcast(zdf), F.expr("ST_Contains(zgeom, pt)"))
    q = "array(0.1, 0.5, 0.9)"
    pct = f"percentile_approx(ssm, {q}, 10000)" if approx else f"percentile(ssm, {q})"
    stats = joined.groupBy("zone_idx", "date").agg(
        F.count(F.lit(1)).alias("n_cells"),
        F.sum(F.when((F.col("qc").bitwiseAND(water)) == 0, 1).otherwise(0)).alias("n_land"),
        F.count("ssm").alias("n_valid"), F.avg("ssm").alias("ssm_mean"), F.expr(pct).alias("q"))
    return stats.selectExpr(
        "zone_idx", "date", "CAST(n_cells AS INT) AS n_cells", "CAST(n_land AS INT) AS n_land",
        "CAST(n_valid AS INT) AS n_valid", "IF(n_land > 0, n_valid / n_land, NULL) AS frac_retrieved", "ssm_mean",
        "q[0] AS ssm_p10", "q[1] AS ssm_median", "q[2] AS ssm_p90")


def write_zonal(spark: "SparkSession", stats: pd.DataFrame, zones: Zones, prefix: os.PathLike | str) -> dict:
    """``PREFIX.parquet`` (GeoParquet folder, zone geometry in the zones' CRS) and ``PREFIX.csv``.

    ``stats``: :func:`zonal_stats` collected (pandas). Both are written whole or not at all.
    """
    prefix = Path(prefix)
    table = zones.frame.merge(stats, left_index=True, right_on="zone_idx", how="inner").drop(columns="zone_idx")
    table = table.sort_values(["zone", "date"], kind="mergesort").reset_index(drop=True)
    cols = ["zone", *zones.attributes, *STAT_COLUMNS]
    csv, gpq = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".parquet")
    with atomic_path(csv) as tmp:
        table[cols].to_csv(tmp, index=False)  # floats as Python writes them: they read back exactly
    sdf = spark.createDataFrame(table[cols + ["wkb"]]).selectExpr(*[f"`{c}`" for c in cols],
                                                                    "ST_GeomFromWKB(wkb) AS geometry")
    with atomic_dir(gpq) as tmp:
        sdf.coalesce(1).write.format("geoparquet").option("geoparquet.crs", zones.crs.to_json()).save(str(tmp))
    return {"csv": str(csv), "geoparquet": str(gpq), "rows": len(table)}


# ------------------------------------------------------------------------------------ the command


def run(args: argparse.Namespace, cfg) -> int:
    """``ssm-spark zonal``: read, join, aggregate, write; prints a JSON summary."""
    from ssm_spark.spark import session

    t0 = time.perf_counter()
    zones_path = Path(os.path.abspath(args.zones))
    prefix = Path(args.output) if args.output else Path(args.product) / "zonal" / zones_path.name.split(".")[0]
    spark = session(cfg.spark)
    zones = read_zones(spark, zones_path, args.layer, args.id_column)
    dates = [d.isoformat() for d in args.dates] if args.dates else None  # parsed by cli.iso_dates
    stats = zonal_stats(spark, args.product, zones, dates, approx=args.approx).toPandas()
    empty = sorted(set(range(len(zones.frame))) - set(stats["zone_idx"]))
    if empty:
        log.warning("zonal: %d of %d zones hold no product cell on any date (outside the region?): %s", len(empty),
                    len(zones.frame), ", ".join(zones.label(i) for i in empty[:10]))
    out = write_zonal(spark, stats, zones, prefix)
    print(json.dumps({"zones": len(zones.frame), "zones_without_cells": len(empty),
                      "dates": int(stats["date"].nunique()), **out,
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    return 0
