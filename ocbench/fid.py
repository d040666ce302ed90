"""FID exactly as pytorch-fid computes it, without writing images to disk.

pytorch-fid's route is: PNG file -> PIL uint8 -> `ToTensor` (float32, / 255) -> `InceptionV3([3])`
(bilinear resize to 299, 2x - 1, pool3) -> float32 features stored in a float64 array ->
`np.mean`, `np.cov(rowvar=False)` -> `calculate_frechet_distance`. We take the same steps on the
same numbers, but from uint8 tensors in memory:

- generated images in [-1, 1] are quantised exactly as `torchvision.utils.save_image((x + 1) / 2)`
  would write them to a PNG (`formats.to_uint8`), so a PNG that training writes and the FID computed from
  memory describe the same pixels;
- uint8 -> float is `x.float().div(255)`, what `ToTensor` does to a PIL image;
- the network is pytorch-fid's own `InceptionV3`, built from a weights file we located and hashed
  (`load_inception`);
- features go into float64 running sums on the network's device (`RunningStatistics`: no host copy
  of the N x 2048 features), giving `np.mean` and `np.cov`'s mu and sigma;
- the distance ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2) takes its trace term from one
  symmetric eigendecomposition (`frechet_distance_eigh`, `metrics.frechet: eigh`) instead of
  scipy's `sqrtm` (`metrics.frechet: scipy`, pytorch-fid's own `calculate_frechet_distance`, kept as
  the reference). On full-rank statistics both give the FID to ~1e-14; on rank-deficient ones
  (fewer samples than dimensions) eigh gives the FID of the samples exactly and scipy is ~1e-8
  off; on covariances with condition numbers beyond ~1e9 neither resolves the smallest
  eigenvalues of S1 S2 and both are ~1e-7 (absolute) from the exact value (tests/test_frechet.py).

Weights: pytorch-fid reads `pt_inception-2015-12-05-6726825d.pth` from torch.hub's cache
(`$TORCH_HOME/hub/checkpoints/`). `metrics.weights_dir` points elsewhere. Every FID carries the
sha256 of the file that made it; only a file whose sha256 starts with 6726825d (the prefix in its
name, torch.hub's convention) is the official one, and only its FIDs compare with published numbers.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from pytorch_fid import inception as pf_inception
from pytorch_fid.fid_score import calculate_frechet_distance

from ocbench.errors import OcbenchError, one_line
from ocbench.formats import atomic_write, replacing, sha256_of
from ocbench.hub import WEIGHTS_NAME, weights_path  # torch-free: the Snakefile needs the path at parse time

WEIGHTS_URL = pf_inception.FID_WEIGHTS_URL
OFFICIAL_SHA256_PREFIX = WEIGHTS_NAME.rsplit("-", 1)[1].split(".")[0]  # "6726825d"
FEATURE_DIM = 2048  # pool3
FRECHET_METHODS = ("eigh", "scipy")  # metrics.frechet: ours (default), pytorch-fid's own
PLACEHOLDER_SEED = 0


# --------------------------------------------------------------------------------------------------
# the weights file


@dataclass(frozen=True)
class Weights:
    path: Path
    sha256: str

    @property
    def official(self) -> bool:
        return self.sha256.startswith(OFFICIAL_SHA256_PREFIX)


def fetch_weights(weights_dir: str | None = None) -> Weights:
    """The official weights at `weights_path()`: downloaded when absent, checked when present."""
    path = weights_path(weights_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # download_url_to_file writes to a temporary file, checks the sha256 prefix, then moves.
            torch.hub.download_url_to_file(WEIGHTS_URL, str(path), hash_prefix=OFFICIAL_SHA256_PREFIX)
        except Exception as exc:  # offline (URLError, OSError) or a bad download (RuntimeError)
            raise OcbenchError(
                f"cannot download the Inception FID weights ({one_line(exc)}); download {WEIGHTS_URL} "
                f"and put it at {path}"
            ) from None
    weights = Weights(path, sha256_of(path))
    if not weights.official:
        raise OcbenchError(
            f"{path} has sha256 {weights.sha256[:16]}..., not the official {OFFICIAL_SHA256_PREFIX}...; "
            f"delete it and rerun `ocbench fid weights`, or put the file from {WEIGHTS_URL} there"
        )
    return weights


def write_placeholder_weights(path: Path, seed: int = PLACEHOLDER_SEED) -> Path:
    """Seeded random weights of pytorch-fid's FID Inception, saved as a state dict at `path`.

    For tests and machines without internet: FIDs made with them are marked non-official and
    compare with nothing published. pytorch-fid's FID blocks (FIDInceptionA/C/E_1/E_2) change only
    `forward`, so torchvision's Inception-v3 with 1008 classes and no aux head has exactly the
    parameters of `fid_inception_v3()`; `load_inception` checks that with a strict load.
    Convs get Kaiming-normal weights (fan_in, ReLU) so that activations keep their scale through
    the 94 layers and the features depend on the image; BatchNorm keeps its identity statistics.
    """
    net = pf_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=gen)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, 0.01, generator=gen)
            torch.nn.init.zeros_(m.bias)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # a path, not a file: torch.save names the archive inside after it,
        torch.save(net.state_dict(), tmp)  # and the file's sha256 is recorded in every metrics row
    return path


def ensure_weights(weights_dir: str | None = None, placeholder: bool = False) -> Weights:
    """What `ocbench fid weights` does: placeholder weights written if absent, else `fetch_weights`."""
    if not placeholder:
        return fetch_weights(weights_dir)
    path = weights_path(weights_dir)
    if not path.exists():
        write_placeholder_weights(path)
    return Weights(path, sha256_of(path))


def locate_weights(weights_dir: str | None = None, placeholder: bool = False) -> Weights:
    """The weights file to compute FIDs with; non-official files only when `placeholder` is set."""
    path = weights_path(weights_dir)
    if not path.exists():
        raise OcbenchError(
            f"Inception FID weights not found at {path}; run `ocbench fid weights` "
            f"(or download {WEIGHTS_URL} and put it there)"
        )
    weights = Weights(path, sha256_of(path))
    if not weights.official and not placeholder:
        raise OcbenchError(
            f"{path} is not the official Inception FID weights (sha256 {weights.sha256[:16]}...); "
            "delete it and rerun `ocbench fid weights`, or set metrics.placeholder_weights: true"
        )
    return weights


# --------------------------------------------------------------------------------------------------
# the network


@contextlib.contextmanager
def _weights_from(path: Path) -> Iterator[None]:
    """Make pytorch-fid's `fid_inception_v3` load `path` instead of resolving its URL.

    pytorch-fid calls `load_state_dict_from_url(FID_WEIGHTS_URL)`, which reads the same file name
    from torch.hub's cache; routing it to the file we hashed guarantees that the sha256 we record
    is that of the weights in the network, wherever `metrics.weights_dir` puts them.
    """
    original = pf_inception.load_state_dict_from_url

    def load(url, *args, **kwargs):
        return torch.load(path, map_location="cpu", weights_only=True)

    pf_inception.load_state_dict_from_url = load
    try:
        yield
    finally:
        pf_inception.load_state_dict_from_url = original


def load_inception(weights: Weights, device: torch.device | str = "cpu", dims: int = FEATURE_DIM) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3` (resize and input scaling inside), in eval mode. `dims` is
    pytorch-fid's `--dims`: 2048 (pool3, the default and the paper's) or 768/192/64, earlier blocks
    that are far cheaper; `net.feature_dim` says which."""
    if dims not in pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM:
        raise OcbenchError(f"metrics.dims must be one of 64, 192, 768, 2048, got {dims}")
    try:
        with _weights_from(weights.path):
            net = pf_inception.InceptionV3([pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except Exception as exc:
        raise OcbenchError(
            f"cannot load Inception weights from {weights.path} ({type(exc).__name__}); "
            "delete the file and rerun `ocbench fid weights`"
        ) from None
    net.feature_dim = dims
    return net.to(device).eval()


# --------------------------------------------------------------------------------------------------
# images -> features -> statistics


EVAL_PRECISION = "fp32"  # Inception's arithmetic on every device: see `full_fp32`


@contextlib.contextmanager
def full_fp32(device: torch.device):
    """Inception's forward pass in full fp32 with fixed cuDNN settings, whatever training set: no
    TF32 (cuDNN's default for fp32 convolutions on Ampere and Hopper, ~1e-3 relative per product),
    no autocast (train.bf16), no autotuner (cudnn.benchmark picks kernels by timing, so it could
    pick differently run to run), deterministic kernels. So an FID computed on a GPU is the FID of
    the same images on the CPU, and comparable with numbers published before TF32 existed. The
    previous settings come back on exit (training keeps its own)."""
    with torch.autocast(device.type, enabled=False), torch.backends.cudnn.flags(**cudnn_full_fp32()):
        yield


def cudnn_full_fp32(flags=torch.backends.cudnn.flags) -> dict:
    """`cudnn.flags`' arguments for full fp32. Recent torch has `fp32_precision` beside allow_tf32
    (and warns that allow_tf32 alone will go); older releases refuse that argument and take
    allow_tf32=False alone as full fp32."""
    full = dict(enabled=True, benchmark=False, deterministic=True, allow_tf32=False)
    if "fp32_precision" in inspect.signature(flags).parameters:
        full["fp32_precision"] = "ieee"
    return full


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """pool3 features (N x 2048 float32, on the network's device) of uint8 images N x 3 x H x W,
    fed as pytorch-fid feeds a PNG: `ToTensor` turns uint8 into float32 / 255. In full fp32
    (`full_fp32`) on every device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"features() takes uint8 images, got {images.dtype}")
    device = next(net.parameters()).device
    # Contiguous NCHW, as ToTensor + default_collate give: a channels-last view (a permuted
    # N x H x W x 3 array) would run other conv kernels and change the features' last bits.
    x = images.to(device, non_blocking=True).contiguous().float().div(255)
    with full_fp32(device):
        pred = net(x)[0]
    if pred.shape[2:] != (1, 1):  # blocks before pool3 (dims < 2048): pooled as pytorch-fid does
        pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
    return pred.flatten(1)


class RunningStatistics:
    """Mean and covariance (`np.mean`, `np.cov(rowvar=False)`: ddof 1) of feature rows that arrive a
    batch at a time, in float64 on `device`.

    Raw sums of x and x x^T would lose digits: pool3 features have means large against their
    spread, and sum(x x^T)/n - mu mu^T cancels most of them. Each batch is centred on its own mean
    instead and merged with Chan et al.'s pairwise update (the mean moves by delta * nb / n, the
    sum of squared deviations gains the batch's own plus delta delta^T * na * nb / n), which is as
    accurate as np.cov's two passes over the whole array.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # sum of (x - mean)(x - mean)^T

    def update(self, feats: torch.Tensor) -> None:
        x = torch.as_tensor(feats).to(self.mean.device, torch.float64)
        nb = len(x)
        if nb == 0:
            return
        batch_mean = x.mean(0)
        centred = x - batch_mean
        delta = batch_mean - self.mean
        n = self.n + nb
        self.m2.addmm_(centred.T, centred)
        self.m2.addr_(delta, delta, alpha=self.n * nb / n)
        self.mean.add_(delta, alpha=nb / n)
        self.n = n

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma), float64 tensors on the device."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self.mean.clone(), self.m2 / (self.n - 1)


def statistics(feats: np.ndarray | torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """mu, sigma (float64 tensors on the features' device) as pytorch-fid's
    `calculate_activation_statistics` computes them, `batch_size` rows at a time."""
    feats = torch.as_tensor(feats)
    running = RunningStatistics(feats.shape[1], feats.device)
    for start in range(0, len(feats), batch_size):
        running.update(feats[start : start + batch_size])
    return running.result()


def _float64(x, device=None) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


def psd_root(sigma: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int]:
    """(R, rank): the symmetric square root of a covariance (R R = sigma) from one `eigh`, float64,
    and its numerical rank.

    Eigenvalues at or below numpy's `matrix_rank` tolerance (dim * eps * the largest) are round-off
    of zeros (a covariance of fewer samples than dimensions) and are set to 0: their square roots,
    ~sqrt(eps) each, would otherwise add up over hundreds of them.
    """
    sigma = _float64(sigma)
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)  # eigh reads one triangle: symmetrise first
    keep = w > len(w) * torch.finfo(torch.float64).eps * w.max()
    return (v * torch.where(keep, w, 0.0).sqrt()) @ v.T, int(keep.sum())


def frechet_distance_eigh(mu1, sigma1, mu2, sigma2, n1: int | None = None, root2: tuple | None = None) -> float:
    """The Frechet distance, in float64 on the device of the root (else of `sigma2`).

    Tr sqrt(S1 S2) = sum_i sqrt(lambda_i(R S1 R)) with R = sqrt(S2): XY and YX have the same
    eigenvalues, so S1 S2 = (S1 R) R has those of R (S1 R), a symmetric positive semi-definite
    matrix, and one `eigvalsh` gives what scipy's `sqrtm` finds through a complex Schur form of the
    non-symmetric product. The reference S2 is fixed for a run: pass `root2 = psd_root(sigma2)`,
    computed once, and each FID costs two matrix products and one `eigvalsh`.

    R S1 R has rank at most min(rank R, n1 - 1) when S1 is the covariance of `n1` samples; its
    other eigenvalues are round-off of zeros (~eps * the largest, either sign) and are dropped,
    not square-rooted. Negative round-off is clamped to 0 as well. Without `n1` (statistics from a
    file) a rank-deficient S1 leaves that round-off in, and the result is as accurate as scipy's,
    ~1e-8 relative, not ~1e-15.
    """
    device = root2[0].device if root2 is not None else torch.as_tensor(sigma2).device
    mu1, sigma1, mu2, sigma2 = (_float64(a, device) for a in (mu1, sigma1, mu2, sigma2))
    root, rank = psd_root(sigma2) if root2 is None else root2
    if n1 is not None:
        rank = min(rank, n1 - 1)
    m = root @ sigma1 @ root
    eigenvalues = torch.linalg.eigvalsh((m + m.T) / 2)  # ascending
    eigenvalues = eigenvalues[len(eigenvalues) - rank :].clamp(min=0)
    diff = mu1 - mu2
    # The sum in pytorch-fid's order.
    return float(diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * eigenvalues.sqrt().sum())


def frechet_distance_scipy(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's `calculate_frechet_distance`, unchanged (scipy's sqrtm in float64, on the CPU)."""
    mu1, sigma1, mu2, sigma2 = (a.cpu().numpy() if isinstance(a, torch.Tensor) else a for a in (mu1, sigma1, mu2, sigma2))
    return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


FID_INF_SEED = 19  # the subsets of FID-infinity: a generator of their own, apart from training's and KID's


def fid_infinity(feats: torch.Tensor, distance, points: int = 5, smallest: float = 0.5,
                 batch_size: int = 1000, seed: int = FID_INF_SEED) -> tuple[float, float]:
    """(FID-infinity, slope): Chong & Forsyth's (CVPR 2020) estimate of the FID of infinitely many
    samples, from the features of N generated images.

    FID's bias falls as 1/n to first order, so the FIDs of random subsets of n = `points` counts evenly
    spaced from `smallest` * N to N lie on a line in 1/n; its least-squares intercept (1/n = 0) is
    FID-infinity, its slope the bias at n = 1 (positive for a finite sample). `distance(mu, sigma, n)`
    is the Frechet distance of n samples' statistics to the reference (Evaluator.frechet_distance).
    Subsets are drawn by a CPU generator seeded with `seed`, so no other number moves.
    """
    n = len(feats)
    counts = np.unique(np.linspace(smallest * n, n, points).astype(int))
    if len(counts) < 2 or counts[0] < 2:
        raise ValueError(f"FID-infinity needs two sample counts of at least 2 each; {n} samples give {counts}")
    gen = torch.Generator().manual_seed(seed)
    fids = []
    for count in counts:
        rows = torch.randperm(n, generator=gen)[:count].to(feats.device)
        fids.append(distance(*statistics(feats[rows], batch_size), int(count)))
    slope, intercept = np.polyfit(1.0 / counts, fids, 1)
    return float(intercept), float(slope)


def array_batches(array: np.ndarray, batch_size: int, count: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 N x H x W x 3 array (memory-mapped) -> uint8 tensors B x 3 x H x W, one batch at a time,
    so that only one batch is ever in memory."""
    n = len(array) if count is None else min(count, len(array))
    for start in range(0, n, batch_size):
        chunk = np.array(array[start : min(start + batch_size, n)])  # a copy: memmaps are read-only
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# reference statistics


@dataclass
class Reference:
    """A stats file: mu, sigma (pytorch-fid's keys) and, for precision/recall, real features. `subset`:
    the statistics of a seeded random subset of the prepared images (`metrics.final_real_images`, what
    the final evaluation's FID is measured against), a Reference of its own with its `seed`."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None  # float32, pr_real_samples x 2048
    weights_sha256: str | None = None  # the weights that made the file (absent in pytorch-fid's)
    images: int | None = None  # how many real images mu/sigma describe (absent in pytorch-fid's and older files)
    split: str | None = None  # which CelebA split they came from (data.split of the prepared array)
    subset: Reference | None = None
    seed: int | None = None  # of a subset: the seed of `real_sample_indices` that chose its images


def real_sample_indices(n_images: int, n_samples: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded, sorted choice of min(n_samples, n_images) image indices (for P/R, and with
    their own seed for the final evaluation's real images)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=min(n_samples, n_images), replace=False))


def compute_reference(
    array: np.ndarray,
    net: torch.nn.Module,
    batch_size: int,
    count: int | None = None,
    pr_samples: int = 10000,
    progress: bool = True,
    subset: int | None = None,
    subset_seed: int = 0,
) -> Reference:
    """Statistics of the first `count` images (all when None) of a uint8 N x H x W x 3 array, and with
    `subset` those of `subset` images drawn at random from all N (`real_sample_indices` with
    `subset_seed`), from the same pass (`Reference.subset`).

    The images stay memory-mapped and are read one batch at a time; their features go into float64
    running sums on the network's device (`RunningStatistics`), and only the `pr_samples` rows kept
    for precision/recall are copied to the host. pytorch-fid holds all N x 2048 features in a
    float64 array instead (3.3 GB for CelebA); mu and sigma are the same to ~1e-15.
    """
    from ocbench.progress import progress as progress_bar

    n = len(array) if count is None else min(count, len(array))
    if n < 2:
        raise OcbenchError(f"reference statistics need at least 2 images, the prepared array has {n}")
    chosen = None
    if subset is not None:
        if not 2 <= subset <= len(array):
            raise OcbenchError(f"metrics.final_real_images is {subset} but the prepared array holds {len(array)} "
                               "images; set it to at most that (null: the final evaluation uses metrics.stats)")
        chosen = real_sample_indices(len(array), subset, subset_seed)
    end = n if chosen is None else max(n, int(chosen[-1]) + 1)  # the images the pass reads
    keep = real_sample_indices(n, pr_samples)
    device = next(net.parameters()).device
    running = RunningStatistics(net.feature_dim, device)
    chosen_running = None if chosen is None else RunningStatistics(net.feature_dim, device)
    kept = []
    start = 0
    bar = progress_bar(total=end, unit="img", desc="inception", disable=not progress)
    for batch in array_batches(array, batch_size, end):
        feats = features(net, batch)
        stop = start + len(feats)
        if start < n:
            running.update(feats[: n - start])
        rows = keep[(keep >= start) & (keep < stop)] - start
        kept.append(feats[torch.from_numpy(rows).to(feats.device)].cpu())
        if chosen_running is not None:
            rows = chosen[(chosen >= start) & (chosen < stop)] - start
            chosen_running.update(feats[torch.from_numpy(rows).to(feats.device)])
        start = stop
        bar.update(len(batch))
    bar.close()
    mu, sigma = running.result()
    ref = Reference(mu.cpu().numpy(), sigma.cpu().numpy(), torch.cat(kept).numpy(), images=n)
    if chosen_running is not None:
        mu, sigma = chosen_running.result()
        ref.subset = Reference(mu.cpu().numpy(), sigma.cpu().numpy(), images=subset, seed=subset_seed)
    return ref


def save_reference(ref: Reference, path: str | Path) -> None:
    """An .npz that `python -m pytorch_fid` reads (it takes only mu and sigma), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": ref.mu, "sigma": ref.sigma}
    if ref.features is not None:
        arrays["features"] = ref.features
    if ref.weights_sha256 is not None:
        arrays["weights_sha256"] = np.array(ref.weights_sha256)
    if ref.images is not None:
        arrays["images"] = np.array(ref.images)
    if ref.split is not None:
        arrays["split"] = np.array(ref.split)
    if ref.subset is not None:  # beside pytorch-fid's keys, which read the whole reference
        arrays.update(subset_mu=ref.subset.mu, subset_sigma=ref.subset.sigma, subset_images=np.array(ref.subset.images),
                      subset_seed=np.array(ref.subset.seed))
    atomic_write(path, lambda f: np.savez(f, **arrays))  # a file object: np.savez adds no ".npz"


def load_reference(path: str | Path) -> Reference:
    """Ours or pytorch-fid's `--save-stats` file (the latter has no features: no P/R)."""
    path = Path(path)
    if not path.is_file():
        raise OcbenchError(f"reference statistics {path} not found; run `ocbench fid stats` first")
    try:
        with np.load(path) as f:
            sha = str(f["weights_sha256"]) if "weights_sha256" in f else None
            feats = f["features"] if "features" in f else None
            images = int(f["images"]) if "images" in f else None
            split = str(f["split"]) if "split" in f else None
            subset = None
            if "subset_mu" in f:
                subset = Reference(f["subset_mu"], f["subset_sigma"], None, sha, int(f["subset_images"]), split,
                                   seed=int(f["subset_seed"]))
            return Reference(f["mu"], f["sigma"], feats, sha, images, split, subset)
    except (OSError, KeyError, ValueError) as exc:
        raise OcbenchError(
            f"{path} is not a statistics file with mu and sigma ({exc}); rerun `ocbench fid stats`"
        ) from None
