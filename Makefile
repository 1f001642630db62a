# Two commands do all set-up on a fresh machine:  `make demo` (the main job) and `make test`.
# Where no GPU is present the CPU build of torch 2.13.0 is installed first, so pip never pulls CUDA wheels.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo score bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; \
	 else $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[dev,deepspeed]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check rlcal tests benchmarks
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check rlcal tests benchmarks

demo: $(STAMP)
	$(BIN)/rlcal demo --out outputs/demo

score: $(STAMP)
	$(BIN)/rlcal score examples/predictions.jsonl --out outputs/score/metrics.json

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_grading.py
	$(BIN)/python benchmarks/bench_bootstrap.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_world_pretrain.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
