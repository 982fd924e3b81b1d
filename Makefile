# bluecore-sidecar: the few verbs a newcomer needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF := tools/node_modules/.bin/buf
PYTEST_ARGS ?=
# CI=true (as .ci/run sets it) turns a missing toolchain from a skipped check into a failure.
CI ?=
# Where quiet steps keep their output; it is printed only when the step fails.
LOGS := .cache/logs

.PHONY: help venv demo run test compiled test-compiled check lint typecheck e2e bench clean lock toolchains

help: ## list the make targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml client_stubs/python/pyproject.toml requirements-dev.lock
	@echo "==> creating $(VENV) and installing pinned Python packages (requirements-dev.lock)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@# setuptools warns on every editable install of a src layout; the warning is not actionable here.
	@# The client package owns the generated datafly modules; it is not on PyPI, so it goes in
	@# from this tree, before the sidecar that depends on it.
	@PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e client_stubs/python
	@PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP) ## create .venv with the pinned dependencies

$(BUF): tools/package.json tools/package-lock.json
	@echo "==> installing pinned buf and ts-proto (npm ci --prefix tools)"
	@npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

demo: venv ## run the sidecar against the built-in Bluecore sandbox with the sample events
	@$(PY) -m bluecore_devtools.demo

run: venv ## run the sidecar in the foreground (needs BLUECORE_NAMESPACE)
	@$(VENV)/bin/bluecore-sidecar serve

test: venv check ## the Python checks and the pytest suite (+ checks whose toolchain is present)
	@echo "==> pytest (branch coverage; the floor is fail_under in pyproject.toml)"
	@$(PY) -m pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

COMPILED_SITE := .cache/compiled/site
compiled: venv ## build the sidecar as the image ships it (hot modules compiled with mypyc) into .cache/compiled
	@$(PY) tools/compile.py >/dev/null

test-compiled: compiled ## the pytest suite against the compiled build (no coverage: the source is measured by make test)
	@echo "==> pytest against the compiled modules ($(COMPILED_SITE))"
	@BLUECORE_EXPECT_COMPILED=1 PYTHONPATH=$(COMPILED_SITE) $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	@echo "==> ruff"
	@$(VENV)/bin/ruff check server tests bench tools deploy setup.py
	@$(VENV)/bin/ruff format --check server tests bench tools deploy setup.py

typecheck: venv
	@echo "==> mypy --strict"
	@$(VENV)/bin/mypy

e2e: clients-e2e jaeger-e2e ## Go/Java/TypeScript/Python, Connect and curl clients against a live sidecar; traces in a real Jaeger

bench: venv ## load benchmark: sidecar vs. a bare forwarder, latency, idle watchers, ghz (bench/README.md)
	@# nginx (answering 202) is the upstream; as root, install Debian's nginx-light when missing.
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || [ "$$(id -u)" != 0 ] || \
	  { echo "==> installing nginx-light (apt-get)"; apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
	@$(PY) bench/run.py $(BENCH_ARGS)

# bluecore-sidecar-client is not on PyPI: pip-compile resolves it from a wheel built here, and
# as the one "unsafe" package it stays an unpinned comment (pip and setuptools, no longer the
# default unsafe ones, are pinned like everything else). The image installs it from its own
# build context; `make venv` from client_stubs/python.
LOCK_WHEELS := .cache/lock-wheels
LOCK_ARGS := --quiet --strip-extras --no-emit-find-links --find-links $(LOCK_WHEELS) \
  --unsafe-package bluecore-sidecar-client
lock: venv ## re-pin requirements*.lock from pyproject.toml
	@rm -rf $(LOCK_WHEELS) client_stubs/python/build
	@PYTHONWARNINGS=ignore $(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w $(LOCK_WHEELS) client_stubs/python
	@rm -rf client_stubs/python/build
	@$(VENV)/bin/pip-compile $(LOCK_ARGS) --generate-hashes -o requirements.lock pyproject.toml
	@$(VENV)/bin/pip-compile $(LOCK_ARGS) --extra dev -o requirements-dev.lock pyproject.toml

clean: ## remove the venv, caches and build output
	rm -rf $(VENV) .cache build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis tools/node_modules

include $(wildcard mk/*.mk)

# ---- `make check`: Python checks always; the others when their toolchain is on PATH. ----
# mk/*.mk add to PY_CHECKS and TOOLCHAIN_CHECKS and say what each needs (needs.<check>).
PY_CHECKS += lint typecheck
TOOLCHAIN_CHECKS += proto-lint proto-breaking stubs-check
needs.proto-lint := node npm
needs.proto-breaking := node npm
needs.stubs-check := node npm go java mvn

have = $(shell command -v $(1) >/dev/null 2>&1 && echo yes)
missing = $(strip $(foreach tool,$(needs.$(1)),$(if $(call have,$(tool)),,$(tool))))
RUNNABLE_CHECKS := $(foreach c,$(TOOLCHAIN_CHECKS),$(if $(call missing,$(c)),,$(c)))
SKIPPED_CHECKS := $(foreach c,$(TOOLCHAIN_CHECKS),$(if $(call missing,$(c)),$(c) (no $(call missing,$(c)))))

check: toolchains $(PY_CHECKS) $(RUNNABLE_CHECKS) ## Python checks; contract, stubs and manifest checks where Go/Java/Node are installed

toolchains: # one line naming what `check` skips; in CI a missing toolchain fails the run
ifneq ($(strip $(SKIPPED_CHECKS)),)
ifneq ($(filter true TRUE 1,$(CI)),)
	@echo "toolchains: CI=$(CI) and a toolchain is missing, so these checks cannot run: $(SKIPPED_CHECKS)" >&2
	@exit 1
else
	@echo "==> skipped (toolchain not on PATH): $(SKIPPED_CHECKS)"
endif
endif
