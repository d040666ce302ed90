"""A results bundle: one file that carries a results folder's numbers to another lab, with what decides
whether they can be pooled with that lab's own (`ocbench claims --pool`, ocbench/pool.py).

`ocbench bundle --config X` writes paths.results/<config>-<hash>.tar.gz (or .zip), <hash> the first 12
hex digits of the sha256 of its manifest: the same runs bundled twice on one machine give the same file.
Inside, one folder of the same name holds

    bundle.json        FORMAT, the config's name, the lab (only with --lab NAME), the comparability keys
                       (COMPARABILITY), every trained setting's protocol, every configured run's status and
                       wall time, the machine, and the data's, the reference statistics' and the weights'
                       provenance
    MANIFEST.sha256    the sha256 of every other file, as `sha256sum` writes them (`sha256sum -c` checks a copy)
    config.yaml        the merged config, with absolute paths and data.sources withheld
    runs/<run>/        metrics.csv, run.json (with its final evaluation), the sample grids of the snapshot
                       epochs (train.snapshot_epochs and the last), and with --with-snapshots the generator
                       snapshots of those epochs; checkpoints never

Nothing personal goes in unless asked: no user or host name (tar members carry uid 0 and no owner
names, the gzip header no file name or time), no absolute path, no data source; the lab's name only
with --lab. The machine is described by what it is (versions, GPU and CPU models), not who or where.

`unpack` reads a bundle back into a folder of the caller's and refuses, in one line, what it cannot
trust: a member that would land outside that folder (an absolute path, `..`, a link, a device), an
archive cut short, a bundle of a newer FORMAT, a file that does not match its manifest (edited or
damaged), or a manifest that does not match the hash in the bundle's name (re-packed after an edit).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import stat
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import yaml

from ocbench.aggregate import Runs, collect
from ocbench.config import (
    REPO_ROOT,
    Config,
    configured_paths,
    digest,
    run_id,
    run_protocol,
)
from ocbench.errors import OcbenchError, UsageError, one_line
from ocbench.formats import RunFiles, atomic_write, sha256_of

FORMAT = 1  # bump when the layout changes; an older ocbench refuses a newer bundle (`unpack`)
MANIFEST, INFO, CONFIG = "MANIFEST.sha256", "bundle.json", "config.yaml"
FORMATS = ("tar.gz", "zip")
WITHHELD = "<withheld>"

# The keys that decide whether two bundles' runs are replicates of one experiment, in the order a
# refusal names them (the weights first: the reference statistics and every score depend on them).
# What a run's training depends on is its protocol (config.run_protocol), compared per setting
# (`setting_protocols`); these are what it was scored against and on. The reference statistics'
# sha256 is recorded, not compared: they are float64 sums of Inception features, which two GPUs
# compute in other orders, so two labs' files differ in their last bits (and so in their sha256)
# while the FIDs agree to ~1e-6; what makes them (the weights, the prepared array, the image count
# and split) is compared instead.
COMPARABILITY = {
    "inception_weights_sha256": "Inception weights sha256",
    "prepared_sha256": "prepared array sha256",
    "reference_images": "real images of the reference statistics",
    "reference_split": "split of the reference statistics",
    "fid_samples": "generated samples per FID",
    "pr_real_samples": "real samples of precision/recall",
    "kid_real_samples": "real samples of KID",
    "eval_precision": "Inception's precision",
}


# --------------------------------------------------------------------------------------------------
# what a results folder says about itself


def recorded(metrics, column: str) -> str | None:
    """The distinct values the runs' rows record in `column`, space-separated (None: none recorded)."""
    values = [str(v).removesuffix(".0") for v in dict.fromkeys(metrics[column].dropna().astype(str))
              if str(v) not in ("", "nan")]
    return " ".join(values) or None


def setting_protocols(cfg: Config) -> dict:
    """{gan_variant: {"fingerprint", "protocol"}} of every setting `cfg` trains: the run's protocol
    without the run id, which is all a seed changes in it."""
    out = {}
    for gan in cfg.run.gans:
        for variant in cfg.run.variants:
            protocol = run_protocol(cfg, run_id(gan, variant, cfg.run.seeds[0]))
            protocol.pop("run")
            out[f"{gan}_{variant}"] = {"fingerprint": digest(protocol), "protocol": protocol}
    return out


def data_provenance(cfg: Config) -> dict:
    """The prepared array's record (`ocbench data prepare`'s JSON beside it), without its paths."""
    from ocbench.data import CELEBA_ZIP

    path = Path(cfg.data.prepared).with_suffix(".json")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"recorded": False}
    keep = ("sha256", "count", "format", "source_kind", "source_md5", "source_listing_sha1", "partition_md5",
            "split", "subset", "crop", "resize", "image_size", "recipe", "skipped")
    out = {"recorded": True, **{k: meta.get(k) for k in keep}}
    # The zip's sha256: CelebA's is known (`ocbench data fetch` checks md5 and sha256 both); another
    # zip's (a synthetic one) is hashed here when it is at data.images.
    if meta.get("source_md5") == CELEBA_ZIP.md5:
        out["source_sha256"] = CELEBA_ZIP.sha256
    elif meta.get("source_kind") == "zip" and Path(cfg.data.images).is_file():
        out["source_sha256"] = sha256_of(cfg.data.images)
    return out


def reference_provenance(cfg: Config) -> dict:
    """The reference statistics' file: its sha256, and how many real images of which split made it."""
    from ocbench import fid

    path = Path(cfg.metrics.stats)
    if not path.is_file():
        return {"recorded": False}
    try:
        ref = fid.load_reference(path)
    except OcbenchError:
        return {"recorded": False}
    return {"recorded": True, "sha256": sha256_of(path), "images": ref.images, "split": ref.split,
            "weights_sha256": ref.weights_sha256}


def git_state() -> dict:
    """ocbench's commit and whether its tracked files differ from it, when the package sits in a git
    checkout of its own (an installed copy: "unknown")."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != REPO_ROOT.resolve():
            raise ValueError("not ocbench's own checkout")  # e.g. a venv inside another project's repository
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}


def machine(cfg: Config) -> dict:
    """The machine that bundles (normally the one that trained: each run.json records its own device
    and torch too): software versions, GPU and CPU models, and the precision and determinism in force.
    No host or user name."""
    import numpy
    import PIL
    import pytorch_fid
    import torch

    from ocbench import __version__, fid
    from ocbench.device import cpu_name, nvidia_driver

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    driver = nvidia_driver() if gpus else "none (no GPU)"
    return {
        "ocbench": __version__, **{f"git_{k}": v for k, v in git_state().items()},
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "driver": driver, "gpus": gpus, "gpu_count": len(gpus), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__, "pillow": PIL.__version__, "pytorch_fid": pytorch_fid.__version__,
        # torch's defaults, which training keeps (ocbench/train.py sets only determinism and the autotuner)
        "precision": {"training": "bf16 autocast" if cfg.train.bf16 else "fp32",
                      "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                      "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "inception": fid.EVAL_PRECISION},
        "deterministic": cfg.train.deterministic,
    }


def run_records(cfg: Config, runs: Runs) -> dict:
    """Per configured run: its status and epochs, and from its run.json its fingerprint, device, torch
    and wall time; `resumes`: training processes after the first that wrote its TensorBoard log (one
    event file each; None when it kept none)."""
    from ocbench.tensorboard import run_log_dir

    out = {}
    for r in runs.runs.itertuples():
        record = {"status": r.run_status, "epochs_done": int(r.epochs_done), "epochs": int(r.epochs)}
        path = cfg.run_dir(r.run) / "run.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            record.update({k: summary.get(k) for k in ("fingerprint", "device", "torch", "train_seconds",
                                                       "eval_seconds")})
        logs = run_log_dir(cfg, r.run)
        record["resumes"] = max(0, len(list(logs.glob("events.out.tfevents.*"))) - 1) if logs.is_dir() else None
        out[r.run] = record
    return out


def describe(cfg: Config, runs: Runs, lab: str | None = None) -> dict:
    """bundle.json's contents for the runs of `cfg` (`runs`: aggregate.collect's)."""
    m = runs.metrics
    data, reference = data_provenance(cfg), reference_provenance(cfg)
    keys = {"inception_weights_sha256": recorded(m, "weights_sha256"), "prepared_sha256": data.get("sha256"),
            **{k: recorded(m, k) for k in ("reference_images", "reference_split", "fid_samples", "pr_real_samples",
                                           "kid_real_samples", "eval_precision")}}  # as every metrics row records them
    official = bool(m["weights_official"].all()) if len(m) else None
    return {
        "format": FORMAT, "config": cfg.name, "lab": lab,
        "comparability": keys,
        "protocols": setting_protocols(cfg),
        "runs": run_records(cfg, runs),
        "unfinished": runs.describe_unfinished(),
        "provenance": {"data": data, "reference_statistics": reference,
                       "inception_weights": {"sha256": keys["inception_weights_sha256"], "official": official},
                       "frechet": recorded(m, "frechet")},
        "machine": machine(cfg),
    }


def withheld_config(cfg: Config) -> str:
    """The merged config as YAML, with every absolute path (a home folder, a user's scratch space)
    replaced by WITHHELD/<its last part> and data.sources (a lab's share, a URL with a token) withheld."""
    raw = yaml.safe_load(cfg.dump())
    for where, value in list(configured_paths(raw)):
        section, _, key = where.partition(".")
        key = key.partition("[")[0]  # data.sources[1] -> sources
        if key == "sources":
            raw[section][key] = [WITHHELD for _ in raw[section][key]]
        elif os.path.isabs(value) or ".." in PurePosixPath(value).parts:
            raw[section][key] = f"{WITHHELD}/{PurePosixPath(value).name}"
    return yaml.safe_dump(raw, sort_keys=False)


# --------------------------------------------------------------------------------------------------
# writing


def run_files(cfg: Config, runs: Runs, with_snapshots: bool) -> dict[str, Path]:
    """{path in the bundle: file} of every run's files that travel."""
    out = {}
    for run in runs.runs.run:
        files = RunFiles(cfg.run_dir(run), cfg.results_dir / "state" / run)
        wanted = [files.metrics, files.summary, *(files.grid(e) for e in cfg.train.snapshot_kept)]
        if with_snapshots:
            wanted += [files.snapshot(e) for e in cfg.train.snapshot_kept]
        for path in wanted:
            if path.is_file():
                out[path.relative_to(cfg.results_dir).as_posix()] = path
    return out


def manifest(contents: dict[str, bytes | Path]) -> str:
    """`sha256sum`'s lines for every file, sorted by path."""
    def sha(v):
        return hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else sha256_of(v)

    return "".join(f"{sha(contents[name])}  {name}\n" for name in sorted(contents))


def write_tar(f, top: str, contents: dict[str, bytes | Path]) -> None:
    """A .tar.gz with nothing of who made it, or when: uid 0, no owner names, time 0, no gzip name."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(contents):
            data = contents[name] if isinstance(contents[name], bytes) else contents[name].read_bytes()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))


def write_zip(f, top: str, contents: dict[str, bytes | Path]) -> None:
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(contents):
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr, info.compress_type = (stat.S_IFREG | 0o644) << 16, zipfile.ZIP_DEFLATED
            value = contents[name]
            zf.writestr(info, value if isinstance(value, bytes) else value.read_bytes())


def write_bundle(cfg: Config, out_dir: str | Path | None = None, fmt: str = "tar.gz", with_snapshots: bool = False,
                 lab: str | None = None) -> Path:
    """`ocbench bundle`: the results folder of `cfg` as one file in `out_dir` (default paths.results);
    returns its path. A partial folder bundles too: bundle.json names its unfinished runs."""
    if fmt not in FORMATS:
        raise UsageError(f"bundle format {fmt!r}: use one of {', '.join(FORMATS)}")
    if lab is not None and not lab.strip():
        raise UsageError("--lab needs a name (or leave it out: the bundle then names no lab)")
    runs = collect(cfg)  # a run of other settings than the config's is refused here, in one line
    if runs.metrics.empty:
        raise OcbenchError(f"nothing to bundle: no run of config '{cfg.name}' has finished an epoch in "
                           f"{cfg.results_dir}; train first, or pass the --config/--set that made the runs")
    contents: dict[str, bytes | Path] = run_files(cfg, runs, with_snapshots)
    contents[CONFIG] = withheld_config(cfg).encode()
    contents[INFO] = (json.dumps(describe(cfg, runs, lab), indent=2) + "\n").encode()
    listing = manifest(contents)
    top = f"{cfg.name}-{hashlib.sha256(listing.encode()).hexdigest()[:12]}"
    contents[MANIFEST] = listing.encode()
    out = Path(out_dir if out_dir is not None else cfg.paths.results) / f"{top}.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = write_tar if fmt == "tar.gz" else write_zip
    return atomic_write(out, lambda f: writer(f, top, contents))


# --------------------------------------------------------------------------------------------------
# reading


def safe_name(bundle: Path, name: str) -> PurePosixPath:
    """A member's path, refused when it could land outside the folder it is unpacked into."""
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or ".." in path.parts or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise OcbenchError(f"{bundle} holds a member named {name!r}, which would be written outside the folder "
                           "it is unpacked into; not unpacked: ask its lab for a bundle made by `ocbench bundle`")
    return path


def refuse_type(bundle: Path, name: str, kind: str) -> None:
    raise OcbenchError(f"{bundle} holds {kind} {name!r}; a bundle holds plain files only, and a link or device "
                       "could reach outside the folder it is unpacked into: not unpacked")


def tar_kind(member: tarfile.TarInfo) -> str | None:
    """What a tar member is when it is not a plain file or a folder (None: it is one)."""
    if member.isfile() or member.isdir():
        return None
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    return "a device or pipe" if member.isdev() else "a special member"


def zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16  # a Unix mode, when the zip was made on Unix; no file type: a plain file
    if not stat.S_IFMT(mode) or stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a symbolic link" if stat.S_ISLNK(mode) else "a device or pipe"


def extract(bundle: Path, dest: Path) -> str:
    """Every member of `bundle` into `dest`, after checking each (`safe_name`, plain files and folders
    only); returns the one top folder they share."""
    tops = set()
    try:
        if zipfile.is_zipfile(bundle):
            with zipfile.ZipFile(bundle) as zf:
                for info in zf.infolist():
                    tops.add(safe_name(bundle, info.filename).parts[0])
                    if (kind := zip_kind(info)) is not None:
                        refuse_type(bundle, info.filename, kind)
                if len(tops) == 1:
                    zf.extractall(dest)
        else:
            with tarfile.open(bundle, "r:*") as tar:
                members = tar.getmembers()  # reads the whole archive: one cut short fails here
                for member in members:
                    tops.add(safe_name(bundle, member.name).parts[0])
                    if (kind := tar_kind(member)) is not None:
                        refuse_type(bundle, member.name, kind)
                if len(tops) == 1:
                    tar.extractall(dest, members=members, filter="data")  # and the standard library's own checks
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise OcbenchError(f"{bundle} cannot be read as a bundle ({one_line(exc, 80)}): cut short or damaged on the "
                           "way; ask its lab to send it again") from None
    if len(tops) != 1:
        raise OcbenchError(f"{bundle} is not a bundle of `ocbench bundle` (its files are not in one folder)")
    return tops.pop()


def check_manifest(bundle: Path, root: Path) -> None:
    """Every file unpacked under `root` against MANIFEST.sha256, and the manifest against the hash
    the bundle's folder is named by."""
    lines = (root / MANIFEST).read_text().splitlines() if (root / MANIFEST).is_file() else None
    if lines is None:
        raise OcbenchError(f"{bundle} has no {MANIFEST}: it was not made by `ocbench bundle`, or was re-packed "
                           "without it; ask its lab for the bundle again")
    listed = {}
    for line in lines:
        sha, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise OcbenchError(f"{bundle}: {MANIFEST} has a line that is not `<sha256>  <path>`: {line[:80]!r}")
        listed[name] = sha
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    fix = "ask its lab for the bundle again (`ocbench bundle` makes a new one)"
    for name in sorted(set(listed) - present):
        raise OcbenchError(f"{bundle} lacks {name}, which its manifest lists: cut short or edited after "
                           f"bundling; {fix}")
    for name in sorted(present - set(listed)):
        raise OcbenchError(f"{bundle} holds {name}, which its manifest does not list: added after bundling; {fix}")
    for name in sorted(listed):
        actual = sha256_of(root / name)
        if actual != listed[name]:
            raise OcbenchError(f"{bundle}: {name} does not match its manifest (sha256 {actual[:16]}…, manifest "
                               f"{listed[name][:16]}…): edited or damaged after bundling; {fix}")
    named = re.fullmatch(r".+-([0-9a-f]{12})", root.name)
    actual = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()[:12]
    if named is None or named[1] != actual:
        raise OcbenchError(f"{bundle}: its manifest hashes to {actual}, not the {named[1] if named else '(no hash)'} "
                           f"its folder {root.name!r} is named by: re-packed after bundling; {fix}")


def unpack(bundle: str | Path, dest: str | Path) -> tuple[Path, dict]:
    """A bundle into `dest` (a folder of the caller's; nothing is written outside it), checked: returns
    its folder and bundle.json's contents. Refuses, in one line, what `extract` and `check_manifest`
    refuse and a bundle of a newer FORMAT."""
    bundle, dest = Path(bundle), Path(dest)
    if not bundle.is_file():
        raise UsageError(f"{bundle}: no such bundle file; pass a file made by `ocbench bundle` (or a results folder)")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest / extract(bundle, dest)
    try:
        info = json.loads((root / INFO).read_text())
        version = int(info["format"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OcbenchError(f"{bundle} has no readable {INFO} with its format: not a bundle of `ocbench bundle`, or "
                           "damaged; ask its lab for it again") from None
    if version > FORMAT:
        raise OcbenchError(f"{bundle} is a bundle of format {version}, made by a newer ocbench; this one reads format "
                           f"{FORMAT} and older: update ocbench (git pull, or pip install -U) to pool it")
    check_manifest(bundle, root)
    return root, info
