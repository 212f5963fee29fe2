#!/usr/bin/env bash
# A job on a Spark standalone cluster (client mode: the driver runs here; standalone has no cluster
# mode for Python):
#   MASTER=spark://HOST:7077 deploy/spark-submit/standalone.sh produce --models ... --stacks ... --output ...
# The driver runs DRIVER_PYTHON [.venv/bin/python: a Python with ssm-spark, e.g. the wheel installed];
# executors run the packed environment (or PYTHON with ENV_ARCHIVE=none). Inputs and outputs must be
# paths that the driver and every node see alike (a shared mount), until object storage is supported.
# Shared settings: deploy/spark-submit/common.sh.
source "$(dirname "$0")/common.sh"
submit --master "${MASTER:?MASTER=spark://HOST:PORT}" --deploy-mode client \
  --conf "spark.pyspark.driver.python=${DRIVER_PYTHON:-$LOCAL_PY}"
