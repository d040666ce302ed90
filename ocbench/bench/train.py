"""`ocbench bench train`: training iterations/s, ours against a loop written the authors' way.

Both loops run the same training step (the protocol's D step then G step, `train.build_run`'s) on
the same networks; they differ only in how a batch reaches the device (ocbench/bench/routes.py).
Results are printed as a table and returned as rows, for BENCHMARKS.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ocbench.batches import load_images
from ocbench.bench.routes import authors_batches, authors_loader, our_batches, seconds_per_iteration
from ocbench.config import Config, run_id
from ocbench.device import resolve_device, runs_sharing_gpu
from ocbench.train import build_run, configure_backends


def compare(loops: dict, step, device, warmup: int, iterations: int, rounds: int = 3) -> dict:
    """Median it/s of each loop over `rounds` interleaved rounds: on a shared, noisy machine the
    loops see the same neighbours, so their ratio means something even when the rates do not."""
    for batches in loops.values():
        for _ in range(warmup):
            step(next(batches), None, True)
    rates = {name: [] for name in loops}
    for _ in range(rounds):
        for name, batches in loops.items():
            rates[name].append(1 / seconds_per_iteration(step, batches, device, iterations))
    return {name: float(np.median(r)) for name, r in rates.items()}


def bench_train(cfg: Config, iterations: int, warmup: int, rounds: int = 3, variants=("baseline", "oct"),
                log=print) -> list[dict]:
    """Per configured GAN and each of `variants` (no beta weighting: the baseline's and OCT's (1, 1)),
    both loops' median it/s and their ratio."""
    train_cfg = cfg.train
    device = resolve_device(train_cfg.device)
    configure_backends(train_cfg, device)
    images = load_images(cfg.data.prepared, device, train_cfg.data_on_device, runs_sharing_gpu(cfg.gpus.runs_per_gpu))
    n = len(images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        loader = authors_loader(images.cpu().numpy()[: max(n, train_cfg.batch_size)], Path(tmp), train_cfg.batch_size)
        for gan_name in cfg.run.gans:
            for variant_name in variants:
                step, alpha = build_run(cfg, run_id(gan_name, variant_name, 0), device, images).step, \
                    cfg.variants[variant_name].alpha
                rates = compare({"ours": our_batches(images, train_cfg.batch_size, device, train_cfg.channels_last),
                                "authors": authors_batches(loader, device)}, step, device, warmup, iterations, rounds)
                row = {"gan": gan_name, "alpha": alpha, "ours_it_s": rates["ours"], "authors_it_s": rates["authors"]}
                row["ratio"] = row["ours_it_s"] / row["authors_it_s"]
                log(f"{gan_name:<6} alpha {alpha:<4} ours {row['ours_it_s']:8.2f} it/s   "
                    f"authors' way {row['authors_it_s']:8.2f} it/s   ratio {row['ratio']:.2f}")
                rows.append(row)
    return rows
