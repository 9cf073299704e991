# rmserve developer entry points. Every target creates or updates .venv itself.
#   make serve   serve the default model on http://127.0.0.1:8000 (SERVE_ARGS="--port 9000 ..." to change)
#   make test    lint + the default test suite
#   make proto   regenerate the gRPC stubs (clients/python/rmserve_client/_proto) from proto/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := pyproject.toml clients/python/pyproject.toml trainer/pyproject.toml requirements/constraints.txt requirements/dev.txt
SERVE_ARGS ?=

.PHONY: install serve test lint clean proto bench bench-quick

$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@# torch first, pinned: the CPU wheel on local disk; an unpinned torch pulls a CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt torch
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/dev.txt -e . -e clients/python -e trainer
	@touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/rmserve serve $(SERVE_ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

# make bench         the full benchmark (bench/run.py; 10-20 min on 2 cores) -> bench/results/
# make bench-quick   a small model and short measurements (~3 min) -> bench/results/quick/
#   BENCH_ARGS="--server-arg=--max-wait-ms=10 --threads 2 ..." adds options (python -m bench.run --help)
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(PY) -m bench.run --quick $(BENCH_ARGS)

proto: install
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
