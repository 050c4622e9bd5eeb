# Two commands on a fresh machine: `make demo` (set up + run the daily pipeline on the demo data) and
# `make test` (set up + run the test suite). `make ui` opens the Dagster UI on the same instance.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup setup-dev demo test test-fast ui e2e-deps pg-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/retail-dagster run

test: setup-dev e2e-deps pg-deps
	$(BIN)/flake8 retail_dagster retail_dagster_tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup-dev
	$(BIN)/python -m pytest -q -m "not slow"

# headless Chromium for the end-to-end UI test (Debian packages); skipped quietly where apt is not available
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the UI screenshot test will be skipped")

# PostgreSQL server binaries for the deployment tests (Debian's postgresql package; the tests start their own
# server as an unprivileged user on a loopback port). Skipped quietly where apt is not available, and those
# tests then skip with the reason.
pg-deps:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "postgresql not installed: the deployment tests will be skipped")

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf out data .dagster_home
