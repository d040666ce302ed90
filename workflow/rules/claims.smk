# ==================================================================================================
# Claims: all runs -> each of the paper's claims as a verdict (results/<config>/claims.md, .csv) and
# its forest plot (figures/<config>/claims.<format>); see ocbench/claims.py. Targets (CLAIMS) in
# common.smk.
# ==================================================================================================


rule claims:
    input:
        AGGREGATED,
    output:
        md=report(f"{RESULTS}/claims.md", caption="../report/claims.rst", category="Claims"),
        csv=f"{RESULTS}/claims.csv",
        figures=[
            report(
                f"{FIGURES_DIR}/claims.{ext}",
                caption="../report/claims.rst",
                category="Claims",
                labels={"figure": "Claims (forest plot)", "format": ext},
            )
            for ext in FIGURE_FORMATS
        ],
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("run", "analysis", "figures.formats"),
    conda:
        ENV
    shell:
        ocbench("claims")
