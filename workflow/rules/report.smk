# ==================================================================================================
# Report: `snakemake --report report.html`, every figure with its caption (workflow/report/*.rst;
# the rules mark their outputs with report()).
# ==================================================================================================


report: "../report/workflow.rst"
