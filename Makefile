# capillary-aep-worker — the two commands a newcomer needs:
#   make run    start a local Kafka broker and the AEP sandbox, stream sample events, print a summary
#   make test   run the whole test suite (unit + integration against the real broker and sandbox)
# Needs only Python 3.11, Java 17+ and Maven; everything else is installed here.

SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
KAFKA := $(UV) run python deploy/local/kafka/broker.py
PYTEST_ARGS ?=
# What `make test-compiled` runs: everything that exercises the compiled modules' behaviour.
COMPILED_TESTS ?= tests/unit tests/integration/test_worker_happy.py tests/integration/test_routing_e2e.py tests/integration/test_delivery.py tests/integration/test_batch_linger.py tests/chaos/test_chaos.py::test_poison_corpus

.PHONY: help setup compiled test-compiled run test unit integration lint typecheck kafka-jars kafka-up kafka-down kafka-status sandbox clean bench chaos

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## install uv (if missing), the locked Python dependencies and the Kafka broker jars
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	$(KAFKA) fetch

run: setup ## the main job, locally: broker + sandbox + sample stream + worker until drained
	$(UV) run python deploy/local/demo.py $(DEMO_ARGS)

test: setup ## the whole test suite
	$(UV) run pytest $(PYTEST_ARGS)

unit: ## unit tests only (no broker)
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

integration: setup ## integration tests only
	$(UV) run pytest tests/integration $(PYTEST_ARGS)

compiled: setup ## compile the per-record modules with mypyc into .cache/compiled (needs a C compiler)
	$(UV) run --frozen --group compile python deploy/mypyc/build.py

test-compiled: compiled ## unit tests, pipeline integration tests and the poison corpus against the compiled build
	CAPAEP_COMPILED_TREE=.cache/compiled $(UV) run --frozen --group compile pytest $(COMPILED_TESTS) $(PYTEST_ARGS)

bench: compiled ## the worker's benchmark (~12 min): CPU per event, floor, scaling, memory, latency
	$(UV) run python -m tests.benchmarks.bench_worker $(BENCH_ARGS)

CHAOS_REPORT ?= .cache/chaos-report.md
chaos: setup ## the fault-injection suite at full size (~12 min): one line per scenario, README table in CHAOS_REPORT
	CHAOS_FULL=1 CHAOS_REPORT=$(CHAOS_REPORT) $(UV) run pytest tests/chaos -q $(PYTEST_ARGS)

lint: ## ruff and mypy (strict) on worker/
	$(UV) run ruff check worker tests deploy
	$(UV) run mypy

kafka-jars: ## fetch the broker jars from Maven Central into deploy/local/kafka/.cache
	$(KAFKA) fetch

KAFKA_PORT ?= 9092
kafka-up: ## start a local broker on 127.0.0.1:$(KAFKA_PORT), data kept in deploy/local/kafka/.cache/data
	$(KAFKA) start --port $(KAFKA_PORT) --data-dir deploy/local/kafka/.cache/data $(KAFKA_ARGS)

kafka-down: ## stop it
	$(KAFKA) stop

kafka-status:
	$(KAFKA) status

sandbox: ## run the AEP sandbox on 127.0.0.1:8765
	$(UV) run capillary-aep sandbox --port 8765

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis deploy/local/kafka/.cache
