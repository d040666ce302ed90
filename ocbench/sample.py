"""`ocbench sample`: images out of a saved generator, as PNG files or as one grid.

The pixels are the FID's: the latents of `ocbench fid score --generator CKPT -n N --seed S`
(`metrics.generator_sampler`: all N drawn up front from the seed) and its quantisation
(`fid.to_uint8`, which is what torchvision's `save_image` writes into a PNG). So
`python -m pytorch_fid DIR STATS` on the folder gives the FID that ocbench computes for that
generator, N and seed. Without -n and --seed they are the images the snapshot's epoch was scored on
in training (the snapshot keeps that evaluation's seed and count), so the FID is the one in
metrics.csv. The grid is training's sample-grid layout (`train.save_grid`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ocbench import fid
from ocbench.errors import OcbenchError
from ocbench.metrics import generator_sampler, image_files
from ocbench.progress import progress
from ocbench.train import atomic_write, save_grid

GRID_IMAGES = 64  # a grid's default size, as training's train.grid_size


def write_images(checkpoint: str | Path, out_dir: str | Path, n: int | None = None, seed: int | None = None,
                 device: torch.device | str = "cpu", batch_size: int = 100) -> list[Path]:
    """N PNG files 000000.png, 000001.png, ... in `out_dir` (sorted by name = in sampling order)."""
    from PIL import Image

    out_dir = Path(out_dir)
    if out_dir.is_dir() and (existing := image_files(out_dir)):
        raise OcbenchError(f"{out_dir} already holds {len(existing)} image files, which pytorch-fid would "
                           "score too; give --out a new or empty folder")
    sample, n = generator_sampler(checkpoint, device, n, seed)  # a bad checkpoint fails before any mkdir
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(n - 1)))
    paths = []
    bar = progress(total=n, desc="sample", unit="img")
    for start in range(0, n, batch_size):
        with torch.no_grad():
            batch = fid.to_uint8(sample(start, min(batch_size, n - start)))
        for image in batch.permute(0, 2, 3, 1).cpu().numpy():
            path = out_dir / f"{len(paths):0{digits}d}.png"
            try:  # atomic: an interrupted run leaves no half-written PNG for pytorch-fid to choke on
                atomic_write(path, lambda f: Image.fromarray(image).save(f, format="png"))
            except OSError as exc:
                raise OcbenchError(f"cannot write {path}: {exc.strerror or exc} ({len(paths)} of {n} images "
                                   "written); free space, empty the folder and rerun") from None
            paths.append(path)
        bar.update(len(batch))
    bar.close()
    return paths


def write_grid(checkpoint: str | Path, path: str | Path, n: int = GRID_IMAGES, seed: int | None = None,
               device: torch.device | str = "cpu") -> Path:
    """The N images `write_images` writes for this N and seed, as one PNG grid laid out as training's."""
    sample, n = generator_sampler(checkpoint, device, n, seed)
    with torch.no_grad():
        images = sample(0, n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_grid(images, path)
    except OSError as exc:
        raise OcbenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
