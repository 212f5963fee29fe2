#!/usr/bin/env bash
# Set up ssm-spark on a fresh machine, idempotently: system packages (Java 17, Maven) when missing,
# a virtualenv in .venv with the pinned Python packages, and the Sedona jars from Maven Central.
# A second run with nothing changed takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SSM_VENV:-$ROOT/.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

say() { printf '[setup] %s\n' "$*"; }

# 1. System packages: a JDK 17 for Spark, Maven for the jars.
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[setup] error: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 2
  fi
fi

# 2. The virtualenv, reinstalled only when the pins or setup.py change.
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
stamp="$VENV/.ssm-spark-setup"
want=$(cat requirements/constraints.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (pinned in requirements/constraints.txt)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==25.3" "setuptools==80.9.0" wheel
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[spark,ee,s3,gcs,azure,test]"
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 2; }
  echo "$want" > "$stamp"
fi

# 3. The Sedona jars (fetched once, verified every time).
"$VENV/bin/python" -m ssm_spark.jars fetch >/dev/null
[ "${1:-}" = --test ] && "$VENV/bin/python" -m ssm_spark.jars fetch --s3a >/dev/null  # S3A (s3a://, 10 MB): the tests read through it
# 4. For the tests only (`scripts/setup.sh --test`, as `make test` runs it): the tests' S3 server,
#    SeaweedFS (its S3 gateway), built from the Go module proxy once and cached
#    (tests/test_object_storage.py starts it on loopback). `go install` refuses the module (its go.mod has
#    replace directives), so it is built inside its downloaded module folder. SSM_SKIP_WEED=1 skips it.
#    The first build takes minutes (18 min on a loaded 2-core machine); `make demo` does not need it.
[ "${1:-}" = --test ] || SSM_SKIP_WEED=1
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
WEED_DIR=${SSM_WEED_DIR:-$HOME/.cache/ssm-spark/go}
if [ "${SSM_SKIP_WEED:-0}" != 1 ] && [ "$(cat "$WEED_DIR/weed.version" 2>/dev/null)" != "$WEED_VERSION" ]; then
  command -v go >/dev/null 2>&1 || { echo "[setup] error: go (>= 1.26) is needed to build the tests' S3 server (SeaweedFS); install it, or set SSM_SKIP_WEED=1" >&2; exit 2; }
  say "building SeaweedFS $WEED_VERSION (the tests' S3 server) into $WEED_DIR (once; a few minutes)"
  mod=$(go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  src="$WEED_DIR/src"
  rm -rf "$src" && mkdir -p "$WEED_DIR" && cp -r "$mod" "$src" && chmod -R u+w "$src"
  (cd "$src" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$WEED_DIR/weed.tmp" ./weed)
  mv "$WEED_DIR/weed.tmp" "$WEED_DIR/weed" && rm -rf "$src"
  echo "$WEED_VERSION" > "$WEED_DIR/weed.version"
fi

# 4b. For the tests only (--test): the tests' GCS and Azure Blob emulators (tests/test_object_storage_gcs_azure.py
#    starts them on loopback): fake-gcs-server, built from the Go module proxy once and cached beside SeaweedFS
#    (SSM_SKIP_FAKE_GCS=1 skips it), and Azurite (Microsoft's Blob emulator, from npm) installed once into
#    $SSM_AZURITE_DIR (default ~/.cache/ssm-spark/azurite; SSM_SKIP_AZURITE=1 skips it). Azurite 3.35.0: the
#    last release that runs on Node 20 (3.36 needs Node >= 21). About 2 min and 1 min the first time.
[ "${1:-}" = --test ] || { SSM_SKIP_FAKE_GCS=1; SSM_SKIP_AZURITE=1; }
FAKE_GCS_VERSION=v1.56.1
if [ "${SSM_SKIP_FAKE_GCS:-0}" != 1 ] && [ "$(cat "$WEED_DIR/fake-gcs-server.version" 2>/dev/null)" != "$FAKE_GCS_VERSION" ]; then
  command -v go >/dev/null 2>&1 || { echo "[setup] error: go (>= 1.26) is needed to build the tests' GCS emulator (fake-gcs-server); install it, or set SSM_SKIP_FAKE_GCS=1" >&2; exit 2; }
  say "building fake-gcs-server $FAKE_GCS_VERSION (the tests' GCS emulator) into $WEED_DIR (once; a minute or two)"
  mkdir -p "$WEED_DIR/gobin.tmp"
  GOBIN="$WEED_DIR/gobin.tmp" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
  mv "$WEED_DIR/gobin.tmp/fake-gcs-server" "$WEED_DIR/fake-gcs-server" && rm -rf "$WEED_DIR/gobin.tmp"
  echo "$FAKE_GCS_VERSION" > "$WEED_DIR/fake-gcs-server.version"
fi
AZURITE_VERSION=3.35.0
AZURITE_DIR=${SSM_AZURITE_DIR:-$HOME/.cache/ssm-spark/azurite}
if [ "${SSM_SKIP_AZURITE:-0}" != 1 ] && [ "$(cat "$AZURITE_DIR/azurite.version" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing nodejs npm with apt-get (the tests' Azure Blob emulator, Azurite)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
      echo "[setup] error: node and npm are needed to install the tests' Azure Blob emulator (Azurite); install them (Debian: apt-get install nodejs npm), or set SSM_SKIP_AZURITE=1" >&2
      exit 2
    fi
  fi
  say "installing Azurite $AZURITE_VERSION (the tests' Azure Blob emulator) into $AZURITE_DIR (once)"
  rm -rf "$AZURITE_DIR.tmp" && mkdir -p "$AZURITE_DIR.tmp"
  npm install --prefix "$AZURITE_DIR.tmp" --no-audit --no-fund --omit=dev --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
  "$AZURITE_DIR.tmp/node_modules/.bin/azurite-blob" --version >/dev/null
  rm -rf "$AZURITE_DIR" && mv "$AZURITE_DIR.tmp" "$AZURITE_DIR"
  echo "$AZURITE_VERSION" > "$AZURITE_DIR/azurite.version"
fi

# 5. For the tests only (--test): headless Chromium and its driver (Debian's chromium, chromium-driver), that
#    tests/test_browser.py drives through selenium; skipped when both are installed.
if [ "${1:-}" = --test ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium chromium-driver with apt-get (the browser test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[setup] error: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver; install them (Debian: apt-get install chromium chromium-driver)" >&2
    exit 2
  fi
fi

say "ready: $VENV ($("$VENV/bin/python" -c 'import pyspark, sedona, xgboost; print("pyspark", pyspark.__version__, "sedona", sedona.version, "xgboost", xgboost.__version__)'))"
