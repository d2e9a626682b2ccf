# Two commands on a fresh machine with only Python: `make demo` and `make test`.
# torch is installed first and pinned (the CPU wheel on disk); otherwise pip resolves the newest torch
# with gigabytes of CUDA packages.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

REF    := bench/reference/.venv
BENCH_ARGS ?=

.PHONY: demo demo-llm test lint clean install install-dev bench bench-reference

demo: install
	$(BIN)/python -m xsub experiment=demo

# The decoder demo: pretrain the embedded decoder synth-gpt, prune its heads per language, compare.
demo-llm: install
	$(BIN)/python -m xsub experiment=demo-llm

# The suite and the lint: one command, as CI runs it.
test: install-dev lint
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# Benchmarks against the original projects' stack (bench/README.md): not part of `make test` (smoke runs are).
# `make bench BENCH_ARGS=--quick` for the short version.
# The embedded workload prunes the demo's finetuned model: the demo reuses it when it exists (seconds).
bench: install-dev bench-reference
	$(BIN)/python -m xsub experiment=demo
	$(BIN)/python bench/importance.py $(BENCH_ARGS)
	$(BIN)/python bench/prune_end_to_end.py $(BENCH_ARGS)
	$(BIN)/python bench/cka.py $(BENCH_ARGS)
	$(BIN)/python bench/decoder_importance.py $(BENCH_ARGS)
	$(BIN)/python bench/lape_overhead.py $(BENCH_ARGS)

# The reference environment: transformers 4.x (head_mask) on the same pinned torch.
bench-reference: $(REF)/.installed

$(REF)/.installed: bench/reference/requirements.txt
	$(PYTHON) -m venv $(REF)
	$(REF)/bin/pip install -q $(TORCH)
	$(REF)/bin/pip install -q -r bench/reference/requirements.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) $(REF) bench/.cache artifacts outputs .pytest_cache .ruff_cache
