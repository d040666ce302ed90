# ==================================================================================================
# Shared by the rule files (and holding no rules itself). The validated config as ocbench sees it,
# every path one rule writes and another reads, the targets of `rule all` (get_final_output), the
# threads a job gets, and ocbench(), the shell command of a rule. The Snakefile includes this file
# first; the rule files need nothing from each other, so their order is free.
#
# Nothing here imports torch: Snakemake parses the workflow in its own process, for every dry run,
# and again in every SLURM job, where importing torch costs seconds and starting CUDA more.
# ==================================================================================================

import importlib.util
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ocbench.config import digest, from_dict, protocol_fingerprint, settings as config_settings
from ocbench.data import default_workers
from ocbench.errors import OcbenchError
from ocbench.formats import atomic_write
from ocbench.gpus import any_gpu
from ocbench.hub import weights_path


# --------------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------------

# ocbench's own checks on top of the schema (run.gans names a GAN that `gans` defines, ...).
CFG = from_dict(config)
RESULTS = str(CFG.results_dir)
FIGURES_DIR = str(CFG.figures_dir)
RUN_IDS = CFG.run_ids()

# Every job reads the merged config from one file, so `ocbench` sees exactly what Snakemake merged
# (paper.yaml, --configfile overlays, --config values). The rules pass it as params.config.
CONFIG_FILE = f"{RESULTS}/config.yaml"


def write_config_file():
    """Write CONFIG_FILE, unless it already holds the merged config; atomically, since a job of an
    earlier Snakemake (a SLURM job outliving a killed Snakemake) may be reading it."""
    path, text = Path(CONFIG_FILE), CFG.dump()
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


# What a job's output depends on, as params Snakemake compares (rerun trigger `params`): a job whose
# settings changed reruns, and so does everything after it (their inputs are then newer); a change
# that alters no output (a comment, a speed option) reruns nothing. The CONFIG_FILE param is a path,
# the same whatever the file holds, so each rule also carries a digest of the settings it reads that
# reach its output other than through its inputs; a training run carries its protocol's fingerprint,
# which its checkpoint and run.json record too (ocbench.config.run_protocol). The rules that fetch
# files carry none: a rerun would delete a file placed by hand (the zip; the Inception weights on a
# machine without internet), and with metrics.placeholder_weights on they use the file there, off they
# refuse a placeholder file in one line (ocbench.fid.locate_weights). Nor does preflight: every
# training run depends on its output.
def settings_of(*keys):
    """The digest of the settings under `keys` (e.g. "figures", "metrics.dims"), defaults filled in."""
    return digest(config_settings(CFG, keys))


RUN_FINGERPRINTS = {run: protocol_fingerprint(CFG, run) for run in RUN_IDS}


# Written once a run starts, not while the workflow is parsed: Snakemake calls `onstart` after it has
# built the DAG and taken the working directory's lock, before the first job, and only when jobs are
# to run. So a dry run, --lint or --report writes nothing, and a second Snakemake in the same
# directory cannot change the file under the first one's jobs (it stops at the lock first).
# Job processes (SLURM jobs, --mode remote) get --no-hooks and only read the file their main
# Snakemake wrote. (A run started with --no-hooks by hand would leave the file as it was.)
onstart:
    write_config_file()


# A run id is one this config trains and nothing else: rule train matches results/<config>/runs/<x>/
# for x in RUN_IDS only. The form of a run id is ocbench.config.RUN_ID's alone.
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
    train.device, or auto where a GPU is seen. Decided without torch (ocbench.gpus.any_gpu reads
    CUDA_VISIBLE_DEVICES and `nvidia-smi -L`). Under SLURM this is asked on the login node, where the
    profile sets the threads the jobs request, and again in each job on its GPU node, where the
    job's command (with or without NETWORK_ENV) is formatted."""
    if CFG.train.device != "auto":
        return CFG.train.device.startswith("cuda")
    try:
        return any_gpu()
    except OcbenchError as err:  # nvidia-smi failed or hung: no GPU to plan for
        print(f"ocbench: {err}; the network jobs are planned for the CPU", file=sys.stderr)
        return False


# Snakemake lowers a rule's threads to --cores (and sets OMP_NUM_THREADS, which torch follows), so
# "every core" is the machine's count: --cores decides. A job that runs its networks on a GPU needs
# only a few threads (feeding the GPU, PNG and CSV writes), so several GPU jobs share the CPUs; on a
# CPU the networks use every thread the job gets. (The SLURM profile sets its own.)
ALL_CORES = default_workers()  # the CPUs this process may use
ON_GPU = networks_on_gpu()
NETWORK_THREADS = min(4, ALL_CORES) if ON_GPU else ALL_CORES
# On the CPU, threads that wait spin briefly, then sleep (libgomp spins 300,000 times at every
# barrier by default). Measured on 2 cores (BENCHMARKS.md, one smoke training epoch): on cores shared
# with other work two fully spinning threads were 8-20x slower than one thread; sleeping at once
# (PASSIVE) avoided that but cost 1.7x on an idle machine; GOMP_SPINCOUNT=1000 (libgomp; it overrides
# the policy's spin count) is within 10% of full spinning when idle and no worse than PASSIVE under
# load. PASSIVE stays for OpenMP runtimes that ignore GOMP_SPINCOUNT (Intel's libiomp5).
NETWORK_ENV = "" if ON_GPU else "OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000 "


# --------------------------------------------------------------------------------------------------
# The ocbench command of a rule
# --------------------------------------------------------------------------------------------------

# The Python that runs the jobs. When Snakemake deploys the software (--use-conda, i.e.
# --software-deployment-method conda), environment.yml's `python`; otherwise the interpreter that
# runs Snakemake itself, which has ocbench's dependencies, whether or not its environment is
# active: `.venv/bin/snakemake` works from any shell.
DEPLOYS_SOFTWARE = {"conda", "apptainer"} & {m.name.lower() for m in workflow.deployment_settings.deployment_method}


def shell_word(text):
    """`text` as one word of a rule's shell command: quoted for the shell, its braces doubled for
    Snakemake's formatting. A shell-safe text (letters, digits, @%+=:,./-_) stays as it is."""
    return shlex.quote(text).replace("{", "{{").replace("}", "}}")


PYTHON = "python" if DEPLOYS_SOFTWARE else shell_word(sys.executable)
# torch is not imported here (see the top), but the jobs need it: a Snakemake installed without it
# (pipx, a system package) stops now, in one line, rather than in every job's log. find_spec
# locates the package without importing it.
if not DEPLOYS_SOFTWARE and importlib.util.find_spec("torch") is None:
    raise WorkflowError(
        f"{sys.executable} (the Python running Snakemake, which runs the jobs) has no torch: run the "
        "Snakemake of ocbench's environment (.venv/bin/snakemake; `make` sets it up), or --sdm conda"
    )
# The ocbench CLI of this checkout, with that Python.
# (Doubled braces: Snakemake formats shell commands, so {{...}} reaches the shell as {...}.)
OCBENCH = f"PYTHONPATH={shell_word(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {PYTHON} -m ocbench"
ENV = "../../environment.yml"  # conda: of every rule, relative to this folder

# Every {field} of a rule's command is quoted for the shell ({field:q}, shlex.quote), unless every value
# it can take is shell-safe already: the fields are {params.config}, {log} and {output} (paths under
# RESULTS), {wildcards.run} (a run id: letters, digits, _ and -, ocbench.config.RUN_ID) and {threads}.
# Where RESULTS is shell-safe, quoting would change no command a job runs, only the rules' text, and
# Snakemake reruns every job whose rule's text changed (rerun trigger `code`: a finished 50-epoch run,
# a downloaded zip). So such a workflow keeps the text it had before quoting; one whose RESULTS needs
# quoting (a space, a $) never ran a job before (the unquoted commands failed), so nothing reruns.
QUOTE = "" if shlex.quote(RESULTS) == RESULTS else ":q"
FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][\w.]*)\}(?!\})")  # {x}, not {{x}} (which reaches the shell as {x})


def quoted_fields(command):
    return FIELD.sub(lambda m: f"{{{m[1]}{QUOTE}}}", command)


def ocbench(command, gpu=False):
    """The shell command of a rule that runs `ocbench COMMAND`, e.g.

        shell: ocbench("train --run {wildcards.run}", gpu=True)

    with `--config {params.config}` after the subcommand (each such rule declares CONFIG_FILE
    as params.config) and the output into the rule's log. gpu=True, for a rule that holds a `gpu`
    resource: on a GPU slot of the job's own (`ocbench with-gpu`, ocbench/gpus.py), with
    NETWORK_ENV. COMMAND is Snakemake's to format ({wildcards.run}, {threads}, {output}).

    The text is exactly what the rules spelled out before this helper, {params.config} included,
    wherever no field needs quoting (QUOTE): Snakemake reruns a job whose rule's command text or params
    changed (rerun triggers `code`, `params`), and a finished 50-epoch run must not train again for a
    refactoring."""
    subcommand, dashes, options = command.partition(" --")
    command = quoted_fields(f"{subcommand} --config {{params.config}}{dashes}{options}")
    if gpu:
        command = f"{NETWORK_ENV}{OCBENCH} with-gpu {quoted_fields('--config {params.config}')} -- {PYTHON} -m ocbench {command}"
    else:
        command = f"{OCBENCH} {command}"
    return f"{command} > {quoted_fields('{log}')} 2>&1"
