# ocbench: reproduce "Stabilizing GANs with Octave Convolutions".
#
#   snakemake --cores 1 --resources gpu=1                                  # the paper's protocol
#   snakemake --cores 2 --resources gpu=1 --configfile workflow/config/smoke.yaml   # CPU smoke test
#
# Rules call the `ocbench` CLI, so every step can also be run by hand. workflow/rules/common.smk
# validates the config against workflow/schemas/config.schema.yaml, the schema ocbench uses too.

import sys

from snakemake.utils import min_version

min_version("8.0")
# The ocbench package sits beside this file; it need not be installed for Snakemake to use it.
sys.path.insert(0, workflow.basedir)
from ocbench.workflow_lock import claim_for_snakemake
from snakemake_interface_executor_plugins.settings import ExecMode

# After a crash the same command resumes: this Snakemake registers itself (a kernel lock held while
# it lives; its jobs carry a mark in their environment) and, when it is to run jobs on this machine and
# no other Snakemake of the workflow nor any job of a killed one is alive here, removes the lock a
# killed one left, before Snakemake checks it. Job processes (SLURM jobs, --mode remote/subprocess)
# neither register nor remove anything: their main Snakemake holds the directory. See
# ocbench/workflow_lock.py.
if workflow.exec_mode == ExecMode.DEFAULT:
    said = claim_for_snakemake()
    if said:
        print(said, file=sys.stderr)


configfile: f"{workflow.basedir}/workflow/config/paper.yaml"


# common.smk first: the config, the paths and the helpers the rule files use. The rule files, one
# per stage in the order the data flows, need nothing from each other.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
