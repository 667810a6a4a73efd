# Two entry points: `make demo` (set up + run the end-to-end demo) and `make test`.
# Torch is installed first and on its own, so pip never resolves a bare `torch`
# to a multi-GB CUDA build; pass TORCH=... to pick another build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo demo-omni test lint clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,hf,track,eval,lora,ner,vision,speech]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

demo-omni: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo_omni.sh

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean-demo:
	rm -rf demo
