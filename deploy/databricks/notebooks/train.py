# Databricks notebook source
# MAGIC %md
# MAGIC # ssm-spark: training
# MAGIC Matchups -> per-environment candidates, station-grouped CV, model selection, the registry and its report.
# MAGIC
# MAGIC Cluster: Databricks Runtime 17.3 LTS (Spark 4.0), dedicated access mode, with the Sedona jars in
# MAGIC `/databricks/jars` (`deploy/databricks/init/sedona-jars.sh`) and the ssm-spark wheel attached as a
# MAGIC library, or installed here: `%pip install /Volumes/<catalog>/<schema>/<volume>/dist/ssm_spark-<version>-py3-none-any.whl`.
# MAGIC The arguments are those of `ssm-spark train` on a laptop; an empty `config` means the wheel's packaged defaults.

# COMMAND ----------

ROOT = "/Volumes/main/ssm/ssm_spark"
dbutils.widgets.text("config", "", "configuration YAML (empty: packaged defaults)")
dbutils.widgets.text("matchups", ROOT + "/matchups.parquet", "matchup table")
dbutils.widgets.text("registry", ROOT + "/models", "model registry (output)")

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

ARGS = [("matchups", "--matchups"), ("registry", "--output")]
run("train", ARGS)
displayHTML(open(dbutils.widgets.get("registry") + "/report.html").read())
