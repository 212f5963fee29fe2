# The README's two commands: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: setup demo test test-long test-fast jars pack cluster-start cluster-stop clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/ssm-spark demo --output $(OUT)

# the tests also need their S3 server (SeaweedFS, built once with go): setup.sh --test
test:
	@bash scripts/setup.sh --test
	$(PY) -m pytest -m "not long" --durations=25

# the tests that take minutes each (pytest.ini: long), left out of `make test`
test-long:
	@bash scripts/setup.sh --test
	$(PY) -m pytest -m long

test-fast:
	@bash scripts/setup.sh --test
	$(PY) -m pytest -m "not slow"

jars:
	$(PY) -m ssm_spark.jars fetch

# the wheel and the packed environment for spark-submit --archives (deploy/spark-submit/)
pack: setup
	@bash scripts/pack_env.sh

# a standalone master + 2 workers on loopback (deploy/standalone/cluster.sh)
cluster-start: setup
	@deploy/standalone/cluster.sh start

cluster-stop:
	@deploy/standalone/cluster.sh stop

clean:
	rm -rf out spark-warehouse metastore_db derby.log .pytest_cache build dist
