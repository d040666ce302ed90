# `snakemake --report report.html`: every figure with its caption (workflow/report/*.rst).


report: "../report/workflow.rst"
