# ==================================================================================================
# Outputs: all runs -> the aggregated metrics (AGGREGATED), Figures 2-7 (and 8, see FIGURE_NUMBERS)
# and the stability summary. Paths and targets in common.smk.
# ==================================================================================================


rule aggregate:
    input:
        expand(RUN_SUMMARY, run=RUN_IDS),
        expand(RUN_METRICS, run=RUN_IDS),
    output:
        AGGREGATED,
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCH}/aggregate.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("run"),  # the order of the runs
    conda:
        ENV
    shell:
        ocbench("aggregate")


rule figures:
    input:
        AGGREGATED,
    output:
        # FIGURES, each with its caption in `snakemake --report`
        [
            report(
                f"{FIGURES_DIR}/fig{n}.{ext}",
                caption=f"../report/fig{n}.rst",
                category="Figures",
                labels={"figure": f"Figure {n}", "format": ext},
            )
            for n in FIGURE_NUMBERS
            for ext in FIGURE_FORMATS
        ],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("run", "figures"),
    conda:
        ENV
    shell:
        ocbench("figures")


rule summary:
    input:
        AGGREGATED,
    output:
        # SUMMARY
        md=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
        csv=f"{RESULTS}/summary.csv",
        gans=f"{RESULTS}/summary_gans.csv",
    log:
        f"{LOGS}/summary.log",
    benchmark:
        f"{BENCH}/summary.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("run", "analysis.std_window"),
    conda:
        ENV
    shell:
        ocbench("summary")
