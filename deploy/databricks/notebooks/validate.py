# Databricks notebook source
# MAGIC %md
# MAGIC # ssm-spark: validation
# MAGIC A product against ISMN in situ: metrics (R, ubRMSE, bias, RMSE, n) per station, network, environment, and the report.
# MAGIC
# MAGIC Cluster: Databricks Runtime 17.3 LTS (Spark 4.0), dedicated access mode, with the Sedona jars in
# MAGIC `/databricks/jars` (`deploy/databricks/init/sedona-jars.sh`) and the ssm-spark wheel attached as a
# MAGIC library, or installed here: `%pip install /Volumes/<catalog>/<schema>/<volume>/dist/ssm_spark-<version>-py3-none-any.whl`.
# MAGIC The arguments are those of `ssm-spark validate` on a laptop; an empty `config` means the wheel's packaged defaults.

# COMMAND ----------

ROOT = "/Volumes/main/ssm/ssm_spark"
dbutils.widgets.text("config", "", "configuration YAML (empty: packaged defaults)")
dbutils.widgets.text("product", ROOT + "/product/parquet", "product Parquet")
dbutils.widgets.text("insitu", ROOT + "/insitu", "ISMN download")
dbutils.widgets.text("output", ROOT + "/validation", "validation folder (output)")

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

ARGS = [("product", "--product"), ("insitu", "--insitu"), ("output", "--output")]
run("validate", ARGS)
print(json.dumps(json.load(open(dbutils.widgets.get("output") + "/metrics.json"))["overall"], indent=2))
