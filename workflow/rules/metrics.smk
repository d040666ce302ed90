# ==================================================================================================
# Metrics: pytorch-fid's Inception weights (WEIGHTS) and the reference statistics of the prepared
# images (STATS), which every FID of a run is measured against. Paths in common.smk.
# ==================================================================================================


rule fid_weights:
    output:
        WEIGHTS,
    log:
        f"{LOGS}/fid_weights.log",
    benchmark:
        f"{BENCH}/fid_weights.tsv"
    params:
        config=CONFIG_FILE,
    conda:
        ENV
    shell:
        ocbench("fid weights")


rule fid_stats:
    input:
        prepared=PREPARED,
        weights=WEIGHTS,
    output:
        STATS,
    log:
        f"{LOGS}/fid_stats.log",
    benchmark:
        f"{BENCH}/fid_stats.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("data.split", "metrics.dims", "metrics.stats_images", "metrics.pr_real_samples",
                             "metrics.final_real_images", "metrics.final_real_seed"),
    threads: NETWORK_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        ocbench("fid stats", gpu=True)
