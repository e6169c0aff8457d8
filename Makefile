# Otesse Auth — the two commands are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-12)
PEER := bench/peer
PEER_STAMP := $(PEER)/node_modules/.installed-$(shell sha256sum $(PEER)/package-lock.json | cut -c1-12)

.PHONY: help run test test-containers lint proto lock venv bench-venv stores browser haproxy wrk peer bench bench-local bench-peer soak clean

help: ## list every target with what it does
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 18

run: venv stores ## start every service locally and print how to try the flow
	@scripts/run-local

test: venv stores browser haproxy wrk peer ## ruff, mypy, import contracts and the whole pytest suite
	@scripts/run-tests

test-containers: venv ## build the image, run docker-compose.yml and check it (scripts/test-containers)
	@scripts/test-containers

venv: $(STAMP) ## create .venv/ from the hash-pinned requirements.lock (the editable install)

$(STAMP): requirements.lock pyproject.toml
	@command -v python3.11 >/dev/null || command -v python3 >/dev/null || { echo "python3.11 is missing: install Python 3.11"; exit 1; }
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	@$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-12)

bench-venv: $(BENCH_STAMP) ## .venv-bench: the same pins on Debian's /usr/bin/python3, where the benchmarks run (bench/README.md)

$(BENCH_STAMP): requirements.lock pyproject.toml
	@test -x /usr/bin/python3 || { echo "/usr/bin/python3 is missing: install Debian's python3 and python3-venv (the benchmarks run on it)"; exit 1; }
	@/usr/bin/python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "/usr/bin/python3 is not Python 3.11: the benchmarks need Debian 12's python3"; exit 1; }
	@test -x $(BENCH_VENV)/bin/python || /usr/bin/python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	@$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(BENCH_VENV)/.installed-* && touch $@

stores: ## make sure PostgreSQL and Redis answer (start them if installed but stopped)
	@scripts/ensure-stores

browser: ## make sure headless Chromium is installed (browser tests)
	@scripts/ensure-chromium

haproxy: ## make sure HAProxy is installed (the replica tests put it in front of the services)
	@scripts/ensure-package haproxy haproxy "the replica tests"

wrk: ## make sure wrk is installed (bench-peer's load generator, bench/wrk.py)
	@scripts/ensure-package wrk wrk "bench-peer's load generator"

lint: venv ## ruff, mypy and the import contracts (pyproject.toml), without the tests
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports

proto: venv ## regenerate otesse/auth/v1 from proto/
	@scripts/gen-proto

lock: venv ## re-pin every dependency (with hashes) from pyproject.toml
	@$(BIN)/pip-compile -q --extra dev --generate-hashes --strip-extras --allow-unsafe -o requirements.lock pyproject.toml

# The benchmarks run in .venv-bench: its interpreter (Debian's python3, an optimized build like
# the official image's) runs the services they measure, not .venv's (bench/README.md).
BENCH_PY := $(BENCH_VENV)/bin/python

bench: bench-venv stores ## throughput and latency of the whole flow, then local validation (bench/README.md)
	@$(BENCH_PY) -m bench $(ARGS)
	@$(BENCH_PY) -m bench.local_validation

bench-local: bench-venv stores ## local token checks and revocation latency over the feed (bench/README.md)
	@$(BENCH_PY) -m bench.local_validation $(ARGS)

bench-peer: bench-venv stores wrk peer ## Otesse against node-oidc-provider, alternating rounds (bench/README.md)
	@$(BENCH_PY) -m bench.compare $(ARGS)

soak: bench-venv stores ## ten minutes of the mixed flow: memory, files and connections stay flat (bench/README.md)
	@$(BENCH_PY) -m bench.soak $(ARGS)

peer: $(PEER_STAMP) ## the reference server of bench-peer, exactly as bench/peer/package-lock.json pins it

$(PEER_STAMP): $(PEER)/package-lock.json $(PEER)/package.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node 20 (Debian's nodejs and npm packages)"; exit 1; }
	@cd $(PEER) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
	@rm -f $(PEER)/node_modules/.installed-* && touch $@

clean: ## remove .venv/, .venv-bench/, test artifacts and the linters' caches
	rm -rf $(VENV) $(BENCH_VENV) tests/artifacts .mypy_cache .ruff_cache
