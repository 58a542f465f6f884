# The two commands (README): `make run` (set up + the local retrain on the embedded default) and `make test`.
# Everything installs into ./.venv; platform state goes to $(M3_HOME) (default ./.m3).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# The environment defaults, platform and hermetic alike, from the one table (values already set win).
include flows/environment.env
export $(shell sed -n 's/^\([A-Z_][A-Z0-9_]*\) ?= .*/\1/p' flows/environment.env)

.PHONY: setup run run-quick run-long test test-all lint clean
# CI runs everything; elsewhere the tests marked `slow` wait for `make test-all`.
PYTEST_MARKS := $(if $(filter true,$(CI)),,not slow)

setup: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml scripts/system-packages.sh scripts/dev-tools.sh scripts/build-llm.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	bash scripts/system-packages.sh
	bash scripts/dev-tools.sh
	bash scripts/build-llm.sh $(PY)
	touch $(STAMP)

run: setup
	$(VENV)/bin/m3 retrain

run-quick: setup
	$(VENV)/bin/m3 retrain --quick

# The embedded default plus the long-document stage (positions to 8192, long training, the long-document eval):
# hours on 2 CPU cores (README, "Long documents").
run-long: setup
	$(VENV)/bin/m3 retrain --params configs/retrain-long.json

test: setup
	$(PY) -m pytest -q -m "$(PYTEST_MARKS)"

# The slow tests too (CI runs them when time allows).
test-all: setup
	$(PY) -m pytest -q -m ''

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
