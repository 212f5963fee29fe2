#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N workers on loopback, started from the
# Spark inside the pinned pyspark with `spark-class` (pyspark ships no sbin/start-*.sh scripts), and
# stopped by their process ids.
#
#   deploy/standalone/cluster.sh start     # master + workers; prints the master URL when all workers are registered
#   deploy/standalone/cluster.sh status    # master URL, alive workers, cores (exit 1 when not running)
#   deploy/standalone/cluster.sh url       # spark://HOST:PORT
#   deploy/standalone/cluster.sh kill-worker [N]   # SIGKILL worker N (default 1): a fault for tests
#   deploy/standalone/cluster.sh stop      # TERM each pid it started (then KILL after 10 s), executors included
# then: MASTER=$(deploy/standalone/cluster.sh url) deploy/submit.sh produce ...
#
# Environment (defaults in brackets):
#   CLUSTER_DIR     state: pids, logs, work dirs [out/standalone]
#   SPARK_HOST      address to bind [127.0.0.1]
#   MASTER_PORT     [7077]            MASTER_WEBUI_PORT [8080]
#   WORKERS         number of workers [2]   WORKER_CORES per worker [1]   WORKER_MEMORY per worker [2g]
#   SPARK_HOME      [the pyspark package of .venv]   PYTHON [.venv/bin/python]
# Across machines: run the master on one host (SPARK_HOST=its address) and `start-worker` on the others
# (SPARK_HOST=their address, MASTER_URL=spark://master:7077).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
export SPARK_HOME
DIR=${CLUSTER_DIR:-$ROOT/out/standalone}
HOST=${SPARK_HOST:-127.0.0.1}
PORT=${MASTER_PORT:-7077}
WEBUI=${MASTER_WEBUI_PORT:-8080}
N=${WORKERS:-2}
URL=${MASTER_URL:-spark://$HOST:$PORT}
export SPARK_LOCAL_IP=$HOST SPARK_LOG_DIR=$DIR/logs SPARK_NO_DAEMONIZE=1
# the workers' executors run this Python unless a job says otherwise (spark.pyspark.python)
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY}

say() { printf '[cluster] %s\n' "$*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
children() {  # PID: its child processes, from /proc (no procps needed)
  local parent=$1 stat line s
  for stat in /proc/[0-9]*/stat; do
    line=$(cat "$stat" 2>/dev/null) || continue
    line=${line##*) }  # after "(command) ": state, ppid, ...
    # shellcheck disable=SC2086
    set -- $line
    if [ "${2:-}" = "$parent" ]; then s=${stat#/proc/}; echo "${s%/stat}"; fi
  done
}

launch() {  # NAME CLASS ARGS...: start a daemon in the background, record its pid
  local name=$1; shift
  if alive "$DIR/$name.pid"; then say "$name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  mkdir -p "$DIR/logs"
  nohup "$SPARK_HOME/bin/spark-class" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

master_json() {  # the master's status page as JSON (fails when it is not up)
  "$PY" - "$HOST" "$WEBUI" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/json/", timeout=2) as r:
    d = json.load(r)
print(json.dumps({"url": d.get("url"), "status": d.get("status"), "aliveworkers": d.get("aliveworkers"),
                  "cores": d.get("cores"), "coresused": d.get("coresused"),
                  "activeapps": len(d.get("activeapps", []))}))
EOF
}

wait_for_workers() {  # until N workers are alive (60 s at most)
  local want=$1 i
  for i in $(seq 1 120); do
    if out=$(master_json 2>/dev/null) && [ "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["aliveworkers"])' "$out")" -ge "$want" ]; then
      return 0
    fi
    sleep 0.5
  done
  say "the master did not report $want alive workers within 60 s; logs in $DIR/logs"; return 1
}

start_worker() {  # I
  local i=$1
  mkdir -p "$DIR/work-$i"
  launch "worker-$i" org.apache.spark.deploy.worker.Worker --host "$HOST" --port 0 --webui-port 0 \
    --cores "${WORKER_CORES:-1}" --memory "${WORKER_MEMORY:-2g}" --work-dir "$DIR/work-$i" "$URL"
}

stop_pid() {  # NAME: TERM, then KILL after 10 s; the worker's executors are its children
  local f="$DIR/$1.pid" pid kids i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kids=$(children "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { say "$1 (pid $pid) did not stop on TERM: KILL"; kill -KILL "$pid" 2>/dev/null || true; }
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  fi
  rm -f "$f"
}

case "${1:-}" in
  start)
    launch master org.apache.spark.deploy.master.Master --host "$HOST" --port "$PORT" --webui-port "$WEBUI"
    for i in $(seq 1 "$N"); do start_worker "$i"; done
    wait_for_workers "$N"
    say "up: $URL, $N workers x ${WORKER_CORES:-1} cores (UI http://$HOST:$WEBUI, state in $DIR)"
    echo "$URL" ;;
  start-worker)  # one more worker (or a restarted one): start-worker I
    start_worker "${2:?start-worker I}" ;;
  kill-worker)  # the loss of a node: SIGKILL the worker and its executors at once
    f="$DIR/worker-${2:-1}.pid"; alive "$f" || { say "worker ${2:-1} is not running"; exit 1; }
    pid=$(cat "$f"); kids=$(children "$pid")
    # shellcheck disable=SC2086
    kill -KILL "$pid" $kids; say "killed worker ${2:-1} (pid $pid; executors: ${kids:-none})"; rm -f "$f" ;;
  stop)
    ls "$DIR"/*.pid >/dev/null 2>&1 || { say "nothing started from $DIR (CLUSTER_DIR)"; exit 0; }
    for f in "$DIR"/worker-*.pid; do [ -e "$f" ] && stop_pid "$(basename "$f" .pid)"; done
    stop_pid master
    say "stopped (state in $DIR)" ;;
  status)
    master_json || { say "no master at http://$HOST:$WEBUI"; exit 1; } ;;
  url)
    echo "$URL" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
