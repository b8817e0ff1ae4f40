# Hangar: the two commands from the README, and the steps they are made of.
#   make run   start the whole product on embedded defaults and print the URL to open
#   make test  install what the tests need, start it, then lint, type-check and run the suite

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test venv frontend lint typecheck test-only services services-stop images image-cuda lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# torch is pinned to the CPU build (see requirements.lock); the dev extra brings the test tools.
$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

frontend:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix frontend --no-audit --no-fund --loglevel=error && npm run --prefix frontend build --silent; \
	else \
		echo "npm not found: using the committed frontend/dist"; \
	fi

run: venv frontend
	$(PY) manage.py quickstart

services:
	bash deploy/dev/install-deps.sh
	bash deploy/dev/services.sh start

services-stop:
	bash deploy/dev/services.sh stop

images: venv
	deploy/images/build

# The GPU runtime image: not part of `make test`; needs HANGAR_CUDA_WHEELS (or PyPI), see
# `deploy/images/build --help`.
image-cuda:
	deploy/images/build runtime-cuda

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy console controlplane workers

# The suite runs on $(PYTEST_WORKERS) pytest-xdist workers, whole files per worker (module fixtures
# such as model servers stay in one process); each worker has its own PostgreSQL database,
# Redis databases and data folder (console/settings/workers.py). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
# A Redis started earlier with too few databases (16 per worker) makes it one process, not a failure.
test-only: venv
	eval "$$(bash deploy/dev/services.sh env)"; \
	workers=$(PYTEST_WORKERS); dbs=$$(bash deploy/dev/services.sh redis-databases); \
	if [ "$$workers" -gt 0 ] && [ "$$dbs" -lt $$((16 * workers)) ]; then \
		echo "make test: the Redis on 127.0.0.1:63790 has $$dbs databases and $$workers workers need $$((16 * workers)): one process instead (restart it: deploy/dev/services.sh stop redis; deploy/dev/services.sh start redis)"; \
		workers=0; \
	fi; \
	DJANGO_SETTINGS_MODULE=console.settings.test $(VENV)/bin/pytest -n $$workers --dist loadfile $(PYTEST_ARGS)

test: services venv frontend lint typecheck test-only

lock: | $(PY)
	$(PIP) install -q -e '.[dev]'
	{ echo "# Exact versions of every dependency, used as pip constraints by the Makefile (regenerate: make lock)."; \
	  $(PIP) freeze --exclude-editable | grep -v '^-e'; } > requirements.lock

clean:
	rm -rf $(VENV) staticfiles .mypy_cache .ruff_cache
