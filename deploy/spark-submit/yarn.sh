#!/usr/bin/env bash
# A job on YARN (HADOOP_CONF_DIR or YARN_CONF_DIR must point at the cluster's configuration):
#   deploy/spark-submit/yarn.sh train --matchups /shared/matchups.parquet --output /shared/models
# DEPLOY_MODE [cluster]: the driver runs in the application master, in the packed environment too
# (spark.yarn.appMasterEnv.PYSPARK_PYTHON); client: the driver runs here with DRIVER_PYTHON.
# QUEUE [default]. Shared settings: deploy/spark-submit/common.sh.
source "$(dirname "$0")/common.sh"
mode=${DEPLOY_MODE:-cluster}
extra=(--conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python)
[ "$mode" = client ] && extra=(--conf "spark.pyspark.driver.python=${DRIVER_PYTHON:-$LOCAL_PY}")
# the logging profile for the containers (executors; the driver too in cluster mode): see LOG4J2 in common.sh
log4j2_args=()
if [ "$mode" = cluster ]; then log4j2_shipped DRIVER=1; else log4j2_shipped; fi
submit --master yarn --deploy-mode "$mode" --queue "${QUEUE:-default}" "${extra[@]}" "${log4j2_args[@]}"
