"""The two ways a batch reaches the training step, which `bench train` and `bench protocol` time:

- ours (training's data path, ocbench/batches.py): the prepared uint8 array sits whole on the
  device (or in RAM on a CPU), a batch is a gather by shuffled indices, converted on the device;
- the authors' way: an ImageFolder of PNGs through a DataLoader with no workers, ToTensor and
  Normalize per image, `.to(device)` per batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ocbench.batches import batch_gatherer, to_model_input
from ocbench.device import sync


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
