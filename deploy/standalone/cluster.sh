#!/usr/bin/env bash
# A Spark standalone cluster on this machine (or, run on each host, across machines) from the
# Spark that pyspark ships:   deploy/standalone/cluster.sh start|stop [WORKER_CORES] [WORKER_MEMORY]
# then: MASTER=spark://$(hostname):7077 deploy/submit.sh demo --output /shared/out/demo
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SPARK_HOME=${SPARK_HOME:-$("$ROOT/.venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
export SPARK_HOME
case "${1:-}" in
  start)
    "$SPARK_HOME/sbin/start-master.sh"
    "$SPARK_HOME/sbin/start-worker.sh" --cores "${2:-2}" --memory "${3:-8g}" "spark://$(hostname):7077" ;;
  stop)
    "$SPARK_HOME/sbin/stop-worker.sh" || true
    "$SPARK_HOME/sbin/stop-master.sh" ;;
  *) echo "usage: $0 start|stop [cores] [memory]" >&2; exit 2 ;;
esac
