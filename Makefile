# Every target bootstraps .venv on first use: a fresh clone needs only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test reproduce smoke mini cluster-deps test-cluster clean-smoke clean-mini

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e '.[test,cluster]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

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
