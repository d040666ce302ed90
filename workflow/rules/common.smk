# The config, the paths one rule writes and another reads, the targets of `rule all`, the threads a
# job gets, and ocbench(), the shell command of a rule. No rules here; the rule files need nothing
# from each other.
#
# Nothing here imports torch: Snakemake parses the workflow for every dry run and again in every
# SLURM job, where importing torch costs seconds.

import importlib.util
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from ocbench.config import ConfigError, digest, from_dict, protocol_fingerprint, settings as config_settings, yaml_typed
from ocbench.data import default_workers
from ocbench.errors import OcbenchError
from ocbench.formats import atomic_write
from ocbench.gpus import any_gpu
from ocbench.hub import weights_path


# --------------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------------

# `--config run='{seeds: [0, 1, 2]}'` arrives as strings: give nested values their YAML types. Only
# --config's: a --configfile is YAML already, and reading a string of it again would turn a text
# with ": " in it into a mapping.
update_config(
    config,
    {
        key: yaml_typed(value)
        for key, value in workflow.config_settings.config.items()
        if isinstance(value, (dict, list))
    },
)
# ocbench's validation (the schema, then what a schema cannot say, such as run.gans naming a GAN
# that `gans` defines): a bad value stops here in the one line `ocbench config` says, naming the key
# and the fix, where Snakemake's validate would print the whole schema around it.
try:
    CFG = from_dict(config)
except ConfigError as err:
    print(f"ocbench: error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)
validate(config, "../schemas/config.schema.yaml")

RESULTS = str(CFG.results_dir)
FIGURES_DIR = str(CFG.figures_dir)
RUN_IDS = CFG.run_ids()

# Every job reads the merged config (paper.yaml, --configfile overlays, --config values) from this
# file, so `ocbench` sees exactly what Snakemake merged. The rules pass it as params.config.
CONFIG_FILE = f"{RESULTS}/config.yaml"


def write_config_file():
    """Write CONFIG_FILE unless it holds the merged config already; atomically, since a job of an
    earlier Snakemake (a SLURM job outliving a killed Snakemake) may be reading it."""
    path, text = Path(CONFIG_FILE), CFG.dump()
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


# onstart: after the DAG is built and the directory's lock taken, and only when jobs are to run. So a
# dry run, --lint or --report writes nothing, and a second Snakemake in the same directory stops at
# the lock before it could change the file under the first one's jobs. Job processes (SLURM jobs,
# --mode remote) get --no-hooks and read what their main Snakemake wrote.
onstart:
    write_config_file()


# A job reruns when its params change (rerun trigger `params`), and everything after it with it. The
# CONFIG_FILE param is a path, the same whatever the file holds, so a rule also carries a digest of
# the settings that reach its output other than through its inputs: a change that alters no output
# (a comment, a speed option) reruns nothing. A training run carries its protocol's fingerprint,
# which its checkpoint and run.json record too (ocbench.config.run_protocol). The rules that fetch
# files carry none, since a rerun would delete a file placed by hand (the zip; Inception weights on a
# machine without internet); nor does preflight, since every training run depends on its output.
def settings_of(*keys):
    """The digest of the settings under `keys` (e.g. "figures", "metrics.dims"), defaults filled in."""
    return digest(config_settings(CFG, keys))


RUN_FINGERPRINTS = {run: protocol_fingerprint(CFG, run) for run in RUN_IDS}


# Rule train matches results/<config>/runs/<x>/ only for a run this config trains.
wildcard_constraints:
    run="|".join(re.escape(run) for run in RUN_IDS),


# --------------------------------------------------------------------------------------------------
# Paths one rule writes and another reads
# --------------------------------------------------------------------------------------------------

LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

# data.smk: CelebA (or a synthetic CelebA) and the prepared uint8 array.
IMAGES = CFG.data.images
PARTITION = CFG.data.partition
PREPARED = CFG.data.prepared

# metrics.smk: pytorch-fid's Inception weights and the reference statistics.
WEIGHTS = str(weights_path(CFG.metrics.weights_dir))
STATS = CFG.metrics.stats

# preflight.smk
PREFLIGHT = f"{RESULTS}/preflight.json"

# train.smk: one folder per run; ocbench aggregate reads every run's files.
RUN_METRICS = f"{RESULTS}/runs/{{run}}/metrics.csv"
RUN_SUMMARY = f"{RESULTS}/runs/{{run}}/run.json"
AGGREGATED = f"{RESULTS}/metrics.csv"


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------

# figures.smk: Figures 2-7 (and 8 where the config trains a GAN with spectral norm or a gradient
# penalty), each in every configured format, and the stability summary.
FIGURE_NUMBERS = CFG.figure_numbers()
FIGURE_FORMATS = CFG.figures.formats
FIGURES = expand(f"{FIGURES_DIR}/fig{{n}}.{{ext}}", n=FIGURE_NUMBERS, ext=FIGURE_FORMATS)
SUMMARY = [f"{RESULTS}/summary.md", f"{RESULTS}/summary.csv", f"{RESULTS}/summary_gans.csv"]
# claims.smk: the paper's claims as verdicts and their forest plot.
CLAIMS = [f"{RESULTS}/claims.md", f"{RESULTS}/claims.csv"] + expand(
    f"{FIGURES_DIR}/claims.{{ext}}", ext=FIGURE_FORMATS
)


def get_final_output():
    """The targets of the Snakefile's `all`: the figures, the summary, the aggregated metrics and
    the claims."""
    return FIGURES + SUMMARY + [AGGREGATED] + CLAIMS


# --------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------


def networks_on_gpu():
    """Whether the jobs that run networks (fid_stats, preflight, train) run them on a GPU: a cuda
    train.device, or auto where a GPU is seen (ocbench.gpus.any_gpu, without torch). Under SLURM this
    is asked on the login node, which plans the threads, and again on each job's GPU node, which
    formats the job's command."""
    if CFG.train.device != "auto":
        return CFG.train.device.startswith("cuda")
    try:
        return any_gpu()
    except OcbenchError as err:  # nvidia-smi failed or hung: no GPU to plan for
        print(f"ocbench: {err}; the network jobs are planned for the CPU", file=sys.stderr)
        return False


# Snakemake lowers a rule's threads to --cores and sets OMP_NUM_THREADS, which torch follows, so
# "every core" is the machine's count and --cores decides. A job whose networks run on a GPU needs
# only a few threads (feeding the GPU, PNG and CSV writes), so that several GPU jobs share the CPUs.
ALL_CORES = default_workers()  # the CPUs this process may use
ON_GPU = networks_on_gpu()
NETWORK_THREADS = min(4, ALL_CORES) if ON_GPU else ALL_CORES
# On the CPU, an OpenMP thread that waits spins briefly, then sleeps: spinning at length collapses
# on cores shared with other work, sleeping at once is slow on an idle machine (BENCHMARKS.md, "The
# smoke DAG: threads of the CPU jobs"). GOMP_SPINCOUNT is libgomp's and overrides the policy;
# PASSIVE is for runtimes without it (Intel's libiomp5).
NETWORK_ENV = "" if ON_GPU else "OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000 "


# --------------------------------------------------------------------------------------------------
# The ocbench command of a rule
# --------------------------------------------------------------------------------------------------


def shell_word(text):
    """`text` as one word of a rule's shell command: quoted for the shell, its braces doubled so that
    Snakemake's formatting leaves them."""
    return shlex.quote(text).replace("{", "{{").replace("}", "}}")


# The Python that runs the jobs: environment.yml's where Snakemake deploys the software (--sdm conda
# or apptainer), else the one running Snakemake, which has ocbench's dependencies whether or not its
# environment is active (`.venv/bin/snakemake` works from any shell).
DEPLOYS_SOFTWARE = {"conda", "apptainer"} & {m.name.lower() for m in workflow.deployment_settings.deployment_method}
PYTHON = "python" if DEPLOYS_SOFTWARE else shell_word(sys.executable)
# A Snakemake installed without torch (pipx, a system package) stops now, in one line, not in every
# job's log. find_spec finds the package without importing it.
if not DEPLOYS_SOFTWARE and importlib.util.find_spec("torch") is None:
    raise WorkflowError(
        f"{sys.executable} (the Python running Snakemake, which runs the jobs) has no torch: run the "
        "Snakemake of ocbench's environment (.venv/bin/snakemake; `make` sets it up), or --sdm conda"
    )
# The ocbench CLI of this checkout, with that Python ({{...}} reaches the shell as {...}).
OCBENCH = f"PYTHONPATH={shell_word(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {PYTHON} -m ocbench"
ENV = "../../environment.yml"  # conda: of every rule, relative to this folder


def ocbench(subcommand, options="", gpu=False):
    """The shell command of a rule that runs `ocbench SUBCOMMAND --config CONFIG_FILE OPTIONS`, e.g.

        shell: ocbench("train", "--run {wildcards.run:q}", gpu=True)

    One home for what every rule's command shares: this checkout's ocbench, the merged config (each
    rule declares CONFIG_FILE as params.config), the output into the rule's log, and, for a rule that
    holds the `gpu` resource (gpu=True), a GPU slot of the job's own (`ocbench with-gpu`,
    ocbench/gpus.py) with NETWORK_ENV. Snakemake formats OPTIONS: quote each field ({output:q})."""
    command = f"{subcommand} --config {{params.config:q}} {options}".rstrip()
    if gpu:
        command = f"{NETWORK_ENV}{OCBENCH} with-gpu --config {{params.config:q}} -- {PYTHON} -m ocbench {command}"
    else:
        command = f"{OCBENCH} {command}"
    return f"{command} > {{log:q}} 2>&1"
