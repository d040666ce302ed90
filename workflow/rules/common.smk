# Shared by every rule file: the validated config as ocbench sees it, and the paths it implies.

import shlex
import sys
from pathlib import Path

import torch

from ocbench.config import from_dict
from ocbench.data import default_workers

# The Python that runs the jobs. When Snakemake deploys the software (--use-conda, i.e.
# --software-deployment-method conda), environment.yml's `python`; otherwise the interpreter that
# runs Snakemake itself, which has ocbench's dependencies (the Snakefile imported them), whether
# or not its environment is active: `.venv/bin/snakemake` works from any shell.
DEPLOYS_SOFTWARE = {"conda", "apptainer"} & {m.name.lower() for m in workflow.deployment_settings.deployment_method}
PYTHON = "python" if DEPLOYS_SOFTWARE else shlex.quote(sys.executable)
# How every rule calls the ocbench CLI: from this checkout, with that Python.
# (Doubled braces: Snakemake formats shell commands, so {{...}} reaches the shell as {...}.)
OCBENCH = f"PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {PYTHON} -m ocbench"
ENV = "../../environment.yml"

# ocbench's own checks on top of the schema (run.gans names a GAN that `gans` defines, ...).
CFG = from_dict(config)
RESULTS = str(CFG.results_dir)
FIGURES_DIR = str(CFG.figures_dir)
RUN_IDS = CFG.run_ids()

# Every job reads the merged config from one file, so `ocbench` sees exactly what Snakemake
# merged (paper.yaml, --configfile overlays, --config values). Rewritten only when it changes.
CONFIG_FILE = f"{RESULTS}/config.yaml"
Path(RESULTS).mkdir(parents=True, exist_ok=True)
if not Path(CONFIG_FILE).exists() or Path(CONFIG_FILE).read_text() != CFG.dump():
    Path(CONFIG_FILE).write_text(CFG.dump())

# Threads. Snakemake lowers a rule's threads to --cores (and sets OMP_NUM_THREADS, which torch
# follows), so "every core" is the machine's count: --cores decides. A job that runs its networks
# on a GPU needs only a few threads (feeding the GPU, PNG and CSV writes), so several GPU jobs share
# the CPUs; on a CPU the networks use every thread the job gets. (The SLURM profile sets its own.)
ALL_CORES = default_workers()  # the CPUs this process may use
ON_GPU = CFG.train.device.startswith("cuda") or (CFG.train.device == "auto" and torch.cuda.is_available())
NETWORK_THREADS = min(4, ALL_CORES) if ON_GPU else ALL_CORES
# On the CPU, threads that wait spin briefly, then sleep (libgomp spins 300,000 times at every
# barrier by default). Measured on 2 cores (BENCHMARKS.md, one smoke training epoch): on cores shared
# with other work two fully spinning threads were 8-20x slower than one thread; sleeping at once
# (PASSIVE) avoided that but cost 1.7x on an idle machine; GOMP_SPINCOUNT=1000 (libgomp; it overrides
# the policy's spin count) is within 10% of full spinning when idle and no worse than PASSIVE under
# load. PASSIVE stays for OpenMP runtimes that ignore GOMP_SPINCOUNT (Intel's libiomp5).
NETWORK_ENV = "" if ON_GPU else "OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000 "

LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
