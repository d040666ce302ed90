# ==================================================================================================
# Data: CelebA (or, for synthetic configs, a synthetic CelebA) -> one prepared uint8 N x 128 x 128 x 3
# array, PREPARED. Paths in common.smk.
# ==================================================================================================

# img_align_celeba.zip, or an extracted img_align_celeba/ folder the user placed by hand.
IMAGES_ARE_ZIP = IMAGES.endswith(".zip")


# --------------------------------------------------------------------------------------------------
# The images and the split file
# --------------------------------------------------------------------------------------------------

if CFG.data.synthetic:

    rule synth:
        output:
            images=IMAGES,
            partition=PARTITION,
        log:
            f"{LOGS}/synth.log",
        benchmark:
            f"{BENCH}/synth.tsv"
        params:
            config=CONFIG_FILE,
            settings=settings_of("data.synthetic"),
        conda:
            ENV
        shell:
            ocbench("data synth")

else:
    # One rule per file: Snakemake deletes a job's existing outputs before running it, so a
    # single rule for both would delete a hand-placed zip when only the partition file is missing.
    # fetch_images tries data.sources, then the built-in mirrors; fetch_partition writes CelebA's
    # official split file itself (no download). An extracted folder has no rule: nothing can
    # fetch it, so Snakemake says it is missing.
    if IMAGES_ARE_ZIP:

        rule fetch_images:
            output:
                IMAGES,
            log:
                f"{LOGS}/fetch_images.log",
            benchmark:
                f"{BENCH}/fetch_images.tsv"
            params:
                config=CONFIG_FILE,
            conda:
                ENV
            shell:
                ocbench("data fetch", "--only images")

    rule fetch_partition:
        output:
            PARTITION,
        log:
            f"{LOGS}/fetch_partition.log",
        benchmark:
            f"{BENCH}/fetch_partition.tsv"
        params:
            config=CONFIG_FILE,
        conda:
            ENV
        shell:
            ocbench("data fetch", "--only partition")


# --------------------------------------------------------------------------------------------------
# The prepared array
# --------------------------------------------------------------------------------------------------


rule prepare:
    input:
        images=IMAGES,
        partition=PARTITION,
    output:
        PREPARED,
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{BENCH}/prepare.tsv"
    params:
        config=CONFIG_FILE,
        settings=settings_of("data.split", "data.crop", "data.resize", "data.image_size"),
    threads: ALL_CORES  # decoding and resizing JPEGs, one worker process per thread
    conda:
        ENV
    shell:
        ocbench("data prepare", "--workers {threads:q}")
