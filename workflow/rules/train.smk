# One job per run {gan}_{variant}_s{seed}, on a GPU slot of its own (ocbench with-gpu, see
# ocbench/gpus.py). `ocbench train` resumes from the checkpoint in
# results/<config>/state/<run>/, which Snakemake does not know about and so never deletes.


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_-]*_[A-Za-z0-9-]+_s[0-9]+",


rule train:
    input:
        prepared=PREPARED,
        stats=STATS,
        weights=WEIGHTS,
        preflight=PREFLIGHT,
    output:
        metrics=f"{RESULTS}/runs/{{run}}/metrics.csv",
        summary=f"{RESULTS}/runs/{{run}}/run.json",
    log:
        f"{LOGS}/train/{{run}}.log",
    benchmark:
        f"{BENCH}/train/{{run}}.tsv"
    params:
        config=CONFIG_FILE,
    threads: NETWORK_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        f"{NETWORK_ENV}{OCBENCH} with-gpu --config {{params.config}} -- "
        f"{PYTHON} -m ocbench train --config {{params.config}} --run {{wildcards.run}} > {{log}} 2>&1"
