# LiveKit Ingress on Kubernetes: local stack, checks, tests, benchmarks.
#
#   make up       install what is missing, start the local stack detached (in .stack/)
#   make down     stop it                   make clean-stack   stop it and delete .stack/
#   make status   health of each component  make logs          tail of every component's log
#   make lint     ruff, ruff format --check, mypy, lint-imports
#   make test     install, lint, then every test not marked `slow` (starts its own stack)
#   make bench    tests marked `slow`, then the bench/ scripts
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
# the built kubectl/helm/livekit-server and the venv's scripts first
export PATH := $(shell bash tools/install.sh path 2>/dev/null):$(PATH)
PYTEST_ARGS ?=

.PHONY: help install up down status logs clean-stack lint test bench

help:
	@sed -n '3,9s/^# \{0,1\}//p' Makefile

install:
	@bash tools/install.sh

up: install
	@$(PY) -m local_stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m local_stack down; else echo "no .venv: nothing to stop"; fi

status:
	@$(PY) -m local_stack status

logs:
	@$(PY) -m local_stack logs

clean-stack:
	@if [ -x $(PY) ]; then $(PY) -m local_stack down --purge; else rm -rf .stack; fi

lint:
	@echo "==> ruff check" && .venv/bin/ruff check .
	@echo "==> ruff format --check" && .venv/bin/ruff format --check .
	@echo "==> mypy" && .venv/bin/mypy
	@echo "==> lint-imports" && .venv/bin/lint-imports

# pytest exits 5 when it collects nothing: that fails `make test`, as it should.
test: install lint
	@echo "==> pytest -m 'not slow'"
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	@echo "==> pytest -m slow"
	@rc=0; $(PY) -m pytest -m slow $(PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "!!  no tests are marked slow"; elif [ $$rc -ne 0 ]; then exit $$rc; fi
	@for script in bench/*.py; do \
	  [ -e "$$script" ] || continue; \
	  [ "$$script" != bench/common.py ] || continue; \
	  echo "==> $$script"; $(PY) "$$script"; \
	done
