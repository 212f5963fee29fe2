# Sourced by standalone.sh, yarn.sh and k8s.sh: what every spark-submit of an ssm-spark job shares.
#   JOB ARGS...     a job of jobs/ (demo simulate features matchups train produce validate) and the
#                   same arguments as `ssm-spark JOB` locally
# Environment shared by the three:
#   SPARK_SUBMIT    spark-submit to use [the one of .venv, else on PATH]
#   ENV_ARCHIVE     the packed environment from `make pack` [dist/ssm-spark-env.tar.gz]; it travels with
#                   --archives ARCHIVE#environment and the Python workers run ./environment/bin/python
#                   (spark.pyspark.python). `none`: no archive, the nodes' own PYTHON (below) instead
#   PYTHON          with ENV_ARCHIVE=none: the Python with ssm-spark installed on every node
#   JARS_MODE       jars: --jars from the local jars folder (ssm-spark jars fetch DIR) [default]
#                   packages: --packages, resolved from Maven Central by the cluster
#                   cluster: none (installed on the cluster, e.g. in $SPARK_HOME/jars or the image)
#   S3A=1           with JARS_MODE=jars, also hadoop-aws 3.4.1 and the AWS SDK modules (ssm-spark jars
#                   fetch --s3a) for s3a:// in Spark: only on a cluster without its own S3A (its Hadoop
#                   must be 3.4.x; EMR, Dataproc and Databricks bring theirs)
#   SUBMIT_ARGS     more spark-submit arguments (resources: --executor-memory 4g --executor-cores 2 ...)
#   LOG4J2          the JVM's logging profile [ssm_spark/log4j2.properties: WARN for Spark, Hadoop and
#                   Sedona instead of Spark's ~60 INFO lines per job; ssm-spark's own Python logging is
#                   not affected]; none: leave the cluster's own profile. It reaches the JVM that
#                   spark-submit starts here (SPARK_SUBMIT_OPTS: the driver itself in client mode, the
#                   submitting client in cluster mode); yarn.sh also ships it (--files) to the YARN
#                   containers, which have it in their working directory before their JVM starts. On a
#                   standalone or Kubernetes cluster --files arrive after an executor's JVM has started:
#                   there executors (and a Kubernetes driver) keep the cluster's or the image's profile
#                   (put the file in the image's $SPARK_HOME/conf/ to change it).
#   DRY_RUN=1       print the command instead of running it
# The job's own --set spark.master=null --set spark.jars.mode=cluster let spark-submit decide both.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
JOB=${1:?usage: $0 JOB [job arguments...]}; shift
JOB_FILE="$ROOT/jobs/$JOB.py"
[ "$JOB" = matchups ] && JOB_FILE="$ROOT/jobs/build_matchups.py"
[ -f "$JOB_FILE" ] || { echo "no such job: $JOB_FILE" >&2; exit 2; }
LOCAL_PY="$ROOT/.venv/bin/python"; [ -x "$LOCAL_PY" ] || LOCAL_PY=$(command -v python3)
SUBMIT=${SPARK_SUBMIT:-$( [ -x "$ROOT/.venv/bin/spark-submit" ] && echo "$ROOT/.venv/bin/spark-submit" || echo spark-submit )}
ARCHIVE=${ENV_ARCHIVE:-$ROOT/dist/ssm-spark-env.tar.gz}
# pip's spark-submit finds its Spark with whatever python3 is on PATH unless SPARK_HOME is set
if [ -z "${SPARK_HOME:-}" ] && sh_=$("$LOCAL_PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null); then
  export SPARK_HOME=$sh_
fi

python_args=()
if [ "$ARCHIVE" = none ]; then
  python_args=(--conf "spark.pyspark.python=${PYTHON:?ENV_ARCHIVE=none needs PYTHON, the Python with ssm-spark on every node}")
else
  case "$ARCHIVE" in
    *://*) ;;  # hdfs://, s3a://, https://, local:// (in the image): the cluster fetches it
    *) [ -f "$ARCHIVE" ] || [ "${DRY_RUN:-0}" = 1 ] || { echo "no packed environment at $ARCHIVE: run make pack (or set ENV_ARCHIVE)" >&2; exit 2; } ;;
  esac
  python_args=(--archives "$ARCHIVE#environment" --conf spark.pyspark.python=./environment/bin/python)
fi

case "${JARS_MODE:-jars}" in
  jars)     case "${S3A:-0}" in 0) s3a=() ;; 1) s3a=(--s3a) ;;
              *) echo "S3A must be 0 or 1 (got '${S3A}')" >&2; exit 2 ;; esac
            jar_args=(--jars "$("$LOCAL_PY" -m ssm_spark.jars jars ${SSM_SPARK_JARS:+--dir "$SSM_SPARK_JARS"} "${s3a[@]}")") ;;
  packages) jar_args=(--packages "$("$LOCAL_PY" -m ssm_spark.jars packages)") ;;
  cluster)  jar_args=() ;;
  *) echo "JARS_MODE must be jars, packages or cluster" >&2; exit 2 ;;
esac
job_args=("$JOB_FILE" --set spark.master=null --set spark.jars.mode=cluster "$@")

LOG4J2=${LOG4J2:-$ROOT/ssm_spark/log4j2.properties}
if [ "$LOG4J2" != none ]; then
  [ -f "$LOG4J2" ] || { echo "no log4j2 profile at $LOG4J2 (LOG4J2=none keeps the cluster's own)" >&2; exit 2; }
  # as a file URI: a path with spaces would be split by spark-class
  log4j2_uri=$("$LOCAL_PY" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).resolve().as_uri())' "$LOG4J2")
  export SPARK_SUBMIT_OPTS="${SPARK_SUBMIT_OPTS:+$SPARK_SUBMIT_OPTS }-Dlog4j2.configurationFile=$log4j2_uri"
fi
log4j2_shipped() {  # spark-submit arguments for JVMs started in a YARN container: DRIVER=1 for a cluster-mode driver
  [ "$LOG4J2" = none ] && return 0
  local opt="-Dlog4j2.configurationFile=$(basename "$LOG4J2")"   # localized into the container's working directory
  # defaultJavaOptions: the job's own spark.*.extraJavaOptions are appended to them, not replaced
  log4j2_args=(--files "$LOG4J2" --conf "spark.executor.defaultJavaOptions=$opt")
  [ "${1:-}" = DRIVER=1 ] && log4j2_args+=(--conf "spark.driver.defaultJavaOptions=$opt")
  return 0
}

submit() {  # the target's own arguments; then the shared ones
  local cmd=("$SUBMIT" "$@" "${python_args[@]}" "${jar_args[@]}")
  # shellcheck disable=SC2206
  [ -n "${SUBMIT_ARGS:-}" ] && cmd+=(${SUBMIT_ARGS})
  cmd+=("${job_args[@]}")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    [ -n "${SPARK_SUBMIT_OPTS:-}" ] && printf 'SPARK_SUBMIT_OPTS=%q ' "$SPARK_SUBMIT_OPTS"
    printf '%q ' "${cmd[@]}"; echo
  else exec "${cmd[@]}"; fi
}
