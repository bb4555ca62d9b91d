# doubleword-batches: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Test processes at once: most of a test's time is spent waiting on the local sandbox, so
# more workers than cores pay off (6 on a 2-core machine).
WORKERS ?= 6
# Bytecode caches (git-ignored) spare every test process and script run from compiling again.
TESTENV := PYTHONDONTWRITEBYTECODE=

.PHONY: help demo test test-fast flake lint docs bench bench-10m stress coverage clean

help:
	@echo "make demo    run a real batch end to end against the local sandbox (no API key needed)"
	@echo "make test    run the test suite (lint included)"
	@echo "make test-fast  the inner loop: every test not marked slow"
	@echo "make flake  the whole suite $(RUNS) times under CPU load (a busy loop on every core): runs green of runs made"
	@echo "make coverage   the whole suite with line coverage of scripts/ (child processes included)"
	@echo "make docs    write the sample output in README.md and docs/ from the scripts run against the sandbox, and the field lists"
	@echo "make bench   run the benchmarks and write bench/results.md (each fails when it misses its target)"
	@echo "make bench-10m  one ten-million-request job end to end against the sandbox (30 to 60 minutes, 25 GB of disk)"
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
	$(PY) -m ruff format --check scripts tests bench examples
	$(PY) -m mypy

# The sample output in README.md and docs/*.md, and the field lists of SKILL.md and docs/scripts.md
# (from scripts/_dwbatches/workflow/reports.py); tests/test_docs.py fails when either is stale.
docs: $(VENV)/.dev
	$(PY) tests/docsamples.py

test: lint
	$(TESTENV) $(PY) -m pytest -n $(WORKERS)

test-fast: $(VENV)/.dev
	$(TESTENV) $(PY) -m pytest -n $(WORKERS) -m "not slow"

# Runs of `make flake` (make flake RUNS=10).
RUNS ?= 5

flake: $(VENV)/.dev
	$(TESTENV) $(PY) tests/flake.py --runs $(RUNS) --workers $(WORKERS)

coverage: $(VENV)/.dev
	rm -f .coverage .coverage.*
	$(TESTENV) $(PY) -m coverage run -m pytest -n $(WORKERS); status=$$?; \
	$(PY) -m coverage combine -q && $(PY) -m coverage report; exit $$status

bench: $(VENV)/.dev
	$(PY) bench/run_all.py
	$(PY) bench/bench_sandbox.py
	$(PY) bench/bench_build.py
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_answers.py
	$(PY) bench/bench_reuse.py

bench-10m: $(VENV)/.dev
	nice -n 10 $(PY) bench/bench_ten_million.py

stress: $(VENV)/.dev
	$(TESTENV) $(PY) -m pytest -m stress -p no:randomly -s --timeout 0 tests/test_crash_trials.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache .coverage .coverage.* demo-run
