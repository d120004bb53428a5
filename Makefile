# custembed: the two commands of the README.
#   make demo   set up .venv and run the whole pipeline on the embedded default
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup java clean lint bench

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

lint: setup
	$(BIN)/ruff check custembed tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_sequences.py

clean:
	rm -rf lake spark-warehouse metastore_db derby.log
