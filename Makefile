# SpatialGen Direct Upload service. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install run test soak lint typecheck fmt docs bench profile clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra server --python $(PYTHON)
	touch $@

install: $(VENV)/.installed ## create .venv with the locked dependencies

run: install ## start Valkey, S3 (moto), the API and a worker; prints the URL and a dev API key
	$(VENV)/bin/python -m deploy.local.devstack

test: install ## run the whole test suite (starts its own Valkey and S3 servers; two test processes, a file each)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

soak: install ## chaos soak (minutes; not in `make test`): SIGKILLs under upload load, then every group checked
	$(VENV)/bin/python -m tests.soak.soak

lint: install ## ruff lint + format check, mypy, and the deploy/ files (yamllint, hadolint, compose, manifests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint --strict deploy .yamllint
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/test_deploy_files.py

fmt: install ## format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install ## regenerate .env.example and the README's settings table from the settings' docstrings
	$(VENV)/bin/python -m deploy.local.gendocs

bench: install ## run the benchmarks (ratios against baselines measured in the same run)
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

profile: install ## py-spy profile of the API under create load: where a request's CPU goes
	$(VENV)/bin/python tests/bench/profile_create.py

clean: ## remove the venv, dev data and caches
	rm -rf $(VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
