# The README's two commands: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: setup demo test test-fast jars clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/ssm-spark demo --output $(OUT)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

jars:
	$(PY) -m ssm_spark.jars fetch

clean:
	rm -rf out spark-warehouse metastore_db derby.log .pytest_cache
