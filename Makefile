# `make run`: the package alone in .venv, then `webhook-router up --demo` (needs the services).
# `make test`: the package with its dev tools in .venv, then lint, types and the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint run clean python-version

python-version:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "webhook-router needs Python >= 3.11: run with PYTHON=python3.11 (or newer)"; exit 1; }

# the package only: what running needs
$(VENV)/.installed-run: pyproject.toml | python-version
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# the package and the `dev` extra: test, lint and type tools
$(VENV)/.installed-dev: pyproject.toml | python-version
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed-dev

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(VENV)/.installed-run
	$(BIN)/webhook-router up --demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
