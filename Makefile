# BUSGen Platform: two commands do it all.
#   make demo  -> creates .venv if missing, installs, runs the whole pipeline on CPU, writes a report
#   make test  -> creates .venv if missing, installs test deps, runs the fast test suite (make test-all: everything)
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

.PHONY: demo test test-all test-slow lint bench install browser clean help architecture

help:
	@echo "make demo         - run the whole pipeline on CPU and write $(DEMO_DIR)/report.md"
	@echo "make test         - ruff (lint + format check), then tests/unit, tests/ray and the fast tests/e2e"
	@echo "make test-all     - every test, the slow ones too (full Tune suites, Serve + Chromium, multi-node cluster)"
	@echo "make bench        - run every benchmark under evals/benchmarks/"
	@echo "make architecture - rewrite docs/ARCHITECTURE.md from the code's docstrings"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: an unpinned torch (PyPI's Linux wheel) is the CUDA build, several GB. Without a GPU
# (no working nvidia-smi) the CPU build comes from, in order: a torch==X+cpu wheel that pip's own
# configuration finds (find-links such as PIP_FIND_LINKS=/opt/wheels, or an extra index), the PyTorch
# CPU index, else PyPI with a warning. Every try has a 20 s timeout and one retry: never a hang.
# With a GPU, PyPI's default (CUDA) build. An installed torch 2.13.0 is kept as it is.
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU = nvidia-smi -L >/dev/null 2>&1

$(STAMP): pyproject.toml constraints-cpu.txt | $(PY)
	@if $(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION) already installed"; \
	elif $(HAS_GPU); then \
		echo "GPU found: torch $(TORCH_VERSION) from PyPI (CUDA build)"; \
		$(PIP) install -q torch==$(TORCH_VERSION); \
	elif $(PIP) install -q --timeout 20 --retries 1 torch==$(TORCH_VERSION)+cpu 2>/dev/null; then \
		echo "torch $(TORCH_VERSION)+cpu from a configured wheel or index"; \
	elif $(PIP) install -q --timeout 20 --retries 1 --index-url $(TORCH_CPU_INDEX) torch==$(TORCH_VERSION); then \
		echo "torch $(TORCH_VERSION) CPU build from $(TORCH_CPU_INDEX)"; \
	else \
		echo "warning: $(TORCH_CPU_INDEX) unreachable: installing torch $(TORCH_VERSION) from PyPI," \
			"which on Linux is the CUDA build (several GB). Set TORCH_CPU_INDEX or PIP_FIND_LINKS to a CPU wheel." >&2; \
		$(PIP) install -q torch==$(TORCH_VERSION); \
	fi
	$(PIP) install -q -c constraints-cpu.txt -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import busgen, ray, torch, diffusers, pyarrow, peft, sklearn, typer, ruff; assert torch.__version__.startswith('$(TORCH_VERSION)')"
	@$(HAS_GPU) || $(PY) -c "import torch; torch.version.cuda and print('warning: torch', torch.__version__, 'is a CUDA build on a machine without a GPU')"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/busgen demo --out $(DEMO_DIR)

# lint first: a style slip fails in seconds, before the test run
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The playground's browser tests: the Playwright wheel from pip, Chromium from Debian when missing
# (no Playwright browser download). Where neither can be installed, those tests skip and say why.
browser: $(STAMP)
	@$(PY) -c "import playwright" 2>/dev/null || $(PIP) install -q playwright || echo "playwright not installed"
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium; } || \
	  echo "no Chromium installed (apt-get failed): the browser tests will be skipped"

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: lint browser
	$(PY) -m pytest -q --slow $(PYTEST_ARGS)

test-slow: test-all

architecture: $(STAMP)
	$(PY) tests/helpers/architecture.py

bench: $(STAMP)
	@for b in evals/benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# GPU benchmarks (img/s, TFLOP/s, MFU per speed switch). No install step and no Ray: they also run on bare
# GPU machines (torch + diffusers + pydantic, see ../shared/NOTES.md); at smoke size on CPU.
# Extra flags for both: make bench-gpu BENCH_GPU_ARGS="--peak-tflops 989"
BENCH_PY = $(or $(wildcard $(PY)),python3)
.PHONY: bench-gpu
bench-gpu:
	PYTHONPATH=platform$${PYTHONPATH:+:$$PYTHONPATH} $(BENCH_PY) evals/benchmarks/gpu_train.py $(BENCH_GPU_ARGS)
	PYTHONPATH=platform$${PYTHONPATH:+:$$PYTHONPATH} $(BENCH_PY) evals/benchmarks/gpu_sample.py $(BENCH_GPU_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
