"""The Spark session with Sedona: jars, settings, and Sedona's ST_ and RS_ functions for real."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from ssm_spark import jars
from ssm_spark.config import SparkConfig
from ssm_spark.errors import SparkSetupError
from ssm_spark.grid import Grid
from ssm_spark.spark import sedona_selfcheck, spark_conf

ROOT = Path(__file__).resolve().parents[1]


def test_versions_agree_with_the_pins():
    pins = dict(line.split("==") for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["apache-sedona"] == jars.SEDONA_VERSION
    assert ".".join(pins["pyspark"].split(".")[:2]) == jars.SPARK_COMPAT
    assert jars.GEOTOOLS_WRAPPER_VERSION.startswith(jars.SEDONA_VERSION.rsplit(".", 1)[0])
    import pyspark
    import sedona

    assert pyspark.__version__ == pins["pyspark"] and sedona.version == pins["apache-sedona"]


def test_spark_conf_has_sedona_kryo_arrow_and_jars():
    conf = spark_conf(SparkConfig())
    assert conf["spark.serializer"].endswith("KryoSerializer")
    assert conf["spark.kryo.registrator"] == "org.apache.sedona.core.serde.SedonaKryoRegistrator"
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    names = [Path(p).name for p in conf["spark.jars"].split(",")]
    assert names == [a.filename for a in jars.ARTIFACTS] + [p.name for p in jars.s3a_jars()]  # S3A: when fetched
    assert "-Djava.awt.headless=true" in conf["spark.executor.extraJavaOptions"]
    packages = spark_conf(SparkConfig(master=None, jars={"mode": "packages"}))
    assert "spark.master" not in packages and "spark.jars" not in packages
    assert packages["spark.jars.packages"] == (f"org.apache.sedona:sedona-spark-shaded-{jars.SPARK_COMPAT}_2.13:"
                                               f"{jars.SEDONA_VERSION},org.datasyslab:geotools-wrapper:{jars.GEOTOOLS_WRAPPER_VERSION}")
    user = spark_conf(SparkConfig(jars={"mode": "cluster"}, conf={"spark.sql.shuffle.partitions": "7"}))
    assert user["spark.sql.shuffle.partitions"] == "7" and "spark.jars" not in user


def test_missing_or_damaged_jars_say_how_to_fetch(tmp_path: Path):
    with pytest.raises(SparkSetupError, match=re.escape("python -m ssm_spark.jars fetch")):
        spark_conf(SparkConfig(jars={"mode": "local", "dir": str(tmp_path)}))
    for art in jars.ARTIFACTS:
        (tmp_path / art.filename).write_bytes(b"not a zip")
    with pytest.raises(SparkSetupError, match="not a readable jar"):
        jars.verify(tmp_path)


def test_installed_jars_verify():
    paths = jars.verify()
    assert [p.name for p in paths] == [a.filename for a in jars.ARTIFACTS]
    assert (paths[0].parent / "SHA256SUMS").exists()


def _write_tif(path: Path, grid: Grid, tr: int, tc: int, data: np.ndarray, names: list[str]) -> None:
    w = grid.tile_window(tr, tc)
    with rasterio.open(path, "w", driver="GTiff", width=w.width, height=w.height, count=data.shape[0],
                       dtype="float32", crs=grid.crs, transform=grid.tile_transform(tr, tc), nodata=np.nan) as dst:
        dst.write(data.astype("float32"))
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)


@pytest.mark.spark
def test_geotiff_round_trip_through_sedona(spark, tmp_path: Path):
    grid = Grid.geographic(0.01, tile_size=16)
    tr, tc = grid.tile_of(*grid.to_cell(12.5, 41.9))  # the tile holding Rome
    rng = np.random.default_rng(7)
    data = rng.normal(-12, 3, (2, 16, 16))
    data[0, 3, 5] = np.nan
    path = tmp_path / "stack.tif"
    _write_tif(path, grid, int(tr), int(tc), data, ["vv_db", "vh_db"])

    df = spark.read.format("binaryFile").load(str(path)).selectExpr("RS_FromGeoTiff(content) AS r")
    row = df.selectExpr(
        "RS_SRID(r) AS srid", "RS_Width(r) AS w", "RS_Height(r) AS h", "RS_NumBands(r) AS n",
        "RS_UpperLeftX(r) AS x0", "RS_UpperLeftY(r) AS y0", "RS_ScaleX(r) AS sx", "RS_ScaleY(r) AS sy",
        "RS_BandAsArray(r, 1) AS b1", "RS_BandAsArray(r, 2) AS b2", "RS_BandNoDataValue(r, 1) AS nodata").first()
    t = grid.tile_transform(int(tr), int(tc))
    assert (row.srid, row.w, row.h, row.n) == (4326, 16, 16, 2)
    assert (row.x0, row.y0) == pytest.approx((t.c, t.f), abs=1e-9)
    assert (row.sx, row.sy) == pytest.approx((t.a, t.e), abs=1e-12)
    got1 = np.array(row.b1, dtype="f8").reshape(16, 16)
    got2 = np.array(row.b2, dtype="f8").reshape(16, 16)
    np.testing.assert_array_equal(got2, data[1].astype("float32"))
    np.testing.assert_array_equal(np.isnan(got1), np.isnan(data[0]))
    np.testing.assert_array_equal(got1[~np.isnan(got1)], data[0].astype("float32")[~np.isnan(data[0])])
    assert row.nodata is None or np.isnan(row.nodata)
    # a value looked up by location through Sedona is the value rasterio wrote at that cell
    lon, lat = grid.to_lonlat(grid.tile_window(int(tr), int(tc)).row_off + 9, grid.tile_window(int(tr), int(tc)).col_off + 4)
    v = df.selectExpr(f"RS_Value(r, ST_Point({lon}, {lat}), 2) AS v").first().v
    assert v == pytest.approx(float(data[1, 9, 4].astype("float32")))


@pytest.mark.spark
def test_sedona_cannot_read_ease2_geotiffs_yet(spark, tmp_path: Path):
    """Pinned limitation: GeoTools 33 (in geotools-wrapper 1.8.0-33.1) has no transform for EPSG:6933's
    method (Lambert Cylindrical Equal Area), so RS_FromGeoTiff fails on EASE-Grid 2.0 GeoTIFFs and
    ST_Transform to EPSG:6933 is refused. Grid arithmetic therefore uses pyproj, and EASE-Grid 2.0
    rasters are read with rasterio on the executors. When this test fails, the jars can do it: switch
    the raster path to Sedona's reader."""
    grid = Grid.ease2(1, tile_size=8)
    path = tmp_path / "ease2.tif"
    _write_tif(path, grid, 800, 2000, np.zeros((1, 8, 8)), ["vv_db"])
    df = spark.read.format("binaryFile").load(str(path)).selectExpr("RS_FromGeoTiff(content) AS r")
    with pytest.raises(Exception, match="Lambert Cylindrical Equal Area"):
        df.selectExpr("RS_Width(r)").collect()


@pytest.mark.spark
def test_st_within_on_grid_tile_polygons(spark):
    grid = Grid.ease2(1)
    tr, tc = grid.tile_of(*grid.to_cell(2.5, 44.0))
    poly = grid.tile_polygon(int(tr), int(tc))
    w = grid.tile_window(int(tr), int(tc))
    inside = [grid.to_lonlat(w.row_off + dr, w.col_off + dc) for dr, dc in [(0, 0), (255, 255), (128, 3)]]
    outside = [grid.to_lonlat(w.row_off - 1, w.col_off), grid.to_lonlat(w.row_off + 10, w.col_off + 256)]
    pts = spark.createDataFrame([(i < len(inside), float(lon), float(lat)) for i, (lon, lat) in enumerate(inside + outside)],
                                "expected boolean, lon double, lat double")
    got = pts.selectExpr("expected", f"ST_Within(ST_Point(lon, lat), ST_GeomFromWKT('{poly.wkt}')) AS within").collect()
    assert [r.within for r in got] == [r.expected for r in got]


@pytest.mark.spark
def test_selfcheck_on_the_demo_tiles(spark):
    grid = Grid.ease2(1)
    tiles = grid.tiles_for_window(grid.window_around(2.5, 44.0, 512, 512))
    assert sedona_selfcheck(spark, grid, tiles) == {"tiles": 4, "centres_in_own_tile": 4,
                                                   "centres_in_other_tiles": 0, "rasters_match": 4}


def test_spark_zips_dropped_only_when_pyspark_is_installed(tmp_path: Path):
    from ssm_spark.pyspark_daemon import strip_spark_zips

    site = tmp_path / "site"
    for pkg in ("pyspark", "py4j"):
        (site / pkg).mkdir(parents=True)
        (site / pkg / "__init__.py").write_text("")
    zips = [str(tmp_path / "lib" / "pyspark.zip"), str(tmp_path / "lib" / "py4j-0.10.9.9-src.zip"),
            str(tmp_path / "jars" / "spark-core_2.13-4.0.1.jar")]
    other = str(tmp_path / "deps.zip")  # a user's --py-files zip stays
    assert strip_spark_zips([*zips, other, str(site)]) == [other, str(site)]
    # a Spark distribution without pip's pyspark: the zips are where pyspark lives, nothing dropped
    assert strip_spark_zips([*zips, other]) == [*zips, other]
    (site / "py4j" / "__init__.py").unlink()
    assert strip_spark_zips([*zips, str(site)]) == [*zips, str(site)]


@pytest.mark.spark
def test_local_workers_run_without_the_spark_zips(spark):
    import sys

    from ssm_spark.spark import spark_conf

    assert spark.conf.get("spark.python.daemon.module") == "ssm_spark.pyspark_daemon"
    paths = spark.sparkContext.parallelize([0], 1).map(lambda _: list(sys.path)).collect()[0]
    assert not [p for p in paths if p.endswith(("pyspark.zip", ".jar"))], paths
    cluster = spark_conf(SparkConfig(master=None, jars={"mode": "cluster"}))
    assert "spark.python.daemon.module" not in cluster  # elsewhere the package may not be installed


def test_no_custom_daemon_for_another_worker_interpreter(monkeypatch):
    from ssm_spark.spark import spark_conf

    monkeypatch.setenv("PYSPARK_PYTHON", "/usr/bin/python3-elsewhere")
    conf = spark_conf(SparkConfig(master="local[1]", jars={"mode": "cluster"}))
    assert "spark.python.daemon.module" not in conf


def test_console_progress_only_on_a_terminal(monkeypatch):
    import io

    from ssm_spark.spark import spark_conf

    class Tty(io.StringIO):
        def isatty(self):
            return True

    cfg = SparkConfig(master="local[1]", jars={"mode": "cluster"})
    monkeypatch.setattr("sys.stderr", io.StringIO())          # a log file or a pipe
    assert spark_conf(cfg)["spark.ui.showConsoleProgress"] == "false"
    monkeypatch.setattr("sys.stderr", None)                    # no stderr at all (a daemon)
    assert spark_conf(cfg)["spark.ui.showConsoleProgress"] == "false"
    monkeypatch.setattr("sys.stderr", Tty())
    assert spark_conf(cfg)["spark.ui.showConsoleProgress"] == "true"
    # the user's setting wins either way
    user = SparkConfig(master="local[1]", jars={"mode": "cluster"}, conf={"spark.ui.showConsoleProgress": False})
    assert spark_conf(user)["spark.ui.showConsoleProgress"] == "false"
    monkeypatch.setattr("sys.stderr", io.StringIO())
    user = SparkConfig(master="local[1]", jars={"mode": "cluster"}, conf={"spark.ui.showConsoleProgress": True})
    assert spark_conf(user)["spark.ui.showConsoleProgress"] == "true"


def test_quiet_log4j2_profile_for_local_sessions_only(tmp_path: Path):
    from ssm_spark.spark import JVM_OPTIONS, LOCAL_JVM_OPTIONS, LOG4J2_PROPERTIES, log4j2_option, spark_conf

    text = LOG4J2_PROPERTIES.read_text()
    assert "rootLogger.level = warn" in text
    # Spark, Hadoop and Sedona inherit the root level, so that spark.log_level: INFO still shows them
    assert not re.search(r"^logger\.\w+\.name = org\.apache\.(spark|sedona|hadoop)$", text, re.M)
    local = spark_conf(SparkConfig(master="local[2]", jars={"mode": "cluster"}))
    opt = f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()}"
    # the local driver's JVM (it runs the executors) compiles with C1 only; a cluster's keeps the JVM's default
    assert local["spark.driver.extraJavaOptions"] == f"{JVM_OPTIONS} {opt} {LOCAL_JVM_OPTIONS}"
    assert local["spark.executor.extraJavaOptions"] == f"{JVM_OPTIONS} {opt}"
    # under spark-submit the driver JVM is already running: the command line carries it (deploy/)
    cluster = spark_conf(SparkConfig(master=None, jars={"mode": "cluster"}))
    assert "log4j2" not in cluster["spark.driver.extraJavaOptions"] + cluster["spark.executor.extraJavaOptions"]
    assert "TieredStopAtLevel" not in cluster["spark.driver.extraJavaOptions"] + cluster["spark.executor.extraJavaOptions"]
    own = spark_conf(SparkConfig(master="local[2]", jars={"mode": "cluster"},
                                 conf={"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=mine.xml"}))
    assert own["spark.driver.extraJavaOptions"] == "-Dlog4j2.configurationFile=mine.xml"
    spaced = tmp_path / "a folder" / "log4j2.properties"
    spaced.parent.mkdir()
    spaced.write_text(text)
    assert log4j2_option(spaced) == f"-Dlog4j2.configurationFile=file://{tmp_path.as_posix()}/a%20folder/log4j2.properties"
    with pytest.raises(SparkSetupError, match="missing.*package data"):
        log4j2_option(tmp_path / "nope.properties")


@pytest.mark.spark
def test_the_session_jvm_logs_through_the_quiet_profile(spark):
    from ssm_spark.spark import LOG4J2_PROPERTIES

    jvm = spark.sparkContext._jvm
    assert jvm.java.lang.System.getProperty("log4j2.configurationFile") == LOG4J2_PROPERTIES.as_uri()
    ctx = jvm.org.apache.logging.log4j.LogManager.getContext(False)
    source = ctx.getConfiguration().getConfigurationSource().getLocation()
    assert source == str(LOG4J2_PROPERTIES)              # the file was read, not Spark's default profile
    # a level only this file sets
    level = jvm.org.apache.logging.log4j.LogManager.getLogger("org.apache.hadoop.util.NativeCodeLoader").getLevel()
    assert level.toString() == "ERROR"
    # and runs with the local JVM options (C1 only: spark.LOCAL_JVM_OPTIONS)
    from ssm_spark.spark import LOCAL_JVM_OPTIONS

    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(LOCAL_JVM_OPTIONS.split()) <= set(args)
