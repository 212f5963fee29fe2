#!/usr/bin/env bash
# Run an ssm-spark job with spark-submit on any cluster (or locally):
#   deploy/submit.sh JOB [job arguments...]           e.g. deploy/submit.sh demo --output /data/demo
# Environment:
#   SPARK_SUBMIT   spark-submit to use (default: the one in .venv, else on PATH)
#   MASTER         --master (default: local[*]; e.g. spark://host:7077, yarn, k8s://...)
#   JARS_MODE      local (default: --jars from jars/) or packages (--packages from Maven Central)
#   SUBMIT_ARGS    extra spark-submit arguments (resources: --driver-memory 8g --executor-cores 4 ...)
#   LOG4J2         the submitting JVM's logging profile (default ssm_spark/log4j2.properties: WARN for
#                  Spark, Hadoop and Sedona; none: Spark's own, about 60 INFO lines)
# The jars are on the command line, so the job itself adds none (spark.jars.mode=cluster).
# The library travels to the executors as a zip (--py-files); its Python dependencies must be
# installed on the cluster's Python (pip install -c requirements/constraints.txt .). For a real
# cluster prefer deploy/spark-submit/ (the wheel and a packed environment with --archives).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOB=${1:?usage: deploy/submit.sh JOB [args...]}; shift
[ -f "$ROOT/jobs/$JOB.py" ] || { echo "no such job: $ROOT/jobs/$JOB.py" >&2; exit 2; }
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
SUBMIT=${SPARK_SUBMIT:-$( [ -x "$ROOT/.venv/bin/spark-submit" ] && echo "$ROOT/.venv/bin/spark-submit" || echo spark-submit )}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY}
LOG4J2=${LOG4J2:-$ROOT/ssm_spark/log4j2.properties}
if [ "$LOG4J2" != none ]; then
  [ -f "$LOG4J2" ] || { echo "no log4j2 profile at $LOG4J2 (LOG4J2=none keeps Spark's own)" >&2; exit 2; }
  log4j2_uri=$("$PY" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).resolve().as_uri())' "$LOG4J2")
  export SPARK_SUBMIT_OPTS="${SPARK_SUBMIT_OPTS:+$SPARK_SUBMIT_OPTS }-Dlog4j2.configurationFile=$log4j2_uri"
fi
mkdir -p "$ROOT/build"
(cd "$ROOT" && rm -f build/ssm_spark.zip && "$PY" -c "import shutil; shutil.make_archive('build/ssm_spark', 'zip', '.', 'ssm_spark')")
case "${JARS_MODE:-local}" in
  local)    jar_args=(--jars "$("$PY" -m ssm_spark.jars jars)") ;;
  packages) jar_args=(--packages "$("$PY" -m ssm_spark.jars packages)") ;;
  *) echo "JARS_MODE must be local or packages" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
exec "$SUBMIT" --master "${MASTER:-local[*]}" "${jar_args[@]}" --py-files "$ROOT/build/ssm_spark.zip" \
  ${SUBMIT_ARGS:-} "$ROOT/jobs/$JOB.py" --set spark.master=null --set spark.jars.mode=cluster "$@"
