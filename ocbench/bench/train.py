"""`ocbench bench train`: training iterations/s, ours against a loop written the authors' way.

Both loops run the same `TrainingStep` (the protocol's D step then G step) on the same networks; they
differ only in how a batch reaches the device:

- ours: the prepared uint8 array sits whole on the device (or in RAM on a CPU), a batch is a
  gather by shuffled indices, converted to float on the device;
- the authors' way: an ImageFolder of PNGs through a DataLoader with no workers, ToTensor and
  Normalize per image, `.to(device)` per batch.

Results are printed as a table and returned as rows, for BENCHMARKS.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ocbench.config import Config
from ocbench.device import resolve_device, sync
from ocbench.train import batch_gatherer, build_networks, build_step, configure_backends, load_images, to_model_input


def authors_loader(images: np.ndarray, folder: Path, batch_size: int):
    """ImageFolder of PNGs (one per image, written once) through a worker-less DataLoader."""
    from PIL import Image
    from torchvision import datasets, transforms

    (folder / "faces").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / "faces" / f"{i:06d}.png")
    dataset = datasets.ImageFolder(
        str(folder),
        transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]),
    )
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=0)


def build(cfg: Config, gan_name: str, alpha: float, device: torch.device):
    """(G, the training step as the config builds it) of one GAN at `alpha`, seeded as a run with
    seed 0."""
    train_cfg, gan = cfg.train, cfg.gans[gan_name]
    torch.manual_seed(0)
    G, D = build_networks(alpha, gan, train_cfg, device)
    noise = torch.Generator(device).manual_seed(0)
    step = build_step(G, D, gan, train_cfg, device, noise)
    return G, step


def our_batches(images: torch.Tensor, batch_size: int, device: torch.device, channels_last: bool):
    """Training's data path, endlessly: a shuffled gather from the prepared array, converted on the device."""
    n, gather = len(images), batch_gatherer(images, device, batch_size)
    while True:
        perm = torch.randperm(n, device=images.device)
        for b in range(n // batch_size):
            yield to_model_input(gather(perm[b * batch_size:(b + 1) * batch_size]), device, channels_last)


def authors_batches(loader, device: torch.device):
    """The authors' data path, endlessly: the DataLoader's batches, `.to(device)` each."""
    while True:
        for x, _ in loader:
            yield x.to(device)


def seconds_per_iteration(step, batches, device, iterations: int, beta=None, g_turn: bool = True) -> float:
    """Mean seconds of `step` over `iterations` batches of `batches` (an endless iterator). `beta`
    None: no weighting (the baseline's and OCT's (1, 1)); one object on every call, as a CUDA-graph
    step requires."""
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step(next(batches), beta, g_turn)
    sync(device)
    return (time.perf_counter() - start) / iterations


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


def bench_train(cfg: Config, iterations: int, warmup: int, rounds: int = 3, alphas=(0.0, 0.5),
                log=print) -> list[dict]:
    train_cfg = cfg.train
    device = resolve_device(train_cfg.device)
    configure_backends(train_cfg, device)
    images = load_images(cfg.data.prepared, device, train_cfg.data_on_device, cfg.gpus.runs_per_gpu)
    n = len(images)
    host_images = images.cpu().numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        loader = authors_loader(host_images[: max(n, train_cfg.batch_size)], Path(tmp), train_cfg.batch_size)

        for gan_name in cfg.run.gans:
            for alpha in alphas:
                _, step = build(cfg, gan_name, alpha, device)
                rates = compare({"ours": our_batches(images, train_cfg.batch_size, device, train_cfg.channels_last),
                                "authors": authors_batches(loader, device)}, step, device, warmup, iterations, rounds)
                row = {"gan": gan_name, "alpha": alpha, "ours_it_s": rates["ours"], "authors_it_s": rates["authors"]}
                row["ratio"] = row["ours_it_s"] / row["authors_it_s"]
                log(f"{gan_name:<6} alpha {alpha:<4} ours {row['ours_it_s']:8.2f} it/s   "
                    f"authors' way {row['authors_it_s']:8.2f} it/s   ratio {row['ratio']:.2f}")
                rows.append(row)

    return rows
