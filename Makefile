# BUSGen Platform: two commands do it all.
#   make demo  -> creates .venv if missing, installs, runs the whole pipeline on CPU, writes a report
#   make test  -> creates .venv if missing, installs test deps, runs the fast test suite
# Installs are idempotent: a stamp file is rebuilt only when pyproject.toml or the constraints change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.busgen-installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow lint bench install clean help

help:
	@echo "make demo   - run the whole pipeline on CPU and write $(DEMO_DIR)/report.md"
	@echo "make test   - ruff (lint + format check), then the fast test suite (make test-slow for everything)"
	@echo "make bench  - run every benchmark under evals/benchmarks/"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, from the pinned CPU wheel: an unpinned torch would pull GBs of CUDA builds.
$(STAMP): pyproject.toml constraints-cpu.txt | $(PY)
	$(PIP) install -q torch==2.13.0 2>&1 | grep -v "is ignored: it is neither" || true
	$(PIP) install -q -c constraints-cpu.txt -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import busgen, ray, torch, diffusers, pyarrow, peft, sklearn, typer, ruff; assert torch.__version__.startswith('2.13.0')"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/busgen demo --out $(DEMO_DIR)

# lint first: a style slip fails in seconds, before the 7-minute test run
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q --slow $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in evals/benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
