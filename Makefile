# Every target bootstraps .venv on first use: a fresh clone needs only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test reproduce smoke mini cluster-deps test-cluster clean-smoke clean-mini gpu-wheels gpu-check gpu-check-cpu

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e '.[test,cluster]'
	touch $(STAMP)

# pytest-xdist workers, one more than this machine's 2 cores: the end-to-end tests wait on SLURM's
# status polls, Snakemake and subprocess start-ups, and a third worker computes meanwhile. Each
# worker's torch (and the processes it starts) gets its share of the cores, at least one thread
# (tests/conftest.py, which also orders the tests for --dist worksteal). BENCHMARKS.md has the times.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal tests

reproduce: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores 1 --resources gpu=1

smoke: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores 2 --resources gpu=1 \
	    --configfile workflow/config/smoke.yaml

# Training learns: DCGAN and DCGAN_OCT on 2,000 synthetic faces draw faces on a 2-core CPU (README).
mini: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores 2 --resources gpu=1 \
	    --configfile workflow/config/mini.yaml

# tests/test_slurm.py's one-node SLURM cluster: Debian's SLURM and munge (root, or sudo).
# CI runs this before `make test`; without them that test is skipped.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
cluster-deps: $(STAMP)
	dpkg -s slurm-wlm munge >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge; }

# Only the SLURM test (also part of `make test`).
test-cluster: cluster-deps
	$(BIN)/python -m pytest tests/test_slurm.py

clean-smoke:
	rm -rf results/smoke figures/smoke data/smoke

clean-mini:
	rm -rf results/mini figures/mini data/mini

# Wheels for a GPU machine without internet whose image has torch but not these (Python 3.12,
# x86-64): `make gpu-check` installs the ones it lacks. pytest runs the GPU tests there.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -d .whl pytorch-fid==0.3.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
	    referencing==0.37.0 rpds-py==2026.9.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 \
	    packaging==25.0 pygments==2.21.0

# Everything a GPU must show, in at most 9 minutes on one H100/H200, with the machine's own python
# and torch (carry .whl from `make gpu-wheels`); results in $$OUT (default gpu-check/). No venv: a
# lent GPU machine has no internet. See scripts/gpu_check.py.
OUT ?= gpu-check
gpu-check:
	python3 scripts/gpu_check.py --out $(OUT)

# The same steps at smoke size on this CPU (the test suite runs them too: tests/test_gpu_check.py).
gpu-check-cpu: $(STAMP)
	$(BIN)/python scripts/gpu_check.py --cpu --out $(OUT)-cpu
