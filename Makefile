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
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[dev,plot,docs,integrations]"
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

# The [zoo] extra (torchvision, timm) goes into a folder of its own that only `make test-zoo` reads, not into
# .venv: the torchvision wheel on the package index is a CUDA build that fails to import beside the CPU torch,
# and transformers and Lightning import torchvision whenever it is installed. --no-deps: what the two need
# (torch, numpy, pillow, huggingface_hub, safetensors) is in .venv already; tests/zoo/torchvision_import.py
# defines the operators the failing import lacks. About 42 MB.
ZOO_PACKAGES := $(VENV)/zoo-packages
ZOO_REQUIREMENTS = $$($(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['zoo'])")

$(ZOO_PACKAGES): pyproject.toml $(BIN)/gradcheck
	$(BIN)/python -m pip install --quiet --no-deps --upgrade $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) --target $@ $(ZOO_REQUIREMENTS)
	touch $@

.PHONY: test-zoo
# Real architectures from torchvision, timm and transformers (pytest -m zoo, tests/test_zoo.py, issue 22): 1 to 3
# minutes on 2 cores; CI runs them after the slow cases.
test-zoo: $(ZOO_PACKAGES)
	PYTHONPATH=$(ZOO_PACKAGES) $(BIN)/python -m pytest -m zoo

# The oldest torch pyproject.toml accepts ("torch>=X"), which CI tests too (issue 23): the default suite
# (pytest's addopts: not slow, not zoo) on it, in a virtual environment outside the clone, built once and then
# reused (FLOOR_VENV/complete marks it whole): torch from pip's index, on Linux the CUDA build (~3 GB; set
# TORCH_INDEX for the CPU build). Every run installs this clone (editable) and the other requirements, the dev
# extra's but torch's, into it, under FLOOR_CONSTRAINTS. TORCH_FLOOR=2.4.1 picks a patch release.
TORCH_FLOOR ?= $(shell sed -n 's/^ *"torch>=\([0-9.]*\).*/\1/p' pyproject.toml)
FLOOR_VENV ?= $(HOME)/.cache/gradcheck/torch-$(TORCH_FLOOR)
FLOOR_BIN := $(FLOOR_VENV)/bin
FLOOR_REQUIREMENTS = $$($(FLOOR_BIN)/python -c "import tomllib; print(*(r for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev'] if not r.startswith('torch')))")
# torch stays at the floor; transformers 5 needs torch 2.6, which it checks when a model is built rather than
# declaring it, so the floor takes transformers 4.
FLOOR_CONSTRAINTS = "torch==$(TORCH_FLOOR).*" "transformers<5"

$(FLOOR_VENV)/complete:
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_BIN)/python -m pip install --quiet --upgrade pip
	$(FLOOR_BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "torch==$(TORCH_FLOOR).*"
	touch $@

.PHONY: test-floor
test-floor: $(FLOOR_VENV)/complete
	printf '%s\n' $(FLOOR_CONSTRAINTS) > $(FLOOR_VENV)/constraints.txt
	$(FLOOR_BIN)/python -m pip install --quiet -c $(FLOOR_VENV)/constraints.txt -e ".[plot,docs,integrations]" $(FLOOR_REQUIREMENTS)
	$(FLOOR_BIN)/python -m pytest

# Overhead, start-up, scale and memory, as ratios measured side by side (see benchmarks/README.md).
bench: $(BIN)/gradcheck
	$(BIN)/python benchmarks/run.py --write-results

# The documentation site from docs/ into site/ (mkdocs.yml); --strict fails on a broken link, image or anchor.
docs: $(BIN)/gradcheck
	$(BIN)/python -m mkdocs build --strict
