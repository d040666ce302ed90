# ocbench: reproduce "Stabilizing GANs with Octave Convolutions".
#
#   snakemake --cores 1 --resources gpu=1                                  # the paper's protocol
#   snakemake --cores 2 --resources gpu=1 --configfile workflow/config/smoke.yaml   # CPU smoke test
#
# Rules call the `ocbench` CLI, so every step can also be run by hand. The config is validated
# against workflow/schemas/config.schema.yaml, the schema ocbench validates with too.

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "workflow/config/paper.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        FIGURES,
        SUMMARY,
        AGGREGATED,
    default_target: True
