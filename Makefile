# Foundry: `make pipeline` runs the main job, `make test` the tests. Both create .venv when missing.
SHELL := /bin/bash
export OMP_WAIT_POLICY := PASSIVE
# A warm inductor cache turns a 20-30 s cold compile into ~2 s on later runs; kept outside the repo.
export TORCHINDUCTOR_CACHE_DIR ?= $(HOME)/.cache/foundry/inductor
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: install data pipeline test test-all bench lint format

$(STAMP):
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch pinned: an unpinned torch pulls several GB of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	rm -f .venv/.installed-*
	touch $@

install: $(STAMP)

data/shakespeare/train/manifest.jsonl: | $(STAMP)
	$(PY) -m foundry.data.make_text --out data/shakespeare

data: data/shakespeare/train/manifest.jsonl

# The whole chain (its own datasets included) -> runs/pipeline/report.html
pipeline: install
	$(PY) experiments/pipeline.py pipeline

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest bench/ -q

lint: install
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: install
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
