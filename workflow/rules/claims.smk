# All runs -> each of the paper's claims as a verdict (results/<config>/claims.md, .csv) and its
# forest plot (figures/<config>/claims.<format>); see ocbench/claims.py.

CLAIMS = [f"{RESULTS}/claims.md", f"{RESULTS}/claims.csv"] + expand(
    f"{FIGURES_DIR}/claims.{{ext}}", ext=CFG.figures.formats
)


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
            for ext in CFG.figures.formats
        ],
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    params:
        config=CONFIG_FILE,
    conda:
        ENV
    shell:
        f"{OCBENCH} claims --config {{params.config}} > {{log}} 2>&1"
