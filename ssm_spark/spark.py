"""The Spark session, with Apache Sedona registered.

:func:`session` is the one place a SparkSession is built. It adds the Sedona jars (``spark.jars``
from the project's verified ``jars/`` folder, or ``spark.jars.packages``, or nothing when the cluster
has them installed: ``spark.jars.mode``), the Kryo serializer with Sedona's registrator, Arrow for
pandas UDFs, the JVM options GeoTools needs, and registers Sedona's ST_ and RS_ functions.

Console output: Spark's progress bar (``spark.ui.showConsoleProgress``) is on only when stderr is a
terminal (its carriage returns would otherwise fill log files), and a local session's JVM logs through
the quiet log4j2 profile shipped with the package (:data:`LOG4J2_PROPERTIES`: WARN for Spark, Hadoop
and Sedona) instead of Spark's default INFO profile. A setting in ``spark.conf`` wins over both. Under
spark-submit the driver's JVM is started before this code runs: ``deploy/spark-submit/common.sh``
passes the same file on the command line. See ``docs/pipeline.md`` (Spark sessions).

Resources (driver/executor memory, cores) are deliberately not set here: they belong to spark-submit
or the cluster's configuration. ``spark.master`` is set only when the configuration gives one, so a
``spark-submit --master ...`` wins.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ssm_spark import jars as _jars
from ssm_spark.config import SparkConfig
from ssm_spark.errors import SparkSetupError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: JVM options for driver and executors. GeoTools reads rasters through Java AWT imaging: run it
#: headless (no X server on executors) and let it reach the JDK internals it reflects on under Java 17.
JVM_OPTIONS = " ".join([
    "-Djava.awt.headless=true",
    "-Dorg.geotools.referencing.forceXY=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.desktop/java.awt.image=ALL-UNNAMED",
])

#: JVM options of a ``local`` master only, where the driver's JVM runs the executors and shares the
#: machine's cores with the Python workers: the JIT compiler stops at C1 (no C2). The fused product
#: job leaves the JVM little to run (scheduling, moving small pickled rows to and from the Python
#: workers), and C2 spent far more CPU compiling Spark's code than its code saved: on local[2], 4
#: demo dates after a warm-up date, the JVM's CPU went 1.7 -> 0.4 CPU-s (its compiler threads 1.3 ->
#: 0.1) and the session's start and first date 21-24 -> 12-13 CPU-s (benchmarks/spark_cpu_account.py,
#: docs/performance.md). A cluster's long-lived executors keep the JVM's default (both tiers);
#: ``spark.conf.spark.driver.extraJavaOptions`` replaces the whole option string.
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"

#: The quiet log4j2 profile (package data): WARN for the JVM side, Python logging untouched.
LOG4J2_PROPERTIES = Path(__file__).resolve().parent / "log4j2.properties"


def stderr_is_terminal() -> bool:
    """True when this process's stderr is an interactive terminal (not a pipe, a file or closed)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def log4j2_option(path: Path = LOG4J2_PROPERTIES) -> str:
    """The JVM option that makes log4j2 read ``path`` (as a file URI: safe with spaces in the path).

    Raises
    ------
    SparkSetupError
        If the file is missing (a broken installation: it is package data of ``ssm_spark``).
    """
    if not path.is_file():
        raise SparkSetupError(f"the log4j2 profile {path} is missing: reinstall ssm-spark (it is package data), or "
                              "set spark.conf.spark.driver.extraJavaOptions yourself")
    return f"-Dlog4j2.configurationFile={path.as_uri()}"


def spark_conf(cfg: SparkConfig) -> dict[str, str]:
    """The Spark properties :func:`session` sets, as a dict (also used by deploy scripts and tests).

    ``spark.ui.showConsoleProgress`` is ``true`` only when stderr is a terminal; with a ``local``
    master the driver's JVM (which runs the local executors too) gets :data:`LOG4J2_PROPERTIES` and
    :data:`LOCAL_JVM_OPTIONS`. Every key of ``cfg.conf`` replaces the computed value.

    Raises
    ------
    SparkSetupError
        If ``jars.mode`` is ``local`` and the jars are missing or damaged (the message gives the
        command that fetches them).
    """
    conf: dict[str, str] = {
        "spark.app.name": cfg.app_name,
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.sedona.core.serde.SedonaKryoRegistrator",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.arrow_batch_size),
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": JVM_OPTIONS,
        "spark.executor.extraJavaOptions": JVM_OPTIONS,
        # the progress bar redraws itself with carriage returns: for a person at a terminal only
        "spark.ui.showConsoleProgress": "true" if stderr_is_terminal() else "false",
    }
    if cfg.master:
        conf["spark.master"] = cfg.master
    if (cfg.master or "").startswith("local"):
        # this process launches the JVM: it can choose its logging before the JVM's first line
        quiet = log4j2_option()
        conf["spark.driver.extraJavaOptions"] = f"{JVM_OPTIONS} {quiet} {LOCAL_JVM_OPTIONS}"
        conf["spark.executor.extraJavaOptions"] = f"{JVM_OPTIONS} {quiet}"
    worker_python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    if (cfg.master or "").startswith("local") and os.path.realpath(worker_python) == os.path.realpath(sys.executable):
        # workers run here, with this interpreter, where this package is importable: skip PySpark's
        # per-task re-read of its own zips (ssm_spark/pyspark_daemon.py; about 0.2 s per task)
        conf["spark.python.daemon.module"] = "ssm_spark.pyspark_daemon"
    if cfg.jars.mode == "local":  # with Hadoop's S3A (s3a://) when its jars were fetched (jars fetch --s3a)
        conf["spark.jars"] = ",".join(str(p) for p in _jars.verify(cfg.jars.dir) + _jars.s3a_jars(cfg.jars.dir))
    elif cfg.jars.mode == "packages":
        conf["spark.jars.packages"] = _jars.maven_packages()
    conf.update(cfg.conf)  # explicit user settings win
    return conf


def session(cfg: SparkConfig | None = None) -> "SparkSession":
    """Build (or get) the SparkSession with Sedona registered.

    Parameters
    ----------
    cfg : SparkConfig, optional
        The ``spark`` section of the configuration; defaults to local mode with the project's jars.

    Returns
    -------
    SparkSession
        With Sedona's SQL functions (ST_*, RS_*) registered.

    Raises
    ------
    SparkSetupError
        If the jars are missing, or Sedona cannot be registered (typically a jar/Spark version
        mismatch).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkSetupError(f"pyspark cannot be imported ({exc}): install it with pip install 'ssm-spark[spark]' "
                              "(a managed runtime such as Databricks provides its own)") from exc

    cfg = cfg or SparkConfig()
    conf = spark_conf(cfg)
    # Executors must run the same Python as the driver (the project's virtualenv in local mode).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # object storage (ssm_spark.storage): GDAL's settings for the endpoint in the environment reach the
    # executors' rasterio (local mode inherits the driver's environment; a cluster gets executorEnv), and
    # S3A's settings; the credentials stay in the environment (never in the Spark configuration)
    from ssm_spark.storage import apply_gdal_env, endpoint, s3a_conf

    for k, v in apply_gdal_env().items():
        conf.setdefault(f"spark.executorEnv.{k}", v)
    if endpoint() or os.environ.get("AWS_ACCESS_KEY_ID"):
        for k, v in s3a_conf().items():
            conf.setdefault(k, v)
    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    try:
        from sedona.spark import SedonaContext

        spark = SedonaContext.create(spark)
        spark.sql("SELECT ST_Point(0.0, 0.0)").collect()
    except Exception as exc:  # noqa: BLE001 - re-raised with the likely cause
        hint = (f"Are the jars ({_jars.maven_packages()}) on the driver's classpath and built for this Spark "
                f"(needs {_jars.SPARK_COMPAT}.x)? Under spark-submit the driver JVM starts before this code runs, so "
                f"pass them on the command line: --jars $(python -m ssm_spark.jars jars) (deploy/submit.sh does).")
        raise SparkSetupError(f"Sedona could not be registered on Spark {spark.version}: {exc}. {hint}") from exc
    log.info("Spark %s session %s with Sedona %s (%s)", spark.version, cfg.app_name, _jars.SEDONA_VERSION,
             conf.get("spark.master", "master from spark-submit"))
    return spark


def sedona_selfcheck(spark: "SparkSession", grid, tiles: list[tuple[int, int]]) -> dict:
    """Prove on a live session that Sedona's ST_ and RS_ functions run, on a grid's tiles.

    For every tile: the lon/lat polygon of the tile (from :mod:`ssm_spark.grid`) and the lon/lat of
    its centre cell are joined with ``ST_Within`` (each centre must fall in its own tile and no
    other), and an empty raster with the tile's shape and transform is made with
    ``RS_MakeEmptyRaster`` and read back with ``RS_Width``/``RS_Height``/``RS_UpperLeftX``/
    ``RS_ScaleX``.

    Returns
    -------
    dict
        ``{"tiles": n, "centres_in_own_tile": n, "centres_in_other_tiles": n, "rasters_match": n}``.

    Raises
    ------
    SparkSetupError
        If any check disagrees with the grid.
    """
    from pyspark.sql import functions as F

    rows = []
    for tr, tc in tiles:
        w = grid.tile_window(tr, tc)
        lon, lat = grid.to_lonlat(w.row_off + w.height // 2, w.col_off + w.width // 2)
        left, _, _, top = grid.tile_bounds(tr, tc)
        rows.append((tr, tc, grid.tile_polygon(tr, tc).wkt, float(lon), float(lat), int(w.width), int(w.height),
                     float(left), float(top), float(grid.cell)))
    df = spark.createDataFrame(rows, "tile_row int, tile_col int, wkt string, lon double, lat double, "
                                     "width int, height int, left double, top double, cell double")
    polys = df.select("tile_row", "tile_col", F.expr("ST_GeomFromWKT(wkt)").alias("poly"))
    pts = df.select(F.col("tile_row").alias("p_row"), F.col("tile_col").alias("p_col"),
                    F.expr("ST_Point(lon, lat)").alias("pt"))
    hits = pts.join(polys, F.expr("ST_Within(pt, poly)")).select(
        (F.col("p_row") == F.col("tile_row")) & (F.col("p_col") == F.col("tile_col"))).collect()
    own = sum(1 for (h,) in hits if h)
    rast = df.selectExpr("RS_MakeEmptyRaster(1, width, height, left, top, cell) AS r", "width", "height", "left", "cell")
    checks = rast.selectExpr(
        "RS_Width(r) = width AND RS_Height(r) = height AND abs(RS_UpperLeftX(r) - left) < 1e-6 * cell "
        "AND abs(RS_ScaleX(r) - cell) < 1e-9 * cell AS ok").collect()
    result = {"tiles": len(rows), "centres_in_own_tile": own, "centres_in_other_tiles": len(hits) - own,
              "rasters_match": sum(1 for (ok,) in checks if ok)}
    if own != len(rows) or len(hits) != len(rows) or result["rasters_match"] != len(rows):
        raise SparkSetupError(f"Sedona self-check disagrees with grid {grid.name}: {result}")
    return result


#: The environment variables of the stores' clients passed to local-mode workers (:func:`share_store_environment`).
_STORE_ENV = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GS_", "CPL_GS_", "AZURE_STORAGE_")


def share_store_environment(spark: "SparkSession") -> list[str]:
    """In local mode, the store's settings of the driver's environment into the Python workers' (see the
    docs/commit.md section 8: a store written by the executors); returns the names set (their values are never logged). Elsewhere: nothing."""
    sc = spark.sparkContext
    if not str(sc.master).startswith("local"):
        return []
    jvm = sc._jvm.System.getenv()  # what the workers start with
    names = []
    for k, v in sorted(os.environ.items()):
        if k.startswith(_STORE_ENV) and v != (sc.environment.get(k) or jvm.get(k)):
            sc.environment[k] = v
            names.append(k)
    for k in [k for k in sc.environment if k.startswith(_STORE_ENV) and k not in os.environ]:
        sc.environment.pop(k)  # unset since: back to the JVM's own
        names.append(k)
    if names:
        log.info("local mode: the store's settings %s passed to the Python workers' environment",
                 ", ".join(names))
    return names
