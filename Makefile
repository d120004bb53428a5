# custembed: the two commands of the README.
#   make demo   set up .venv and run the whole pipeline on the embedded default
#   make test   set up .venv and run the test suite
# A developer's everyday targets:
#   make test-fast   the suite without `slow` and `cluster` tests (the inner loop, a few minutes)
#   make lint        ruff check + ruff format --check
#   make typecheck   mypy on encoders/, udfs/, training/ (configured in mypy.ini)
#   make ci          what CI runs: lint, typecheck, then the whole suite
#   make airflow-venv  Airflow in its own .venv-airflow, for tests/test_deploy.py's DAG check
#                      (CUSTEMBED_AIRFLOW_PYTHON=$PWD/.venv-airflow/bin/python; .ci/run sets it)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINTED := custembed tests benchmarks deploy notebooks
# Airflow's pins would fight ours: it gets its own environment, used only to load the DAG
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: demo test test-fast setup java clean lint format typecheck ci bench airflow-venv

java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || \
	  { echo "Java not found: install a Java 17 runtime (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,report,dev]'
	touch $(STAMP)

setup: java $(STAMP)

demo: setup
	$(BIN)/custembed demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not cluster"

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

ci: lint typecheck test

# Airflow's constraints file for this version and Python when it can be fetched, else only
# apache-airflow pinned and pip resolves the rest (the constraints live on GitHub, not PyPI).
$(AIRFLOW_STAMP):
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	py=$$($(AIRFLOW_VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	url=https://raw.githubusercontent.com/apache/airflow/constraints-$(AIRFLOW_VERSION)/constraints-$$py.txt; \
	if $(AIRFLOW_VENV)/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
	  "$$url" 2>/dev/null; then c="-c $$url"; else c=""; echo "airflow-venv: no $$url, pinning apache-airflow only"; fi; \
	$(AIRFLOW_VENV)/bin/pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" $$c
	touch $@

airflow-venv: $(AIRFLOW_STAMP)

bench: setup  # every benchmark, one at a time, into benchmarks/results-<date>.md (tens of minutes)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf lake spark-warehouse metastore_db derby.log
