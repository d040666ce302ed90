# All runs -> the aggregated metrics, Figures 2-7 (and 8 where the config trains a GAN with spectral
# norm or a gradient penalty) and the stability summary.

AGGREGATED = f"{RESULTS}/metrics.csv"
FIGURE_NUMBERS = CFG.figure_numbers()
FIGURES = expand(f"{FIGURES_DIR}/fig{{n}}.{{ext}}", n=FIGURE_NUMBERS, ext=CFG.figures.formats)
SUMMARY = [f"{RESULTS}/summary.md", f"{RESULTS}/summary.csv", f"{RESULTS}/summary_gans.csv"]


rule aggregate:
    input:
        expand(f"{RESULTS}/runs/{{run}}/run.json", run=RUN_IDS),
        expand(f"{RESULTS}/runs/{{run}}/metrics.csv", run=RUN_IDS),
    output:
        AGGREGATED,
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCH}/aggregate.tsv"
    params:
        config=CONFIG_FILE,
    conda:
        ENV
    shell:
        f"{OCBENCH} aggregate --config {{params.config}} > {{log}} 2>&1"


rule figures:
    input:
        AGGREGATED,
    output:
        [
            report(
                f"{FIGURES_DIR}/fig{n}.{ext}",
                caption=f"../report/fig{n}.rst",
                category="Figures",
                labels={"figure": f"Figure {n}", "format": ext},
            )
            for n in FIGURE_NUMBERS
            for ext in CFG.figures.formats
        ],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    params:
        config=CONFIG_FILE,
    conda:
        ENV
    shell:
        f"{OCBENCH} figures --config {{params.config}} > {{log}} 2>&1"


rule summary:
    input:
        AGGREGATED,
    output:
        md=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
        csv=f"{RESULTS}/summary.csv",
        gans=f"{RESULTS}/summary_gans.csv",
    log:
        f"{LOGS}/summary.log",
    benchmark:
        f"{BENCH}/summary.tsv"
    params:
        config=CONFIG_FILE,
    conda:
        ENV
    shell:
        f"{OCBENCH} summary --config {{params.config}} > {{log}} 2>&1"
