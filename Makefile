# One place for the commands the README promises. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The contract checks that run in Node.js (the AsyncAPI parser, ajv), pinned by package-lock.json.
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: demo check lint types test bench schemas js clean

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# Without npm the tests that need these modules skip, but not in CI (CI=true): there they fail,
# so this fails first, with the reason. No package here needs an install script.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	@if command -v npm >/dev/null; then \
		echo "npm ci in $(JS)"; \
		cd $(JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	elif [ "$$CI" = true ]; then \
		echo "npm is not installed: CI needs it for the contract checks in $(JS)" >&2; exit 1; \
	else \
		echo "npm is not installed: the AsyncAPI and ajv checks will be skipped" >&2; \
	fi

js: $(JS_STAMP)  ## the Node.js contract checkers (AsyncAPI parser, ajv) into tests/js/node_modules

demo: $(STAMP)  ## the whole loop, in one process
	$(BIN)/self-optimiser demo

check: lint types test  ## every gate: ruff, the rooms' import contracts, mypy --strict, pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy --strict worker schemas

test: $(STAMP) $(JS_STAMP)
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks side by side, in-process and end to end (needs RabbitMQ, ~20 min); writes bench/results/
	$(BIN)/python -m bench

schemas: $(STAMP)  ## regenerate schemas/json/ and schemas/asyncapi.json from the Structs
	$(BIN)/python -m schemas.jsonschema
	$(BIN)/python -m schemas.asyncapi

clean:
	rm -rf $(VENV) $(JS)/node_modules .mypy_cache .pytest_cache .ruff_cache .hypothesis *.egg-info
