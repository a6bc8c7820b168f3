# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv, runs the quickstart study on all cores, prints the report path
#   make test   installs into .venv (+ Debian chromium, PostgreSQL, the ray/postgres extras for the
#               browser, tracking-server and Ray tests), runs lint and tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lrstudy-installed

.PHONY: run test lint bench ui chromium services catalogue clean

# PYTHONWARNINGS: setuptools warns on every editable install that a folder named like the package
# may shadow it; that folder is the package itself here.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m lrstudy run studies/quickstart.yaml

test: $(STAMP) chromium services lint
	$(PY) -m pytest

# PostgreSQL, network-namespace tools and the ray/postgres extras (tests/test_server.py, test_ray.py).
services: $(STAMP)
	bash .ci/install-services $(VENV)

lint: $(STAMP)
	$(PY) -m ruff check lrstudy tests bench
	$(PY) -m ruff format --check lrstudy tests bench

# The report test loads the page in headless Chromium (Debian package); needs root or sudo.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

bench: $(STAMP)
	$(PY) bench/bench_overhead.py
	$(PY) bench/bench_report.py
	$(PY) bench/bench_rangetest.py
	$(PY) bench/bench_workers.py
	$(PY) bench/bench_quickstart.py
	$(PY) bench/bench_metric_writes.py
	$(PY) bench/bench_own_model.py

ui: $(STAMP)
	$(PY) -m lrstudy ui

# The claim catalogue: studies/catalogue/*.yaml into reports/catalogue/mlflow.db, then
# reports/index.html (~13 min on 2 cores); rewrites the README's verdict table from the verdicts.
catalogue: $(STAMP)
	$(PY) bench/catalogue.py --readme README.md

clean:
	rm -rf $(VENV) mlflow.db reports/*/ .pytest_cache
