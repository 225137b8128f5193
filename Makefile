# Each target sets itself up: a virtual environment in .venv with the package installed editable.
# The [dev] extra pins torch==2.13.0: the version, not the build. Which build comes is the index's choice:
# on the public PyPI, Linux gets the CUDA build and NVIDIA's libraries, several GB.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# TORCH_INDEX: a package index set-up reads besides pip's own, for the torch build. Empty by default: pip's
# configuration alone decides, as before. `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes
# the CPU build, 2.13.0+cpu, which the pin accepts and pip ranks above the plain 2.13.0: a ~190 MB download,
# a ~1.3 GB .venv. Set-up runs when .venv/bin/gradcheck is missing or older than pyproject.toml: on a fresh
# clone, or after rm -rf .venv.
TORCH_INDEX ?=

$(BIN)/gradcheck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[dev,plot,docs]"
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
