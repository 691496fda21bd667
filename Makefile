# Two entry points for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench setup clean generate

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("kpi-monitor needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## Run the monitor with the embedded broker and demo traffic; metrics on http://127.0.0.1:6066/metrics
run: $(STAMP)
	$(BIN)/kpi-monitor run --demo

## All tests: pure, agent (Faust test_context), end-to-end on the embedded broker, and the ops
## stack on real Prometheus/Alertmanager (Debian packages, installed by scripts/install-ops-tools.sh)
test: $(STAMP) lint
	bash scripts/install-ops-tools.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

## Lint, format check and types (pinned in the test extra; configured in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Regenerate Prometheus rules, Grafana alerting and dashboards from ops/kpi-rules.yaml
generate: $(STAMP)
	$(BIN)/kpi-monitor rules generate

## Throughput and latency figures (not a test; several minutes)
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
