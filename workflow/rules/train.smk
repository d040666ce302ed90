# ==================================================================================================
# Training: one job per run {gan}_{variant}_s{seed} of RUN_IDS (the `run` wildcard's constraint, in
# common.smk), on a GPU slot of its own (ocbench with-gpu, see ocbench/gpus.py). `ocbench train`
# resumes from the checkpoint in results/<config>/state/<run>/, which Snakemake does not know about
# and so never deletes.
# ==================================================================================================


rule train:
    input:
        prepared=PREPARED,
        stats=STATS,
        weights=WEIGHTS,
        preflight=PREFLIGHT,
    output:
        metrics=RUN_METRICS,
        summary=RUN_SUMMARY,
    log:
        f"{LOGS}/train/{{run}}.log",
    benchmark:
        f"{BENCH}/train/{{run}}.tsv"
    params:
        config=CONFIG_FILE,
        protocol=lambda wildcards: RUN_FINGERPRINTS[wildcards.run],
    threads: NETWORK_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        ocbench("train", "--run {wildcards.run:q}", gpu=True)
