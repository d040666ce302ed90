"""Images out of a generator: the latents and samplers training and evaluation score, a saved
generator loaded back, and `ocbench sample`, which writes its images as PNG files or as one grid.

The pixels are the FID's: the latents of `ocbench fid score --generator CKPT -n N --seed S`
(`generator_sampler`: all N drawn up front from the seed) and its quantisation (`formats.to_uint8`,
which is what torchvision's `save_image` writes into a PNG). So `python -m pytorch_fid DIR STATS`
on the folder gives the FID that ocbench computes for that generator, N and seed. Without -n and
--seed they are the images the snapshot's epoch was scored on in training (the snapshot keeps that
evaluation's seed and count), so the FID is the one in metrics.csv. The grid is training's
sample-grid layout (`save_grid`, `formats.grid_columns`).
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Callable

import torch

from ocbench.errors import OcbenchError, UsageError, one_line
from ocbench.formats import GRID_PADDING, atomic_write, grid_columns, image_files, to_uint8
from ocbench.nn import generator
from ocbench.progress import progress

GRID_IMAGES = 64  # a grid's default size, as training's train.grid_size

Sampler = Callable[[int, int], torch.Tensor]  # sample(start, count) -> count images in [-1, 1]


# --------------------------------------------------------------------------------------------------
# latents and samplers

def load_generator(checkpoint: str | Path, device: torch.device | str = "cpu"):
    """(Generator in eval mode, beta, evaluation) from a `generator_epoch_EEE.pt` written by training:
    a dict with "generator" (state_dict), "alpha", "width", "latent_dim", "beta" ([bh, bl]),
    "evaluation" ({"seed", "samples"}: the latents its epoch's FID was computed on; None for a
    snapshot without it, e.g. one saved by hand) and "arch" (dcgan or resnet)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise OcbenchError(f"generator checkpoint {path} not found")
    fix = "pass a generator_epoch_EEE.pt that training wrote (results/<config>/runs/<run>/)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict):  # a bare tensor or list saved by hand
            raise UsageError(f"{path} holds a {type(ckpt).__name__}, not a generator snapshot (a dict with keys "
                             f"generator, arch, alpha, width, latent_dim, beta); {fix}")
        g = generator(ckpt["arch"], ckpt["alpha"], ckpt["width"], ckpt["latent_dim"])
        g.load_state_dict(ckpt["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise UsageError(
            f"{path} is not a generator snapshot (keys generator, arch, alpha, width, latent_dim, beta; "
            f"{type(exc).__name__}: {one_line(exc, 120)}); {fix}"
        ) from None
    return g.to(device).eval(), tuple(float(b) for b in ckpt["beta"]), ckpt.get("evaluation")


def latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """n latents drawn up front from `seed` by a CPU generator: the same on every device and for every
    batch size, so a saved generator and its seed give back the images an evaluation scored."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def latent_sampler(G, beta, z: torch.Tensor, device, autocast=contextlib.nullcontext) -> Sampler:
    """`sample(start, count)`: G (in eval mode) on rows start:start+count of the latents z."""

    def sample(start: int, count: int) -> torch.Tensor:
        with torch.no_grad(), autocast():
            return G(z[start : start + count].to(device), beta).float()

    return sample


def generator_sampler(checkpoint: str | Path, device, n: int | None = None,
                      seed: int | None = None) -> tuple[Sampler, int]:
    """`(sample, n)` for a checkpoint. With n and seed left out: the images its epoch's evaluation
    scored in training (count and seed kept in the snapshot), whose FID is the one in metrics.csv."""
    g, beta, evaluation = load_generator(checkpoint, device)
    evaluation = evaluation or {}
    n = evaluation.get("samples") if n is None else n
    if n is None:
        raise UsageError(f"{checkpoint} does not record its evaluation's sample count; give -n N")
    if n < 1:
        raise UsageError(f"-n must be at least 1, got {n}")
    seed = evaluation.get("seed", 0) if seed is None else seed
    return latent_sampler(g, beta, latents(n, g.latent_dim, seed), device), n


# --------------------------------------------------------------------------------------------------
# writing images


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Images in [-1, 1] as a square-ish PNG grid; [-1, 1] -> [0, 1], then torchvision's uint8
    rounding (`formats.to_uint8`'s). Written atomically."""
    from torchvision.utils import save_image

    atomic_write(path, lambda f: save_image((images.float() + 1) / 2, f, format="png",
                                            nrow=grid_columns(len(images)), padding=GRID_PADDING))


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
            batch = to_uint8(sample(start, min(batch_size, n - start)))
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
