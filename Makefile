# Each target sets itself up: a virtual environment in .venv with the package installed editable.
# torch is pinned to 2.13.0 in the [dev] extra, so set-up takes the small CPU wheel, not the CUDA stack.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

$(BIN)/gradcheck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,docs]"
	touch $@

.PHONY: demo test test-slow lint bench docs
# The default preset vanishes on purpose, so its exit code is 1 (a finding); only 2 is a failure here.
demo: $(BIN)/gradcheck
	$(BIN)/gradcheck demo --depth 50 || [ $$? -eq 1 ]

lint: $(BIN)/gradcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The slow cases (pytest -m slow: the deepest models); CI runs them after `make test`.
test-slow: $(BIN)/gradcheck
	$(BIN)/python -m pytest -m slow

# Overhead, start-up, scale and memory, as ratios measured side by side (see benchmarks/README.md).
bench: $(BIN)/gradcheck
	$(BIN)/python benchmarks/run.py --write-results

# The documentation site from docs/ into site/ (mkdocs.yml); --strict fails on a broken link, image or anchor.
docs: $(BIN)/gradcheck
	$(BIN)/python -m mkdocs build --strict
