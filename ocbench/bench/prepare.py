"""Images/s of `ocbench data prepare` against the authors' way, on a synthetic CelebA.

    ocbench bench prepare [--n 5000] [--workers N] [--workdir DIR]

The authors' way (their data loader's preprocessing): one process opens each extracted JPEG, resizes
the whole 178x218 frame to 128x128 and saves it as a PNG. `ocbench data prepare` reads the same images
straight from the zip in parallel and writes one uint8 array. Both use PIL's bilinear filter, so the
difference measured is the pipeline, not the filter. Building the archive and extracting it for the
authors' way are not timed; every file is in the page cache for both (warm runs).

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import yaml
from PIL import Image

from ocbench import config as config_mod
from ocbench import data, synth

FULL, GOAL_S, GOAL_CORES = 202_599, 120, 16


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the prepare workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(*args). CPU time is what a core gives, whatever else runs."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, cpu_seconds() - c0


def authors_way(folder: Path, out: Path, size: int = 128) -> None:
    """One process: open, resize the whole frame, save a PNG per image."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.glob("*.jpg")):
        with Image.open(f) as img:
            img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(out / f"{f.stem}.png")


def ocbench_way(work: Path, images: Path, partition: Path, crop, workers: int, tag: str) -> tuple[float, float]:
    overlay = work / f"{tag}.yaml"
    overlay.write_text(yaml.safe_dump({"name": "bench", "data": {
        "images": str(images), "partition": str(partition), "prepared": str(work / f"{tag}.npy"),
        "crop": crop, "synthetic": {"n": 1, "seed": 0},  # synthetic: no 202,599 count check
    }}))
    cfg = config_mod.load([overlay])
    data.file_md5(images) if images.is_file() else None  # hash once up front, as fetch would have
    return timed(data.prepare, cfg, False, workers, False)


def bench_prepare(n: int = 5000, workers: int | None = None, workdir: Path | None = None) -> None:
    """Time each pipeline on `n` synthetic JPEGs in `workdir` (default: a temporary folder, removed
    after) and print the table."""
    workers = workers or data.default_workers()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        zip_path, part = synth.write_synthetic(work / "img_align_celeba.zip", None, n, 0)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(work)
        folder = work / "img_align_celeba"

        load0 = os.getloadavg()[0]
        cases = [  # (what, processes, (wall s, CPU s))
            ("authors' way: JPEG folder, resize whole frame, one PNG each", 1,
             timed(authors_way, folder, work / "png")),
            ("ocbench prepare: zip, crop null", 1, ocbench_way(work, zip_path, part, None, 1, "z1")),
            ("ocbench prepare: zip, crop center (default)", 1, ocbench_way(work, zip_path, part, "center", 1, "c1")),
            ("ocbench prepare: zip, crop null", workers,
             ocbench_way(work, zip_path, part, None, workers, "zn")),
            ("ocbench prepare: zip, crop center (default)", workers,
             ocbench_way(work, zip_path, part, "center", workers, "cn")),
            ("ocbench prepare: folder, crop center", workers,
             ocbench_way(work, folder, part, "center", workers, "fn")),
        ]

        base_wall, base_cpu = n / cases[0][2][0], n / cases[0][2][1]
        print(f"\n{n:,} synthetic 178x218 JPEGs -> 128x128; {platform.machine()}, {data.default_workers()} cores; "
              f"load average before/after {load0:.2f}/{os.getloadavg()[0]:.2f}\n")
        print("| pipeline | processes | images/s (wall) | images per CPU-second | vs authors' way (wall / CPU) |")
        print("|---|---:|---:|---:|---:|")
        for what, procs, (wall, cpu) in cases:
            print(f"| {what} | {procs} | {n / wall:,.0f} | {n / cpu:,.0f} | "
                  f"{n / wall / base_wall:.1f}x / {n / cpu / base_cpu:.1f}x |")
        need = FULL / GOAL_S
        print(f"\nGoal: {FULL:,} images in {GOAL_S} s = {need:,.0f} images/s = "
              f"{need / GOAL_CORES:,.0f} images/s per core on {GOAL_CORES} cores.")
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
