# slicewise: `make run` sets up and runs the demo; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup system-deps run test test-fast lint typecheck format bench readme clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt scripts/install.py
	# uv with pip's own settings (seconds), pip if uv fails; torch pinned first (see the script)
	$(PYTHON) scripts/install.py --venv $(VENV)
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything

system-deps:  ## install the Debian packages the tests need (prometheus, alertmanager, kubectl) when missing
	scripts/system-deps.sh

run: setup  ## train the demo model, then serve and monitor it (see README; RUN_ARGS="--port 3001" passes options)
	$(VENV)/bin/slicewise demo-run $(RUN_ARGS)

test: setup system-deps  ## run the whole test suite (unit, model, service, integration, promtool)
	$(PY) -m pytest -q --timeout=900

test-fast: setup  ## unit + model tests only
	$(PY) -m pytest -q -m "not integration and not slow" --timeout=300

lint: setup  ## ruff (lint + format check)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup  ## mypy on the packages (not clean yet: see README, "Known limits")
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup  ## every benchmark the README quotes, on one freshly exported bundle (hours; writes bench/results/), then the README tables
	PY=$(PY) SW=$(VENV)/bin/slicewise bench/run_all.sh

readme:  ## copy bench/results/*.md into the README's benchmark section
	$(PY) bench/update_readme.py

clean:
	rm -rf $(VENV) .slicewise build *.egg-info
