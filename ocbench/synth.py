"""A synthetic CelebA: face-like 178x218 JPEGs in exactly the layout of the real archive.

No machine here reaches Google Drive, so tests and the smoke workflow run on this instead. The archive
is what `ocbench data prepare` reads for the real dataset: a zip holding `img_align_celeba/000001.jpg`
... and a `list_eval_partition.txt` beside it whose train/valid/test blocks follow CelebA's proportions.

Each image is drawn with PIL from its own random generator seeded by (seed, index), so image i is the
same whatever n is, and the zip is byte-identical for a seed (fixed member timestamps and attributes).
The faces vary in the ways a GAN can learn and a person can check by eye: background colour, skin tone,
face size and position, hair colour and volume, eye/mouth shape, a small head tilt and turn.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ocbench.data import CELEBA_FRAME
from ocbench.errors import UsageError
from ocbench.formats import atomic_write

WIDTH, HEIGHT = CELEBA_FRAME  # CelebA "Align&Cropped" frame (w x h)
FOLDER = "img_align_celeba"

# CelebA's split sizes; a synthetic archive of n images keeps the same proportions, in the same
# order (train block first, then valid, then test), as list_eval_partition.txt does.
CELEBA_SPLIT_SIZES = (162_770, 19_867, 19_962)

# 1980-01-01 is the earliest time a zip entry can hold; fixed so the bytes depend only on the seed.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

SKIN_LIGHT = np.array([255, 224, 196])
SKIN_DARK = np.array([110, 70, 45])
HAIR = [(30, 25, 20), (70, 45, 25), (120, 80, 40), (200, 165, 100), (150, 60, 30), (160, 160, 160)]
IRIS = [(60, 40, 25), (40, 90, 140), (70, 110, 60), (30, 30, 30)]


def _colour(rng, lo=0, hi=256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def face_image(seed: int, index: int) -> Image.Image:
    """Image `index` (0-based) of the synthetic dataset `seed`: a 178x218 RGB face."""
    rng = np.random.default_rng([seed, index])
    bg = _colour(rng, 40, 230)
    img = Image.new("RGB", (WIDTH, HEIGHT), bg)
    d = ImageDraw.Draw(img)

    # Face geometry: centred near where CelebA's alignment puts faces, with small size/pose changes.
    cx = WIDTH / 2 + rng.normal(0, 4)
    cy = 125 + rng.normal(0, 4)
    fw = rng.uniform(34, 44)          # half-width of the face oval
    fh = fw * rng.uniform(1.25, 1.45)  # half-height
    turn = rng.uniform(-0.25, 0.25)    # yaw: features slide sideways within the oval
    skin = tuple(int(v) for v in SKIN_DARK + rng.uniform(0, 1) ** 0.7 * (SKIN_LIGHT - SKIN_DARK))
    hair = HAIR[rng.integers(len(HAIR))]
    shirt = _colour(rng, 0, 256)

    # Neck, then hair behind the head, then the face on top; shoulders come after the tilt below.
    d.rectangle([cx - fw * 0.45, cy + fh * 0.6, cx + fw * 0.45, HEIGHT - 20], fill=skin)
    volume = rng.uniform(1.05, 1.35)
    d.ellipse([cx - fw * volume, cy - fh * 1.15, cx + fw * volume, cy + fh * rng.uniform(0.2, 0.9)], fill=hair)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    fringe = rng.uniform(0.45, 0.75)  # how far the hair comes down the forehead
    d.chord([cx - fw * 1.02, cy - fh * 1.08, cx + fw * 1.02, cy - fh * (1 - 2 * fringe)], 180, 360, fill=hair)

    # Eyes, brows, nose, mouth: shifted together by the turn of the head.
    fx = cx + turn * fw
    ey = cy - fh * rng.uniform(0.05, 0.2)
    gap = fw * rng.uniform(0.38, 0.5)
    ew, eh = fw * rng.uniform(0.16, 0.22), fw * rng.uniform(0.07, 0.12)
    iris = IRIS[rng.integers(len(IRIS))]
    brow = tuple(int(c * 0.6) for c in hair)
    look = rng.uniform(-0.4, 0.4) * ew
    for side in (-1, 1):
        ex = fx + side * gap
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(245, 245, 240))
        r = eh * 0.95
        d.ellipse([ex + look - r, ey - r, ex + look + r, ey + r], fill=iris)
        by = ey - eh - fw * rng.uniform(0.12, 0.2)
        d.line([ex - ew * 1.1, by, ex + ew * 1.1, by - 2], fill=brow, width=3)
    shade = tuple(int(c * 0.82) for c in skin)
    ny = cy + fh * rng.uniform(0.2, 0.3)
    d.polygon([(fx, ey + eh), (fx - fw * 0.12, ny), (fx + fw * 0.12, ny)], fill=shade)
    my = cy + fh * rng.uniform(0.5, 0.6)
    mw = fw * rng.uniform(0.3, 0.5)
    mh = fw * rng.uniform(0.06, 0.25)
    lips = (int(rng.integers(150, 210)), int(rng.integers(50, 90)), int(rng.integers(60, 100)))
    d.chord([fx - mw, my - mh, fx + mw, my + mh], 0, 180, fill=lips)  # a smile, open or closed

    # A small head tilt, the shoulders (untilted, so no background wedge shows at the bottom corners),
    # then a soft blur so the image looks photographed rather than drawn.
    img = img.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, center=(cx, cy), fillcolor=bg)
    ImageDraw.Draw(img).ellipse([cx - 85, HEIGHT - 35, cx + 85, HEIGHT + 80], fill=shirt)
    return img.filter(ImageFilter.GaussianBlur(0.8))


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, valid, test) counts for n images in CelebA's proportions."""
    total = sum(CELEBA_SPLIT_SIZES)
    train = round(n * CELEBA_SPLIT_SIZES[0] / total)
    valid = round(n * CELEBA_SPLIT_SIZES[1] / total)
    return train, valid, n - train - valid


def image_name(index: int) -> str:
    """0-based index -> CelebA's file name, 000001.jpg ..."""
    return f"{index + 1:06d}.jpg"


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.create_system = 3  # unix, whatever platform writes it
    info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else (0o100644 << 16)
    info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
    return info


def write_synthetic(zip_path: str | Path, partition_path: str | Path | None, n: int, seed: int,
                    quality: int = 90, progress: bool = True) -> tuple[Path, Path]:
    """Write the zip and its partition file (default: beside the zip); both atomically.

    Returns (zip path, partition path). Deterministic: the same (n, seed) gives the same bytes.
    """
    from tqdm import tqdm

    # Before anything is written: an empty archive would pass for a dataset until training found no batch.
    if n < 1:
        raise UsageError(f"a synthetic dataset needs at least 1 image, not {n}; pass --n N, e.g. --n 200")
    if seed < 0:
        raise UsageError(f"the seed of a synthetic dataset is a number >= 0, not {seed}; pass e.g. --seed 0")
    zip_path = Path(zip_path)
    partition_path = Path(partition_path) if partition_path else zip_path.parent / "list_eval_partition.txt"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partition_path.parent.mkdir(parents=True, exist_ok=True)

    def write_zip(f):
        with zipfile.ZipFile(f, "w") as zf:
            zf.writestr(_zip_entry(f"{FOLDER}/"), b"")
            for i in tqdm(range(n), desc="synth", unit="img", disable=not progress, mininterval=1):
                buf = io.BytesIO()
                face_image(seed, i).save(buf, format="JPEG", quality=quality)
                zf.writestr(_zip_entry(f"{FOLDER}/{image_name(i)}"), buf.getvalue(), compresslevel=6)

    atomic_write(zip_path, write_zip)

    train, valid, _ = split_sizes(n)
    lines = [f"{image_name(i)} {0 if i < train else 1 if i < train + valid else 2}\n" for i in range(n)]
    atomic_write(partition_path, "".join(lines))
    return zip_path, partition_path
