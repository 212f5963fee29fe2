#!/bin/bash
# Cluster init script: copy the Sedona jars (the versions of ssm_spark/jars.py) from the volume into
# /databricks/jars before Spark starts, as Sedona's Databricks guide asks. Upload them once with
#   ssm-spark jars fetch jars/ && databricks fs cp jars/ dbfs:/Volumes/CATALOG/SCHEMA/VOLUME/jars/ --recursive
# SSM_JARS_DIR is set by the job cluster's spark_env_vars (deploy/databricks/resources/jobs.yml).
set -euo pipefail
SRC=${SSM_JARS_DIR:?set SSM_JARS_DIR to the volume folder holding the Sedona jars}
for jar in sedona-spark-shaded-4.0_2.13-1.8.0.jar geotools-wrapper-1.8.0-33.1.jar; do
  [ -f "$SRC/$jar" ] || { echo "sedona-jars.sh: $SRC/$jar missing" >&2; exit 1; }
  cp "$SRC/$jar" /databricks/jars/
done
