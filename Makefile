# doubleword-batches: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: help demo test lint bench stress clean

help:
	@echo "make demo    run a real batch end to end against the local sandbox (no API key needed)"
	@echo "make test    run the test suite (lint included)"
	@echo "make bench   run the benchmarks and write bench/results.md"
	@echo "make stress  run the crash trials (SIGKILL at random moments)"

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

demo: $(VENV)/.runtime
	$(PY) examples/demo.py

lint: $(VENV)/.dev
	$(PY) -m ruff check scripts tests bench examples

test: lint
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PY) bench/run_all.py
	$(PY) bench/bench_sandbox.py

stress: $(VENV)/.dev
	$(PY) -m pytest -m stress -p no:randomly -s tests/test_crash_trials.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-run
