# Foresight: `make demo` runs the console and a demo kernel; `make test` runs the suite.
# Both create .venv (Python 3.11) and install the project into it when needed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# setuptools warns on every editable install of a flat layout that folders in the working
# directory shadow the package: that is how this repo is meant to be run, so hush it.
PIP_INSTALL := PYTHONWARNINGS='ignore:Editable installation' $(VENV)/bin/pip install -q
PYTEST_ARGS ?=

DEMO_STATE_DIR := var/kernel
DEMO_KERNEL_LOG := var/log/demo-kernel.log
DEMO_SYNC_LOG := var/log/demo-sync.log
DEMO_ADDR := 127.0.0.1:8000

IS_PY311 := import sys; sys.exit(sys.version_info[:2] != (3, 11))
PY_VERSION := import sys; print("%d.%d" % sys.version_info[:2])

.PHONY: help deps venv install install-test test demo bench

help:
	@echo "make demo   run the console on http://$(DEMO_ADDR)/admin/ (admin/admin) with a demo kernel"
	@echo "make test   run the test suite, then the console's part on PostgreSQL (PYTEST_ARGS='-k ledger -x' to narrow it)"

# System packages the suite needs beyond Python (chromium, redis-server, postgresql): installed when missing.
deps:
	@bash scripts/system-deps.sh

$(PY):
	@$(PYTHON) -c '$(IS_PY311)' 2>/dev/null || { \
	  echo "error: Foresight needs Python 3.11; '$(PYTHON)' is $$($(PYTHON) -c '$(PY_VERSION)' 2>/dev/null || echo 'missing')." >&2; \
	  echo "       On Debian 12: apt-get install python3 python3-venv, or run make PYTHON=/path/to/python3.11 ..." >&2; \
	  exit 1; }
	@$(PYTHON) -m venv $(VENV) || { \
	  rm -rf $(VENV); \
	  echo "error: could not create $(VENV); on Debian 12: apt-get install python3-venv" >&2; \
	  exit 1; }

venv: $(PY)
	@$(PY) -c '$(IS_PY311)' || { \
	  echo "error: $(VENV) runs Python $$($(PY) -c '$(PY_VERSION)'), not 3.11: remove it (rm -rf $(VENV)) and run make again." >&2; \
	  exit 1; }

# Stamps: reinstall only when pyproject.toml changes (or the venv is recreated).
$(VENV)/.installed: pyproject.toml | venv
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | venv
	$(PIP_INSTALL) -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The whole suite on SQLite, then the console's suites again on production's database: a
# throwaway PostgreSQL cluster (tests/support/postgres.py) that is removed afterwards.
# TEST_POSTGRES=0 skips the second run; exit code 5 there means PYTEST_ARGS selected none of its tests.
TEST_POSTGRES ?= 1
POSTGRES_TESTS := tests/trading tests/integration/test_admin_kernel.py tests/integration/test_halt_not_starved.py

test: deps install-test
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ "$(TEST_POSTGRES)" != 0 ]; then \
	  echo "$(PY) -m tests.support.postgres -- $(PY) -m pytest $(POSTGRES_TESTS) $(PYTEST_ARGS)"; \
	  $(PY) -m tests.support.postgres -- $(PY) -m pytest $(POSTGRES_TESTS) $(PYTEST_ARGS); \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]; \
	fi

# Benchmarks print numbers (docs/benchmarks.md); BENCH_ARGS=--quick for a short run.
BENCH_ARGS ?=
$(VENV)/.installed-bench: pyproject.toml | venv
	$(PIP_INSTALL) -e '.[bench]'
	@touch $@

bench: $(VENV)/.installed-bench
	@BENCH=1 bash scripts/system-deps.sh
	bash bench/run_all.sh $(BENCH_ARGS)

# Development only: the admin/admin login below must never exist on a real deployment.
define CREATE_DEMO_ADMIN
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(is_superuser=True).exists() and not User.objects.filter(username="admin").exists():
    User.objects.create_superuser("admin", "admin@localhost", "admin")
    print("Created superuser admin/admin (development only: never use it in production).")
endef
export CREATE_DEMO_ADMIN

demo: install
	@if [ "$${FORESIGHT_ENV:-}" = production ]; then echo "error: make demo is for development only (FORESIGHT_ENV=production)" >&2; exit 1; fi
	$(PY) manage.py migrate --noinput
	@$(PY) manage.py shell --verbosity 0 -c "$$CREATE_DEMO_ADMIN"
	@mkdir -p $(DEMO_STATE_DIR) $(dir $(DEMO_KERNEL_LOG))
	$(PY) manage.py addkernel --name demo --state-dir $(DEMO_STATE_DIR)
	@set -uo pipefail; \
	export FORESIGHT_STATE_DIR="$(abspath $(DEMO_STATE_DIR))"; \
	$(PY) manage.py runkernel --state-dir $(DEMO_STATE_DIR) --demo --speed 60 >>$(DEMO_KERNEL_LOG) 2>&1 & kernel=$$!; \
	$(PY) manage.py syncstatus --loop --interval 1.0 >>$(DEMO_SYNC_LOG) 2>&1 & sync=$$!; \
	stop_kernel() { \
	  kill -TERM $$sync 2>/dev/null && wait $$sync 2>/dev/null; \
	  kill -TERM $$kernel 2>/dev/null || return 0; \
	  for _ in $$(seq 300); do kill -0 $$kernel 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$kernel 2>/dev/null; then echo "Demo kernel ignored SIGTERM for 30 s; killing it." >&2; kill -KILL $$kernel; fi; \
	  wait $$kernel 2>/dev/null; echo "Demo kernel and status sync stopped."; \
	}; \
	trap stop_kernel EXIT; trap 'exit 0' INT; trap 'exit 143' TERM; \
	sleep 2; \
	if ! kill -0 $$kernel 2>/dev/null; then \
	  echo "error: the demo kernel exited at startup; the end of $(DEMO_KERNEL_LOG):" >&2; \
	  tail -n 20 $(DEMO_KERNEL_LOG) >&2; exit 1; \
	fi; \
	if ! kill -0 $$sync 2>/dev/null; then \
	  echo "error: the status sync exited at startup; the end of $(DEMO_SYNC_LOG):" >&2; \
	  tail -n 20 $(DEMO_SYNC_LOG) >&2; exit 1; \
	fi; \
	echo "Demo kernel running (pid $$kernel, state in $(DEMO_STATE_DIR), log in $(DEMO_KERNEL_LOG))."; \
	echo "Status sync running (pid $$sync, log in $(DEMO_SYNC_LOG)): outcomes reach the audit log with no page open."; \
	echo "Console: http://$(DEMO_ADDR)/admin/  login admin/admin. Ctrl-C stops them all."; \
	$(PY) manage.py runserver $(DEMO_ADDR)
