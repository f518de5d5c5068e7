# Quick start:  make run   (set up, then chipfit's main job on the built-in default)
#               make test  (set up, then lint, type-check and the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
# Every package make installs, pinned with hashes (docs/setup.md); `make lock` rewrites it.
LOCK    = requirements.lock
# torch's CPU build is a local wheel on this project's machines: the resolver must see it too
FIND_LINKS ?= /opt/wheels

.PHONY: setup lock run test test-latest test-slow lint browser bench clean

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# A new venv from the lock alone: exact versions, hashes checked, no resolver, nothing left over
$(STAMP): pyproject.toml $(LOCK) tools/lockcheck.py
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/lockcheck.py $(LOCK)
	$(BIN)/python -c "from chipfit.models.tinylm import tinylm_pretrained as t; t()"  # serving's quality probe (~1 min, cached)
	touch $(STAMP)

setup: $(STAMP)

# the main job: plan digits-cnn (real data, accuracy by emulation) over the catalog; writes plan-report.html
run: $(STAMP)
	$(BIN)/chipfit plan digits-cnn --max-accuracy-drop 0.5 --chips 1,2,4 --html plan-report.html

# Refresh the lock: the newest versions pyproject.toml's ranges allow, with hashes (run after
# changing a dependency, or deliberately after `make test-latest` passes)
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	pin=$$(grep -oE '^uv==[^ ]+' $(LOCK) 2>/dev/null); .venv-lock/bin/python -m pip install -q "$${pin:-uv}"
	.venv-lock/bin/uv pip compile pyproject.toml requirements-build.in --extra dev --generate-hashes \
		--python-version 3.11 --find-links $(FIND_LINKS) --emit-find-links \
		--custom-compile-command 'make lock' --quiet -o $(LOCK)
	rm -rf .venv-lock

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples tools
	$(BIN)/ruff format --check src tests benchmarks examples tools
	$(BIN)/mypy

# headless Chromium (Debian's package) for the HTML report's browser test
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest -q

# Drift made visible: a scratch venv with the newest versions pyproject.toml allows, the whole
# suite there, and what moved against the lock. CI keeps the lock; this is never part of it.
test-latest: browser
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q --no-cache-dir -e '.[dev]'
	.venv-latest/bin/python tools/lockcheck.py --diff $(LOCK)
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

# Opt-in exhaustive sweeps (minutes per format); not run in CI.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/formats.py
	$(BIN)/python benchmarks/trace.py
	$(BIN)/python benchmarks/fidelity_cpu.py
	$(BIN)/python benchmarks/estimate_speed.py
	$(BIN)/python benchmarks/emulate.py
	$(BIN)/python benchmarks/bf16_order.py
	$(BIN)/python benchmarks/quant.py
	$(BIN)/python benchmarks/amp.py
	$(BIN)/python benchmarks/plan.py
	$(BIN)/python benchmarks/serving_published.py
	$(BIN)/python benchmarks/serving_speed.py
	$(BIN)/python benchmarks/serving_quality.py
	$(BIN)/python benchmarks/sparsity.py

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build dist src/*.egg-info
