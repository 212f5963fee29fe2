#!/usr/bin/env bash
# Build what a cluster needs, with one command (make pack):
#   dist/ssm_spark-<version>-py3-none-any.whl   the library (conf/ inside as package data)
#   dist/ssm-spark-env.tar.gz                   a packed virtualenv (venv-pack): the wheel and every
#                                               dependency at the pins of requirements/constraints.txt
# Ship the archive with spark-submit --archives dist/ssm-spark-env.tar.gz#environment and point the
# Python workers at it: --conf spark.pyspark.python=./environment/bin/python (deploy/spark-submit/).
#
# Environment:
#   PYTHON        base interpreter of the packed env [the base of .venv's, else python3.11]
#   WITH_PYSPARK  1: put pyspark in the archive too [0: the cluster's Spark provides it, through the
#                 pyspark.zip that Spark puts on the workers' PYTHONPATH; saves about 470 MB]
#   EXTRAS        extras of the wheel to install, e.g. ee [none]
#   DIST          output folder [dist]
# venv-pack keeps the interpreter as a link to the base Python: the nodes need that same Python
# (version and path: the base printed below). Where they do not have it, build the archive on a
# machine like the nodes (or in the nodes' container image), or use conda-pack, which packs Python too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIST=${DIST:-$ROOT/dist}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys; print(sys._base_executable)' || command -v python3.11 )}
BUILD=$ROOT/build/pack-venv
say() { printf '[pack] %s\n' "$*" >&2; }

mkdir -p "$DIST"
say "wheel"
rm -f "$DIST"/ssm_spark-*.whl
"$PY" -m pip --version >/dev/null 2>&1 || { echo "[pack] $PY has no pip" >&2; exit 2; }
# build with the project's venv when present (setuptools pinned there), else in an isolated build
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation . -w "$DIST"
else
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps . -w "$DIST"
fi
WHEEL=$(ls "$DIST"/ssm_spark-*.whl)

say "virtualenv for the archive ($PY)"
rm -rf "$BUILD"
"$PY" -m venv "$BUILD"
"$BUILD/bin/python" -m pip install -q --disable-pip-version-check "pip==25.3" "setuptools==80.9.0"
extras=${EXTRAS:-}
[ "${WITH_PYSPARK:-0}" = 1 ] && extras=${extras:+$extras,}spark
"$BUILD/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints.txt \
  "$WHEEL${extras:+[$extras]}" "venv-pack"
"$BUILD/bin/python" -m pip check

say "packing"
rm -f "$DIST/ssm-spark-env.tar.gz"
"$BUILD/bin/venv-pack" -p "$BUILD" -o "$DIST/ssm-spark-env.tar.gz" -q
"$BUILD/bin/python" -c "import ssm_spark, ssm_spark.config as c; print('[pack] ssm_spark', ssm_spark.__version__, 'config hash', c.load_config().hash())" >&2
say "base Python the nodes need: $("$BUILD/bin/python" -c 'import sys; print(sys._base_executable, sys.version.split()[0])')"
ls -l "$WHEEL" "$DIST/ssm-spark-env.tar.gz" >&2
