# Databricks notebook source
# MAGIC %md
# MAGIC # ssm-spark: production
# MAGIC Feature stacks + registry -> the regional product: Parquet by date, a COG per tile, VRT, quicklooks; re-runs skip complete dates.
# MAGIC
# MAGIC Cluster: Databricks Runtime 17.3 LTS (Spark 4.0), dedicated access mode, with the Sedona jars in
# MAGIC `/databricks/jars` (`deploy/databricks/init/sedona-jars.sh`) and the ssm-spark wheel attached as a
# MAGIC library, or installed here: `%pip install /Volumes/<catalog>/<schema>/<volume>/dist/ssm_spark-<version>-py3-none-any.whl`.
# MAGIC The arguments are those of `ssm-spark produce` on a laptop; an empty `config` means the wheel's packaged defaults.

# COMMAND ----------

ROOT = "/Volumes/main/ssm/ssm_spark"
dbutils.widgets.text("config", "", "configuration YAML (empty: packaged defaults)")
dbutils.widgets.text("registry", ROOT + "/models", "model registry")
dbutils.widgets.text("stacks", ROOT + "/stacks", "feature stacks (<date>/*.tif)")
dbutils.widgets.text("region", "", "bbox lon0,lat0,lon1,lat1, GeoJSON or name (empty: configured)")
dbutils.widgets.text("start", "", "first date YYYY-MM-DD")
dbutils.widgets.text("end", "", "last date YYYY-MM-DD")
dbutils.widgets.text("product", ROOT + "/product", "product folder (output)")

# COMMAND ----------

import json

from ssm_spark.cli import main


def run(job, args, flags=()):
    """ssm-spark JOB on this cluster's Spark session (the cluster owns the master and the jars)."""
    argv = [job, "--set", "spark.master=null", "--set", "spark.jars.mode=cluster", *flags]
    config = dbutils.widgets.get("config")
    if config:
        argv += ["--config", config]
    for name, option in args:
        value = dbutils.widgets.get(name)
        if value:
            argv += [option, value]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"ssm-spark {job} failed with exit code {rc} (see the log above)")


# COMMAND ----------

ARGS = [("registry", "--models"), ("stacks", "--stacks"), ("region", "--region"), ("start", "--start"), ("end", "--end"), ("product", "--output")]
run("produce", ARGS)
display(spark.read.parquet(dbutils.widgets.get("product") + "/parquet").groupBy("date").count().orderBy("date"))
