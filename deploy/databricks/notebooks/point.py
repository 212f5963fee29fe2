# Databricks notebook source
# MAGIC %md
# MAGIC # ssm-spark: point query
# MAGIC SSM at one point and date (or a series) from the registry and the stacks or a product: no Spark job, well under a second.
# MAGIC
# MAGIC Cluster: Databricks Runtime 17.3 LTS (Spark 4.0), dedicated access mode, with the Sedona jars in
# MAGIC `/databricks/jars` (`deploy/databricks/init/sedona-jars.sh`) and the ssm-spark wheel attached as a
# MAGIC library, or installed here: `%pip install /Volumes/<catalog>/<schema>/<volume>/dist/ssm_spark-<version>-py3-none-any.whl`.
# MAGIC The arguments are those of `ssm-spark point` on a laptop; an empty `config` means the wheel's packaged defaults.

# COMMAND ----------

ROOT = "/Volumes/main/ssm/ssm_spark"
dbutils.widgets.text("config", "", "configuration YAML (empty: packaged defaults)")
dbutils.widgets.text("registry", ROOT + "/models", "model registry")
dbutils.widgets.text("stacks", ROOT + "/stacks", "feature stacks or a product folder")
dbutils.widgets.text("lat", "44.0", "latitude (deg)")
dbutils.widgets.text("lon", "2.5", "longitude (deg)")
dbutils.widgets.text("date", "2024-05-01", "date YYYY-MM-DD")
dbutils.widgets.text("end", "", "last date of a series (optional)")

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

ARGS = [("registry", "--models"), ("stacks", "--source"), ("lat", "--lat"), ("lon", "--lon"), ("date", "--date"), ("end", "--end")]
run("point", ARGS, flags=["--json"])
