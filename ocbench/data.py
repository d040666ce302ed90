"""CelebA: fetch the archive, check it, and prepare it as one uint8 array.

`fetch` puts `img_align_celeba.zip` at data.images from the first source that gives exactly its bytes:
the user's own `data.sources` (a lab share, a mirror), then the copies in CELEBA_ZIP_MIRRORS (the
PyTorch tutorials' HTTPS copy, then Google Drive); ocbench/download.py resumes, verifies size, md5
and sha256 while the bytes stream in, and renames only a verified file into place. It writes
`list_eval_partition.txt` itself: CelebA's split is three contiguous ranges, and the generated file is
byte for byte the official one (its md5 is checked). A file already in place is checked, and a wrong
one is set aside as `*.invalid`; every failure ends in a one-line error that says what was found and
where to put a file downloaded by hand.

`prepare` reads the JPEGs straight from the zip (or from an extracted folder), crops, resizes and
writes them into one N x S x S x 3 uint8 `.npy`, in parallel over all cores. The recipe, which the
tests check pixel for pixel against PIL:

    crop: center  -> the centred square of the frame, rows (h - w) // 2 ... (20 ... 197 for 178 x 218),
    crop: null    -> the whole 178 x 218 frame (aspect distorted, as the authors' code did),
    then          -> PIL `Image.resize((S, S), <data.resize filter>)`, which antialiases when shrinking.

The array is written into a temporary file beside the target and renamed at the end, so a killed or
failed prepare leaves either no array or a complete one; a JSON with the same stem records where the
images came from (path and md5), the settings, any skipped files and the array's own sha256 (hashed in
file order while the workers fill it), which `ocbench data verify` checks again on demand.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image

from ocbench import download
from ocbench.download import Expected
from ocbench.errors import OcbenchError, one_line
from ocbench.formats import atomic_write, sha256_of


# CelebA's two files: what they must be, and the copies of the zip known to hold exactly its bytes,
# tried in this order after the user's data.sources. Functions take these as defaults, so that tests
# can point every check at a small file.
CELEBA_ZIP = Expected("img_align_celeba.zip", 1_443_490_838, "00d2c5bc6d35e252742224ab0c1e8fcb",
                      "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74")
CELEBA_ZIP_MIRRORS = (
    # The PyTorch tutorials' copy (its sha256 is the one torchvision pins for the Drive file): plain
    # HTTPS with Range requests, no quota pages.
    "https://s3.amazonaws.com/pytorch-tutorial-assets/img_align_celeba.zip",
    # The Google Drive id torchvision's CelebA class uses; answered 404/403/login pages since 2022.
    "https://drive.google.com/uc?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM",
)
CELEBA_PARTITION = Expected("list_eval_partition.txt", 2_836_386, "d32c9cbf5e040fd4025c592c306e6668",
                            "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7")
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_COUNTS = {"all": 202_599, "train": 162_770, "valid": 19_867, "test": 19_962}
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
# Every Align&Cropped image is 178 x 218 (w x h), and about 10 KB (ocbench's synthetic ones too). An
# archive member far larger, or a JPEG whose header says another size, is not one of them: a zip bomb
# (a few KB of zeros that inflate to gigabytes) or a decompression bomb (a 1.4 KB JPEG whose header says
# 12000 x 12000 would take 1.2 GB to decode). Both are refused before they are read or decoded.
CELEBA_FRAME = (178, 218)
MAX_MEMBER_BYTES = 1 << 20
FORMAT_VERSION = 1  # bump when the recipe changes, so that older arrays count as out of date

FILTERS = {name: getattr(Image.Resampling, name.upper())
           for name in ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")}


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


# --------------------------------------------------------------------------------------------------
# checking files


def file_md5(path: Path) -> str:
    """md5 of a file, cached in `<file>.md5cache` keyed on size and mtime (the zip is 1.4 GB)."""
    st = path.stat()
    sidecar = path.with_name(path.name + ".md5cache")
    try:
        cached = json.loads(sidecar.read_text())
        if cached["size"] == st.st_size and cached["mtime_ns"] == st.st_mtime_ns:
            return cached["md5"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    md5 = digest.hexdigest()
    remember_md5(path, md5)
    return md5


def remember_md5(path: Path, md5: str) -> None:
    """Write `file_md5`'s cache for a file whose md5 is known (computed while it was downloaded)."""
    st = path.stat()
    try:
        cache = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
        atomic_write(path.with_name(path.name + ".md5cache"), json.dumps(cache))
    except OSError:  # a read-only data folder: just hash again next time
        pass


def what_is_wrong(path: Path, kind: str) -> str | None:
    """What a downloaded file looks like when it is not the file (None: it could be; md5 not checked).

    `kind` is "zip" or "partition". The answers end up in one-line errors: "<path> <answer>; ...".
    """
    size = path.stat().st_size
    if size == 0:
        return "is empty"
    with open(path, "rb") as f:
        head = f.read(4096)
    title = download.html_title(head)
    if title is not None:
        return f"is {download.describe_html(title)} (Google Drive sends one when its quota is exceeded)"
    if kind == "zip" and not zipfile.is_zipfile(path):
        if head.startswith(b"PK\x03\x04"):
            return f"is a truncated zip ({size:,} bytes, the complete one is about 1.4 GB)"
        return f"is not a zip file ({size:,} bytes)"
    if kind == "partition":
        first = head.split(b"\n", 1)[0].strip()
        if not re.fullmatch(rb"\S+\.jpg\s+[012]", first):
            return f"is not a CelebA partition list (first line {first[:40].decode('utf-8', 'replace')!r})"
    return None


def manual_hint(path: Path, expected: Expected = CELEBA_ZIP) -> str:
    """Where to get a file by hand and where to put it (the end of every fetch error)."""
    if expected.name == CELEBA_PARTITION.name:
        return (f"`ocbench data fetch` writes CelebA's official {expected.name} at {path.resolve()} "
                f"({expected.checksums()}) when no file is there, without a download")
    return (f"download {expected.name} by hand (the links on {CELEBA_PAGE}) and place it at {path.resolve()} "
            f"({expected.checksums()}), or list a copy (URL or path) in data.sources, or set data.images to an "
            f"extracted img_align_celeba/ folder")


def set_aside(path: Path) -> Path:
    """Rename a bad file to `<name>.invalid` (kept for inspection, out of the way of the next fetch)."""
    bad = path.with_name(path.name + ".invalid")
    os.replace(path, bad)
    path.with_name(path.name + ".md5cache").unlink(missing_ok=True)
    return bad


def verify(path: Path, expected: Expected, kind: str, accept_other: bool = False) -> None:
    """Raise (after setting the file aside) unless `path`, placed there by hand or an earlier fetch, is
    `expected`: its size first (no need to hash 1.4 GB of the wrong length), then its md5 (cached)."""
    problem = what_is_wrong(path, kind)
    size = path.stat().st_size
    if problem is None and accept_other:
        print(f"{path}: {size:,} bytes, not checked against the official file's digests because data.subset is true")
        return
    if problem is None and size != expected.size:
        problem = f"is {size:,} bytes, not {expected.size:,}"
    if problem is None:
        md5 = file_md5(path)
        if md5 == expected.md5:
            print(f"{path}: md5 {md5} ok")
            return
        problem = f"has md5 {md5}, not {expected.md5}"
    bad = set_aside(path)
    raise OcbenchError(f"{path} {problem}; kept it as {bad.name}. To fix: {manual_hint(path, expected)}")


# --------------------------------------------------------------------------------------------------
# fetch


def fetch(cfg, only: str | None = None) -> None:
    """`ocbench data fetch`: make sure the zip (or a folder) and the partition file are there and right.

    `only` ("images" or "partition") handles one of the two, so that a workflow can give each file its
    own rule (Snakemake deletes a job's existing outputs before running it: a rule that declared both
    would delete a zip placed by hand when only the partition file is missing).
    """
    d = cfg.data
    images, partition = Path(d.images), Path(d.partition)
    if d.synthetic is not None:
        if images.exists() and partition.exists():
            print(f"synthetic dataset {images}: nothing to fetch")
            return
        raise OcbenchError(
            f"this config uses a synthetic dataset (data.synthetic = {d.synthetic}), nothing to download: "
            f"run `ocbench data synth --config ...` to write {images} and {partition}"
        )
    if only != "partition":
        fetch_images(images, d.subset, [*d.sources, *CELEBA_ZIP_MIRRORS])
    if only != "images":
        fetch_partition(partition)


def fetch_images(images: Path, subset: bool, sources: list[str], expected: Expected = CELEBA_ZIP,
                 **download_options) -> None:
    """An extracted folder is taken as it is; a zip is checked when present, else fetched from the
    first of `sources` that gives exactly its bytes (see ocbench/download.py)."""
    if images.is_dir():
        n = sum(1 for _ in _folder_jpegs(images))
        if n == 0:
            raise OcbenchError(f"data.images {images} is a folder with no .jpg files; extract "
                               f"img_align_celeba.zip there or point data.images at the zip")
        print(f"{images}: extracted folder with {n:,} JPEGs (a folder has no md5 to check)")
    elif images.suffix.lower() != ".zip" and not images.exists():
        raise OcbenchError(f"data.images {images} does not exist and is not a .zip path to download to; "
                           f"extract img_align_celeba.zip there or set data.images to .../img_align_celeba.zip")
    elif images.exists():
        verify(images, expected, "zip", accept_other=subset)
    else:
        fetched = download.fetch(images, sources, expected, hint=manual_hint(images, expected), **download_options)
        remember_md5(images, fetched.md5)  # prepare records it without reading 1.4 GB again


def official_partition() -> bytes:
    """CelebA's list_eval_partition.txt, byte for byte: its split is three contiguous ranges of file
    numbers (train, valid, test), written as `NNNNNN.jpg S` lines with CRLF endings."""
    lines, first = [], 1
    for split in ("train", "valid", "test"):
        count = CELEBA_COUNTS[split]
        lines += [f"{i:06d}.jpg {SPLIT_CODES[split]}\r\n" for i in range(first, first + count)]
        first += count
    return "".join(lines).encode("ascii")


def fetch_partition(path: Path, expected: Expected = CELEBA_PARTITION) -> None:
    """A file already at `path` (the user's own copy) is checked and used; else the official one is
    written, checked against its md5 first."""
    if path.exists():
        verify(path, expected, "partition")
        return
    content = official_partition()
    md5 = hashlib.md5(content).hexdigest()
    if md5 != CELEBA_PARTITION.md5 or len(content) != CELEBA_PARTITION.size:  # a guard against editing the ranges
        raise OcbenchError(f"the generated {CELEBA_PARTITION.name} has md5 {md5}, not {CELEBA_PARTITION.md5}; "
                           f"a bug in ocbench: report it, or place the official file at {path.resolve()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content)
    remember_md5(path, md5)
    print(f"wrote {path}: CelebA's split, {len(content):,} bytes, md5 {md5} (the official file's)")


# --------------------------------------------------------------------------------------------------
# reading the images


def _folder_jpegs(folder: Path):
    return (e for e in os.scandir(folder) if e.name.lower().endswith(".jpg") and e.is_file())


def list_source(source: Path) -> dict[str, str]:
    """File name (000001.jpg) -> what to open: a member of the zip, or a path in the folder."""
    if source.is_dir():
        return {e.name: e.path for e in _folder_jpegs(source)}
    with zipfile.ZipFile(source) as zf:
        members = [i.filename for i in zf.infolist() if i.filename.lower().endswith(".jpg") and not i.is_dir()]
    found = {}
    for m in members:
        name = m.rsplit("/", 1)[-1]
        if name in found:
            raise OcbenchError(f"{source} holds {name} twice ({found[name]} and {m}); use CelebA's "
                               f"img_align_celeba.zip, whose JPEGs all sit in one img_align_celeba/ folder")
        found[name] = m
    return found


def read_partition(path: Path) -> list[tuple[str, int]]:
    """`list_eval_partition.txt` -> [(file name, 0|1|2)], in file order. A name listed twice, or a
    UTF-8 byte-order mark (which would hide the first name), is a one-line error."""
    text = path.read_bytes()
    if text.startswith(b"\xef\xbb\xbf"):
        raise OcbenchError(f"{path} starts with a UTF-8 byte-order mark, which CelebA's file has not (an editor "
                           f"added it); save it without one, or delete it: {manual_hint(path, CELEBA_PARTITION)}")
    entries, seen = [], {}
    for k, line in enumerate(text.decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise OcbenchError(f"{path} line {k} is {line[:40]!r}, not '<name>.jpg 0|1|2'; "
                               f"{manual_hint(path, CELEBA_PARTITION)}")
        if parts[0] in seen:
            raise OcbenchError(f"{path} lists {parts[0]} twice (lines {seen[parts[0]]} and {k}); remove the "
                               f"duplicate, or delete the file: {manual_hint(path, CELEBA_PARTITION)}")
        seen[parts[0]] = k
        entries.append((parts[0], int(parts[1])))
    return entries


def transform(img: Image.Image, crop: str | None, resize: str, size: int) -> np.ndarray:
    """The documented recipe: optional centred square crop, then PIL's resize to size x size."""
    if img.mode != "RGB":
        img = img.convert("RGB")  # decodes; greyscale or CMYK JPEGs become RGB
    if crop == "center":
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # A real crop, not resize(box=...): with a box PIL's filter also reads the rows just outside
        # it, so the edge pixels would differ from "crop, then resize".
        img = img.crop((left, top, left + side, top + side))
    return np.asarray(img.resize((size, size), FILTERS[resize]))


# Per-process state of a worker: its own handle on the zip (a ZipFile cannot be shared across
# processes) and its own view of the output array.
_worker: dict = {}


def _init_worker(source: str, out_path: str, crop, resize: str, size: int) -> None:
    _worker.clear()
    _worker["zip"] = None if Path(source).is_dir() else zipfile.ZipFile(source)
    _worker["out"] = np.load(out_path, mmap_mode="r+")
    _worker["recipe"] = (crop, resize, size)


def _open(entry: str) -> Image.Image:
    """The image, header read, not yet decoded; ValueError for what is not a CelebA image (see
    CELEBA_FRAME)."""
    zf = _worker["zip"]
    size = zf.getinfo(entry).file_size if zf is not None else os.stat(entry).st_size
    if size > MAX_MEMBER_BYTES:
        raise ValueError(f"{size:,} bytes uncompressed, more than the {MAX_MEMBER_BYTES:,} accepted: CelebA's "
                         "JPEGs are about 10 KB")
    img = Image.open(io.BytesIO(zf.read(entry)) if zf is not None else entry)
    if img.size != CELEBA_FRAME:
        img.close()
        raise ValueError(f"its header says {img.size[0]}x{img.size[1]}, CelebA's images are "
                         f"{CELEBA_FRAME[0]}x{CELEBA_FRAME[1]}")
    return img


def _prepare_chunk(start: int, entries: list[tuple[str, str]]) -> tuple[int, list[tuple[int, str, str]]]:
    """Decode and write images start, start+1, ...; returns (count, [(index, name, why)] unreadable)."""
    out, recipe = _worker["out"], _worker["recipe"]
    bad = []
    for k, (name, entry) in enumerate(entries):
        try:
            with _open(entry) as img:
                out[start + k] = transform(img, *recipe)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, Image.DecompressionBombError) as exc:
            bad.append((start + k, name, one_line(exc, 80)))
    return len(entries), bad


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _FileOrderSha256:
    """sha256 of the .npy being filled, computed while it is written: the header at once, then each
    chunk's rows as soon as every chunk before it is done (workers finish out of order), read back
    from the page cache while later chunks are still being decoded. No second read of the array."""

    def __init__(self, tmp: Path, tasks):
        self.array = np.load(tmp, mmap_mode="r")
        with open(tmp, "rb") as f:
            self.sha256 = hashlib.sha256(f.read(self.array.offset))
        self.chunks = [(start, start + len(part)) for start, part in tasks]
        self.done: set[int] = set()
        self.next = 0  # index of the first chunk not hashed yet

    def add(self, start: int) -> None:
        self.done.add(start)
        while self.next < len(self.chunks) and self.chunks[self.next][0] in self.done:
            begin, end = self.chunks[self.next]
            self.sha256.update(self.array[begin:end])
            self.next += 1

    def hexdigest(self) -> str | None:
        """The file's sha256, or None when not every chunk was written (a prepare that stopped)."""
        return self.sha256.hexdigest() if self.next == len(self.chunks) else None


def _decode_all(source: Path, tmp: Path, entries, recipe, workers: int, progress: bool, stop_on_bad: bool):
    """Fill the array at `tmp`; returns the unreadable images (stopping at the first if `stop_on_bad`)
    and the file's sha256 (None when it stopped)."""
    from ocbench.progress import progress as progress_bar

    n = len(entries)
    chunk = max(1, min(256, math.ceil(n / (workers * 4))))  # enough tasks to balance, few enough to be cheap
    tasks = [(s, entries[s:s + chunk]) for s in range(0, n, chunk)]
    workers = max(1, min(workers, len(tasks)))
    args = (str(source), str(tmp), *recipe)
    digest = _FileOrderSha256(tmp, tasks)
    bad = []
    bar = progress_bar(total=n, desc="prepare", unit="img", disable=not progress, mininterval=1, smoothing=0.1)
    try:
        if workers == 1:  # no pool: simpler to debug, and no start-up cost for tiny datasets
            _init_worker(*args)
            for s, part in tasks:
                done, b = _prepare_chunk(s, part)
                digest.add(s)
                bar.update(done)
                bad += b
                if b and stop_on_bad:
                    break
            _worker.clear()
            return bad, digest.hexdigest()
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=args) as pool:
            futures = {pool.submit(_prepare_chunk, s, part): s for s, part in tasks}
            try:
                for fut in as_completed(futures):
                    done, b = fut.result()
                    digest.add(futures[fut])
                    bar.update(done)
                    bad += b
                    if b and stop_on_bad:
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return sorted(bad), digest.hexdigest()
    except BrokenProcessPool:
        raise OcbenchError(f"a prepare worker died (out of memory, or out of disk space in {tmp.parent}?); "
                           f"no array was written") from None
    finally:
        bar.close()


def _drop_rows(tmp: Path, drop: set[int]) -> Path:
    """Copy the array at `tmp` without the rows in `drop` into a new temporary file (rare: corrupt JPEGs)."""
    src = np.load(tmp, mmap_mode="r")
    keep = np.array([i for i in range(len(src)) if i not in drop], dtype=np.int64)
    dst_path = tmp.with_name(tmp.name.replace(".tmp-", ".tmp2-"))
    dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=(len(keep), *src.shape[1:]))
    for s in range(0, len(keep), 4096):
        dst[s:s + 4096] = src[keep[s:s + 4096]]
    dst.flush()
    del dst, src
    os.replace(dst_path, tmp)
    return tmp


# --------------------------------------------------------------------------------------------------
# prepare


def _meta_path(prepared: Path) -> Path:
    return prepared.with_suffix(".json")


def _source_identity(source: Path) -> dict:
    """What pins the source's content: the zip's md5, or a digest of a folder's names and sizes."""
    if source.is_dir():
        listing = sorted((e.name, e.stat().st_size) for e in _folder_jpegs(source))
        digest = hashlib.sha1(repr(listing).encode()).hexdigest()
        return {"source_kind": "folder", "source_md5": None, "source_listing_sha1": digest}
    return {"source_kind": "zip", "source_md5": file_md5(source), "source_listing_sha1": None}


def _check_inputs(cfg) -> tuple[Path, Path]:
    d = cfg.data
    source, partition = Path(d.images), Path(d.partition)
    how = ("`ocbench data synth --config ...`" if d.synthetic is not None
           else "`ocbench data fetch --config ...`")
    if not source.exists():
        fix = how if d.synthetic is not None else (
            f"{how}, or place img_align_celeba.zip (or the extracted img_align_celeba/ folder) there")
        raise OcbenchError(f"images {source} not found; run {fix}")
    if not source.is_dir():
        problem = what_is_wrong(source, "zip")
        if problem:
            raise OcbenchError(f"{source} {problem}; {manual_hint(source, CELEBA_ZIP)}, then rerun "
                               f"(`ocbench data fetch` checks it)")
    if not partition.exists():
        fix = how if d.synthetic is not None else (
            f"{how}: it writes CelebA's official split there without a download (md5 {CELEBA_PARTITION.md5})")
        raise OcbenchError(f"partition file {partition} not found; run {fix}")
    problem = what_is_wrong(partition, "partition")
    if problem:
        raise OcbenchError(f"{partition} {problem}; {manual_hint(partition, CELEBA_PARTITION)}")
    return source, partition


def select(cfg, source: Path, partition: Path, available: dict[str, str]) -> list[str]:
    """The file names of the configured split, sorted; checks the count against CelebA's."""
    d = cfg.data
    subset = d.subset or d.synthetic is not None  # a synthetic dataset is never 202,599 images
    wanted = [name for name, code in read_partition(partition)
              if d.split == "all" or code == SPLIT_CODES[d.split]]
    if subset:
        names = [n for n in wanted if n in available]
        if not names:
            raise OcbenchError(f"none of the {len(wanted):,} images of split {d.split!r} listed in {partition} "
                               f"is in {source}")
        return sorted(names)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise OcbenchError(
            f"{len(missing):,} of the {len(wanted):,} images of split {d.split!r} listed in {partition} are not in "
            f"{source} (first: {missing[0]}); place the complete CelebA there, or set data.subset: true")
    expected = CELEBA_COUNTS[d.split]
    if len(wanted) != expected:
        raise OcbenchError(
            f"split {d.split!r} has {len(wanted):,} images in {partition}, CelebA's has {expected:,}; "
            f"use CelebA's partition file (md5 {CELEBA_PARTITION.md5}) or set data.subset: true")
    return sorted(wanted)


def up_to_date(prepared: Path, settings: dict) -> dict | None:
    """The JSON of an existing array made with exactly these settings, else None."""
    meta_path = _meta_path(prepared)
    if not (prepared.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        shape = np.load(prepared, mmap_mode="r").shape
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in settings.items()) or list(shape) != meta.get("shape"):
        return None
    return meta


def _remove_stale_temps(prepared: Path) -> None:
    """Temporary arrays left by a prepare that was killed (its pid no longer runs)."""
    for tmp in prepared.parent.glob(f"{prepared.stem}.tmp*-*.npy"):
        m = re.search(r"\.tmp2?-(\d+)\.npy$", tmp.name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def prepare(cfg, skip_corrupt: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """`ocbench data prepare`: write cfg.data.prepared (and its JSON) unless it is up to date.

    Returns the JSON record (plus `seconds` and `images_per_s` when it did the work).
    """
    d = cfg.data
    prepared = Path(d.prepared)
    source, partition = _check_inputs(cfg)
    settings = {
        "format": FORMAT_VERSION,
        **_source_identity(source),
        "partition_md5": file_md5(partition),
        "split": d.split,
        "subset": d.subset or d.synthetic is not None,
        "crop": d.crop,
        "resize": d.resize,
        "image_size": d.image_size,
    }
    meta = up_to_date(prepared, settings)
    if meta is not None:
        print(f"{prepared} is up to date ({meta['count']:,} images, {d.image_size}x{d.image_size}, "
              f"crop {d.crop}, {d.resize}, split {d.split}); nothing to do")
        return meta

    try:
        available = list_source(source)
    except zipfile.BadZipFile as exc:
        raise OcbenchError(f"{source} cannot be read as a zip ({one_line(exc)}); "
                           f"{manual_hint(source, CELEBA_ZIP)}") from None
    names = select(cfg, source, partition, available)
    entries = [(n, available[n]) for n in names]
    shape = (len(names), d.image_size, d.image_size, 3)

    prepared.parent.mkdir(parents=True, exist_ok=True)
    need = math.prod(shape)
    free = shutil.disk_usage(prepared.parent).free
    if free < need * 1.02:
        raise OcbenchError(f"{prepared} needs {_gb(need)} but {prepared.parent} has {_gb(free)} free; "
                           f"free some space or set data.prepared to a path on a larger disk")
    _remove_stale_temps(prepared)

    tmp = prepared.with_name(f"{prepared.stem}.tmp-{os.getpid()}.npy")
    meta_path = _meta_path(prepared)
    meta_tmp = meta_path.with_name(f"{meta_path.name}.tmp-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()  # header + sparse file
        recipe = (d.crop, d.resize, d.image_size)
        bad, sha256 = _decode_all(source, tmp, entries, recipe, workers or default_workers(), progress,
                                  stop_on_bad=not skip_corrupt)
        if bad and not skip_corrupt:
            _, name, why = bad[0]
            raise OcbenchError(f"{name} in {source} is not a readable JPEG ({why}); re-download the archive "
                               f"(`ocbench data fetch` checks its md5), or rerun with --skip-corrupt to leave it out")
        if bad:
            _drop_rows(tmp, {i for i, _, _ in bad})
            sha256 = sha256_of(tmp)  # a new file (rare: corrupt JPEGs), hashed once more
            print(f"skipped {len(bad)} unreadable JPEG(s): {', '.join(n for _, n, _ in bad[:10])}"
                  f"{' ...' if len(bad) > 10 else ''} (listed in {meta_path})")
        seconds = time.perf_counter() - t0
        count = shape[0] - len(bad)
        meta = {
            **settings,
            "source": str(source),
            "partition": str(partition),
            "count": count,
            "shape": [count, *shape[1:]],
            "dtype": "uint8",
            "sha256": sha256,  # of the .npy file as written; `ocbench data verify` checks it
            "skipped": [{"name": n, "error": why} for _, n, why in bad],
            "recipe": "crop: centred square, top = (h - w) // 2; then PIL Image.resize((S, S), filter)"
                      if d.crop == "center" else "whole frame; PIL Image.resize((S, S), filter)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the array
            os.fsync(f.fileno())
        # Old JSON first: a crash between the two renames leaves an array without JSON (redone next
        # time), never a new array described by an old JSON.
        meta_path.unlink(missing_ok=True)
        os.replace(tmp, prepared)
        os.replace(meta_tmp, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name.replace(".tmp-", ".tmp2-")).unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
    print(f"wrote {prepared}: {count:,} images {d.image_size}x{d.image_size} in {seconds:.1f} s "
          f"({count / seconds:,.0f} images/s)")
    return {**meta, "seconds": seconds, "images_per_s": count / seconds}


def verify_prepared(cfg, progress: bool = True) -> str:
    """`ocbench data verify`: the prepared array's sha256 against the one prepare recorded in its JSON
    (a copy cut short, a flipped bit on a disk or a network share). Returns the sha256."""
    prepared = Path(cfg.data.prepared)
    meta_path = _meta_path(prepared)
    rebuild = f"delete {prepared} and rerun `ocbench data prepare` (with the same --config) to rebuild it"
    if not prepared.is_file():
        raise OcbenchError(f"prepared images {prepared} not found; run `ocbench data prepare` first")
    try:
        recorded = json.loads(meta_path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise OcbenchError(f"{meta_path} cannot be read ({one_line(exc, 80)}), so {prepared} cannot be "
                           f"verified; {rebuild}") from None
    if not recorded:
        raise OcbenchError(f"{meta_path} records no sha256 (written by an older ocbench), so {prepared} cannot "
                           f"be verified; {rebuild}")
    from ocbench.progress import progress as progress_bar

    bar = progress_bar(total=prepared.stat().st_size, desc=prepared.name, unit="B", unit_scale=True,
                       unit_divisor=1024, disable=not progress)
    actual = sha256_of(prepared, bar.update)
    bar.close()
    if actual != recorded:
        raise OcbenchError(f"{prepared} has sha256 {actual}, not the {recorded} prepare recorded in "
                           f"{meta_path.name}: the file changed since it was written; {rebuild}")
    print(f"{prepared}: sha256 {actual} ok (as recorded in {meta_path.name})")
    return actual
