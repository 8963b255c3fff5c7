# One place for the commands the README promises. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo check lint types test bench schemas clean

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(STAMP)  ## the whole loop, in one process
	$(BIN)/self-optimiser demo

check: lint types test  ## every gate: ruff, mypy --strict, pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy --strict worker schemas

test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks side by side, in-process and end to end (needs RabbitMQ, ~20 min); writes bench/results/
	$(BIN)/python -m bench

schemas: $(STAMP)  ## regenerate schemas/json/ from the Structs
	$(BIN)/python -m schemas.jsonschema

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis *.egg-info
