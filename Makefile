# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bnn-tune-installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export MPLBACKEND ?= Agg

.PHONY: setup system-deps run test test-slow bench-quick gpu-check lint mutation mutation-report clean lce-env test-lce bench-vs-lce

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

# The system programs of the distributed tests (PostgreSQL's initdb/pg_ctl, iproute2's ip): installed from Debian's
# packages only where missing (as root); without them those tests skip with the reason (CI fails them instead).
system-deps:
	sh tools/system_deps.sh

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

# On a fresh GPU machine, one command (< 10 min): set up, build the CUDA kernels with NVRTC (no CUDA toolkit
# needed), run every `cuda` test (they fail, not skip, when a GPU is visible but the kernels cannot be built),
# a compute-sanitizer memcheck pass on the odd-shape test where compute-sanitizer is installed (torch's caching
# allocator off, so an out-of-bounds access leaves its own allocation), then `bnn-tune bench --device cuda`
# with its compact table (us, speed-up vs cuBLAS fp16/bf16 and int8 _int_mm, GB/s, % of copy bandwidth).
GPU_OUT ?= runs/gpu-check
SANITIZER ?= $(shell command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
gpu-check: setup
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'error: make gpu-check needs a CUDA GPU, but torch.cuda.is_available() is False.')"
	$(PY) -c "from bnn_tune.kernels import _nvrtc, cuda; import torch; print(torch.cuda.get_device_name(), 'compiler:', _nvrtc.compiler()); [print(' ', p) for p in cuda.build()]"
	$(PY) -m pytest -q -m cuda tests/kernels tests/export
	@if [ -n "$(SANITIZER)" ]; then \
		PYTORCH_NO_CUDA_MEMORY_CACHING=1 $(SANITIZER) --tool memcheck --error-exitcode 1 \
			$(PY) -m pytest -q -m cuda -p no:cacheprovider tests/kernels/test_cuda_gpu.py -k "odd_shapes or bad_arguments"; \
	else echo "compute-sanitizer not found: memcheck pass skipped"; fi
	$(VENV)/bin/bnn-tune bench --device cuda --quick --out $(GPU_OUT)

# Larq Compute Engine (issue 28): `bnn-tune export --format lce` and benchmarks/bench_vs_lce.py need TensorFlow,
# larq and LCE, which stay out of bnn-tune's own install (about 600 MB, numpy < 2): they live in their own venv,
# which the main venv calls as a subprocess (BNN_TUNE_LCE_PYTHON overrides where). CI runs `make test-lce`.
LCE_VENV ?= .venv-lce
LCE_PACKAGES := tensorflow-cpu==2.16.2 tf-keras==2.16.0 larq==0.13.3 larq-compute-engine==0.16.0
LCE_STAMP := $(LCE_VENV)/.bnn-tune-lce-installed
lce-env: $(LCE_STAMP)

$(LCE_STAMP):
	test -x $(LCE_VENV)/bin/python || $(PYTHON) -m venv $(LCE_VENV)
	$(LCE_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(LCE_VENV)/bin/python -m pip install --quiet $(LCE_PACKAGES)
	touch $(LCE_STAMP)

# The LCE export test (converts a trained model, runs LCE's interpreter on the test set).
test-lce: setup lce-env
	$(PY) -m pytest -q -m lce tests/export

# The side-by-side of BENCHMARKS.md's LCE section (binarynet and vgg_small, 1 and 2 threads, batch 1/8/64).
bench-vs-lce: setup lce-env
	$(PY) benchmarks/bench_vs_lce.py --out benchmarks/results/vs_lce

# Mutation testing (TESTING.md): single edits of the modules in tools/mutation.toml, each judged by the tests
# that cover its module, in a scratch copy of the tree. Resumable and cut in pieces: `make mutation
# MUTATION_SHARD=2/4 MUTATION_BUDGET=1800` runs the 2nd quarter for at most 30 min; results are appended to
# runs/mutation/results.jsonl and summed up in runs/mutation/REPORT.md. MUTATION_ARGS adds options
# (e.g. `--module plugins/_collapse.py --sample 0.3`).
MUTATION_SHARD ?= 1/1
MUTATION_BUDGET ?= 0
MUTATION_ARGS ?=
mutation: setup
	nice -n 10 $(PY) tools/mutate.py run --shard $(MUTATION_SHARD) --budget $(MUTATION_BUDGET) $(MUTATION_ARGS)

mutation-report: setup
	$(PY) tools/mutate.py report

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(LCE_VENV) .pytest_cache .ruff_cache .mypy_cache
