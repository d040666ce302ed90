"""What a run writes, and how: the on-disk contracts that training writes and reporting reads.

The bottom floor of the package (the standard library only; tqdm for a hash shown as it runs), so that
`aggregate`, `figures`, `summary` and `claims` read a run's files without importing training.

    METRIC_COLUMNS        metrics.csv's columns, one row per epoch (`write_metrics`)
    TIMING_COLUMNS        the only columns two runs of the same protocol may differ in
    GRID_PADDING, grid_columns    the layout of samples/epoch_EEE.png (figures crop images back out)
    CHECKPOINT, ...       the names of a run's resumable state in results/<config>/state/<run id>/
    atomic_write, replacing       how every file of ocbench is written: whole, or not at all
    sha256_of             how a file is identified (weights, prepared arrays, downloads)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import math
import os
import stat
from pathlib import Path
from typing import Callable, Union

METRIC_COLUMNS = [
    "epoch", "iterations", "g_updates", "g_loss", "d_loss", "fid", "precision", "recall",
    "beta_h", "beta_l", "epoch_seconds", "images_per_s", "eval_seconds",
    "weights_sha256", "weights_official", "frechet", "status",
    # KID, FID-infinity (snapshot epochs only) and what makes the numbers comparable (Evaluator.provenance)
    "kid", "kid_std", "fid_inf", "fid_samples", "reference_images", "reference_split", "pr_real_samples",
    "kid_real_samples", "eval_precision",
]
TIMING_COLUMNS = ("epoch_seconds", "images_per_s", "eval_seconds")  # the only non-reproducible ones

# A run's resumable state, in results/<config>/state/<run id>/ (see train.py's docstring)
CHECKPOINT = "checkpoint.pt"  # the newest checkpoint
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the one before: the fallback when the newest cannot be read
POSITION = "checkpoint.json"  # where the newest stands and its protocol, small: what `ocbench status` reads
LOCK = "train.lock"  # held by the one `ocbench train` of the run
# The version of what checkpoint.pt holds: a checkpoint of another version is refused, not guessed at.
CHECKPOINT_FORMAT = 1

GRID_PADDING = 2  # pixels around every image of a sample grid (figures crop images back out)


def grid_columns(n_images: int) -> int:
    """Columns of a sample grid of `n_images`: 8 for the default 64."""
    return int(math.sqrt(n_images)) or 1


Content = Union[bytes, str, Callable]


def create_new(path: Path) -> int:
    """`path` created for writing (O_CREAT | O_EXCL | O_NOFOLLOW), after removing what a killed writer
    left there: a descriptor of a new, empty regular file of ours. A folder others may write to (a
    group's data folder) may hold anything under a temporary's fixed name; `unlink` removes a planted
    symlink without following it, and O_EXCL never opens what appeared in between. One exception: a
    symlink of this user's own is followed (the user aimed it; the tests aim /dev/full at a write)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
        return os.open(path, os.O_RDWR | os.O_TRUNC)
    if st is not None:
        os.unlink(path)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)


def rename_own(fd: int, src: Path, dest: Path) -> None:
    """Rename `src` to `dest` only if `src` is still the file `fd` wrote (nobody swapped it since)."""
    a, b = os.fstat(fd), os.stat(src)  # followed: the user's own symlink (create_new) leads to `fd`
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        raise OSError(errno.EEXIST, f"{src} was replaced by another file while it was written; not renamed")
    os.replace(src, dest)


@contextlib.contextmanager
def _replacing(path: str | Path, previous: Path | None = None):
    """`replacing`, yielding (tmp, the descriptor `create_new` gave)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = None
    try:
        fd = create_new(tmp)
        yield tmp, fd
        if previous is not None and path.exists():
            os.replace(path, previous)
        rename_own(fd, tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path, previous: Path | None = None):
    """`with replacing(path) as tmp:` write `tmp` (`<name>.tmp` beside `path`); when the block ends
    without an exception, `tmp` is renamed over `path`, so a reader sees the old file or the whole new
    one, never a part, and a kill leaves the old one. When the block raises (a full disk), `tmp` is
    removed and `path` stays as it was. With `previous`, the file being replaced is kept under that
    name (only once the new one is complete). One writer per file at a time (a run's lock,
    Snakemake's one job per output): the temporary name is fixed, so a rerun replaces what a
    killed writer left (`create_new`: created anew, never written through a planted symlink).
    `atomic_write` is the common case; this form is for writers that want a path (torch.save names
    its archive after the file)."""
    with _replacing(path, previous) as (tmp, _):
        yield tmp


def atomic_write(path: str | Path, content: Content, previous: Path | None = None) -> Path:
    """Write `path` whole or not at all (`replacing`): `content` is bytes, text, or a function
    `write(f)` of a binary file; it reaches the disk (fsync) before the rename. A failed write
    raises OSError with its errno (ENOSPC for a full disk) and leaves `path` as it was."""
    with _replacing(path, previous) as (_, fd), open(fd, "wb", closefd=False) as f:
        if callable(content):
            content(f)
        else:
            f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_metrics(path: Path, rows: list[dict]) -> None:
    """metrics.csv, the whole file, rewritten atomically after every epoch (and on resume, from the
    rows kept in the checkpoint), so that a failed write leaves the rows written before. Not
    rewritten when it already holds exactly these rows."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    atomic_write(path, data)


def sha256_of(path: str | Path, on_block: Callable[[int], object] | None = None) -> str:
    """sha256 of a file, read once in 1 MiB blocks; `on_block(n)` after each (a progress bar's update)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            if on_block is not None:
                on_block(len(block))
    return h.hexdigest()


@dataclasses.dataclass
class RunFiles:
    """Where a run writes: its outputs in `run_dir`, its resumable state in `state_dir`."""

    run_dir: Path
    state_dir: Path

    def __post_init__(self):
        self.metrics, self.summary = self.run_dir / "metrics.csv", self.run_dir / "run.json"
        self.checkpoint, self.previous = self.state_dir / CHECKPOINT, self.state_dir / PREVIOUS_CHECKPOINT
        self.position_json = self.state_dir / POSITION

    def grid(self, epoch: int) -> Path:
        return self.run_dir / "samples" / f"epoch_{epoch:03d}.png"

    def snapshot(self, epoch: int) -> Path:
        return self.run_dir / f"generator_epoch_{epoch:03d}.pt"



# --------------------------------------------------------------------------------------------------
# images: generated images as a PNG holds them, the files pytorch-fid reads


def to_uint8(images):
    """Generator output in [-1, 1] (a torch tensor) -> uint8, bit for bit what a PNG written by
    `torchvision.utils.save_image((images + 1) / 2, ...)` holds: (y * 255 + 0.5) clamped, truncated.
    Training's sample grids use this same rule; FIDs score these images, as pytorch-fid scores PNGs."""
    import torch

    return images.add(1).div(2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def image_files(folder: str | Path) -> list[Path]:
    """pytorch-fid's choice of files: every file with an image extension, sorted by path (none when
    `folder` does not exist)."""
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS

    return sorted(f for ext in IMAGE_EXTENSIONS for f in Path(folder).glob(f"*.{ext}"))
