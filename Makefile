# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bnn-tune-installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export MPLBACKEND ?= Agg

.PHONY: setup run test test-slow bench-quick lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

# The main job: a Bop search on digits with Ray Tune (embedded local Ray, all CPUs), OptunaSearch in
# gamma/tau, ASHA + the flip-rate rule; ranking, best config and the packed best model land in runs/digits-bop.
RUN_OUT ?= runs/digits-bop
run: setup
	$(VENV)/bin/bnn-tune search --optimizer bop --dataset digits --samples 16 --out $(RUN_OUT)

# The default test suite (fast tests; `slow` and `cuda` are deselected in pyproject.toml).
test: setup
	$(PY) -m pytest -q

# The slow step (notebooks, long Ray/benchmark checks); CI runs it after `make test`.
test-slow: setup
	$(PY) -m pytest -q -m slow

# Every benchmark script on small settings (CI checks they run; full runs write BENCHMARKS.md's figures).
bench-quick: setup
	$(PY) benchmarks/run_all.py --quick

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
