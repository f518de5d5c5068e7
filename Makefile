# Quick start:  make run   (set up, then chipfit's main job on the built-in default)
#               make test  (set up, then lint, type-check and the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: setup run test test-slow lint browser bench clean

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# the main job: plan digits-cnn (real data, accuracy by emulation) over the catalog; writes plan-report.html
run: $(STAMP)
	$(BIN)/chipfit plan digits-cnn --max-accuracy-drop 0.5 --chips 1,2,4 --html plan-report.html

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# headless Chromium (Debian's package) for the HTML report's browser test
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest -q

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

clean:
	rm -rf $(VENV) build dist src/*.egg-info
