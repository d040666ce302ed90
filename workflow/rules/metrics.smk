# pytorch-fid's Inception weights and the reference statistics of the prepared images.

from ocbench.hub import weights_path  # ocbench.fid would import torch

WEIGHTS = str(weights_path(CFG.metrics.weights_dir))
STATS = CFG.metrics.stats


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
        f"{OCBENCH} fid weights --config {{params.config}} > {{log}} 2>&1"


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
    threads: NETWORK_THREADS
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        f"{NETWORK_ENV}{OCBENCH} with-gpu --config {{params.config}} -- "
        f"{PYTHON} -m ocbench fid stats --config {{params.config}} > {{log}} 2>&1"
