# ==================================================================================================
# Preflight, before any training job: the environment, the data so far, a few iterations of every
# (GAN, variant) with the config's speed options, a checkpoint round trip, the FID on the device
# against the CPU, and the projected time (ocbench/preflight.py). A failed check fails this job, so
# no training starts; the table with each fix is in its log. It needs only the Inception weights,
# so it runs in the first minutes of a reproduction, before CelebA is downloaded.
# ==================================================================================================


rule preflight:
    input:
        weights=WEIGHTS,
    output:
        PREFLIGHT,
    log:
        f"{LOGS}/preflight.log",
    benchmark:
        f"{BENCH}/preflight.tsv"
    params:
        config=CONFIG_FILE,
    threads: NETWORK_THREADS
    resources:
        gpu=1,
    priority: 10  # before the downloads and prepare, which do not need it, so it fails early
    conda:
        ENV
    shell:
        ocbench("preflight", "--json {output:q}", gpu=True)
