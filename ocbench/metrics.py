"""Per-epoch evaluation: FID (as pytorch-fid), KID and improved precision/recall on one Inception pass.

    evaluator = Evaluator.from_config(cfg, device)       # Inception and reference stats, loaded once
    evaluator.evaluate(sample, n)                        # every epoch; fid_inf=True at snapshot epochs
    -> {"fid", "precision", "recall", "kid", "kid_std", "fid_inf", "weights_sha256", "weights_official",
        "frechet"} and the provenance (`Evaluator.provenance`: sample counts, split, precision)
    evaluator.evaluate(sample, n, final=True)            # run.json's "final": the FID against
                                                         # metrics.final_real_images real images, if set

`sample(start, count)` returns `count` generated images in [-1, 1] (count x 3 x H x W, any device);
the caller owns seeding and beta. Images are quantised to uint8 as a PNG would hold them
(`formats.to_uint8`), so the FID equals `python -m pytorch_fid` on the same images saved as PNG.
Everything after the images stays on the evaluator's device: float32 features (kept for the k-NN of
precision/recall and KID), float64 mu/sigma, and the Frechet distance by `metrics.frechet` ("eigh":
one `eigvalsh` against the reference's square root, computed here once; "scipy": pytorch-fid's own
`calculate_frechet_distance`, on the CPU). KID (`ocbench.kid`) compares the same generated features
with the real features P/R uses (`metrics.kid_real_samples` of them); FID-infinity (`fid.fid_infinity`,
asked for at snapshot epochs) refits the FID on subsets of them. Both draw their subsets from
generators of their own, so the FID, P/R and everything training computes stay as they were.
The same evaluator scores a folder of images or a generator checkpoint (`ocbench fid score`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ocbench import fid, kid, prdc
from ocbench.device import resolve_device
from ocbench.errors import OcbenchError
from ocbench.batches import load_prepared
from ocbench.formats import image_files, to_uint8
from ocbench.sample import Sampler, generator_sampler


def kid_real_features(features: np.ndarray, count: int | None) -> torch.Tensor:
    """KID's real side: a fixed, seeded choice of `count` of the reference's real features (all of
    them when None or more), in their stored order."""
    count = len(features) if count is None else min(count, len(features))
    rows = torch.randperm(len(features), generator=torch.Generator().manual_seed(kid.SEED))
    return torch.from_numpy(features[np.sort(rows[:count].numpy())])


class Evaluator:
    """pytorch-fid's Inception, the reference statistics (and the square root of their sigma) and
    the real features' k-NN radii."""

    def __init__(
        self,
        net: torch.nn.Module,
        weights: fid.Weights,
        reference: fid.Reference,
        batch_size: int = 200,
        pr_k: int = 3,
        frechet: str = "eigh",
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        kid_real_samples: int | None = None,
        fid_inf_points: int = 5,
        fid_inf_smallest: float = 0.5,
        final_reference: fid.Reference | None = None,
    ):
        """`net` (`fid.load_inception`) and `weights` score images against `reference` (and the final
        evaluation against `final_reference` when given). What is the same every epoch is made once,
        here: the reference's square root (`frechet` eigh), the real features' k-NN radii (precision
        and recall, k = `pr_k`) and KID's fixed choice of `kid_real_samples` real features. The other
        arguments are the metrics.* settings of the same names (`from_config` passes the config's)."""
        if frechet not in fid.FRECHET_METHODS:
            raise OcbenchError(f"metrics.frechet must be one of {', '.join(fid.FRECHET_METHODS)}, got {frechet!r}")
        self.net = net
        self.weights = weights
        self.reference = reference
        self.batch_size = batch_size
        self.pr_k = pr_k
        self.device = next(net.parameters()).device
        self.frechet = frechet
        if frechet == "eigh":
            # The reference is the same every epoch: its square root is computed once, here.
            self.ref_mu = torch.from_numpy(reference.mu).to(self.device, torch.float64)
            self.ref_sigma = torch.from_numpy(reference.sigma).to(self.device, torch.float64)
            self.ref_root = fid.psd_root(self.ref_sigma)  # (R, rank)
        # The final evaluation's real statistics (metrics.final_real_images), when they are not the
        # reference's: on the device with their square root, made once, at the first final evaluation.
        self.final_reference = final_reference
        self._final_on_device = None
        self.real_features = None
        self.real_radii = None
        if reference.features is not None and len(reference.features) > pr_k:
            # The real manifold is the same every epoch: its radii are computed once, here.
            self.real_features = torch.from_numpy(reference.features).to(self.device)
            self.real_radii = prdc.knn_radii(self.real_features, pr_k)
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.fid_inf_points, self.fid_inf_smallest = fid_inf_points, fid_inf_smallest
        self.kid_real = None
        self._kid_subsets = {}  # number of generated samples -> (subsets, their real kernel sums): once per run
        if reference.features is not None and len(reference.features) >= 2:
            self.kid_real = kid_real_features(reference.features, kid_real_samples).to(self.device)

    @property
    def weights_sha256(self) -> str:
        return self.weights.sha256

    @property
    def weights_official(self) -> bool:
        return self.weights.official

    def provenance(self, n: int, final: bool = False) -> dict:
        """What makes an evaluation of `n` generated samples comparable with another, as plain Python
        types (metrics rows travel in checkpoints loaded with weights_only=True): the sample counts,
        the real reference's size and split (empty when its stats file does not say), the precision.
        `final`: of a final evaluation, whose FID is against `final_reference` when there is one: its
        count of real images and the seed that drew them (`reference_seed`).
        The weights' sha256 and the Frechet route are in every result already."""
        ref = self.final_reference if final and self.final_reference is not None else self.reference
        out = {
            "fid_samples": int(n),
            "reference_images": "" if ref.images is None else int(ref.images),
            "reference_split": "" if ref.split is None else str(ref.split),
            "pr_real_samples": 0 if self.real_features is None else len(self.real_features),
            "kid_real_samples": 0 if self.kid_real is None else len(self.kid_real),
            "eval_precision": fid.EVAL_PRECISION,  # Inception in full fp32 on every device (`fid.full_fp32`)
        }
        if ref.seed is not None:
            out["reference_seed"] = int(ref.seed)
        return out

    @classmethod
    def from_config(cls, cfg, device: torch.device | str | None = None, stats: str | None = None,
                    final: bool = True):
        """Weights from `metrics.weights_dir` (or torch.hub's cache), stats from `metrics.stats`.
        `final`: with the final evaluation's real statistics (`metrics.final_real_images`), checked
        here, so that a run whose stats file lacks them stops before training, not at its end."""
        device = resolve_device(cfg.train.device) if device is None else torch.device(device)
        weights = fid.locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
        reference = fid.load_reference(stats or cfg.metrics.stats)
        if reference.weights_sha256 is not None and reference.weights_sha256 != weights.sha256:
            raise OcbenchError(
                f"{stats or cfg.metrics.stats} was made with other Inception weights "
                f"(sha256 {reference.weights_sha256[:16]}..., now {weights.sha256[:16]}...); "
                "delete it and rerun `ocbench fid stats`"
            )
        m = cfg.metrics
        kid_real = m.fid_samples if m.kid_real_samples is None else m.kid_real_samples
        held = 0 if reference.features is None else len(reference.features)
        if m.kid_real_samples is not None and m.kid_real_samples > held:
            raise OcbenchError(
                f"metrics.kid_real_samples is {m.kid_real_samples} but {stats or m.stats} holds {held} real "
                "features; lower it, or raise metrics.pr_real_samples and rerun `ocbench fid stats`"
            )
        final_ref = None if not final else final_reference(reference, m.final_real_images, m.final_real_seed,
                                                           stats or m.stats)
        net = fid.load_inception(weights, device, cfg.metrics.dims)
        if len(reference.mu) != net.feature_dim:
            raise OcbenchError(
                f"{stats or cfg.metrics.stats} holds {len(reference.mu)}-d statistics but metrics.dims is "
                f"{net.feature_dim}; delete it and rerun `ocbench fid stats`"
            )
        return cls(net, weights, reference, m.batch_size, m.pr_k, m.frechet, m.kid_subsets, m.kid_subset_size,
                   kid_real, m.fid_inf_points, m.fid_inf_smallest, final_ref)

    # ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def features(self, batches: Iterable[torch.Tensor], n: int) -> torch.Tensor:
        """pool3 features (n x 2048 float32, on the evaluator's device) of uint8 image batches."""
        out = torch.empty(n, self.net.feature_dim, dtype=torch.float32, device=self.device)
        start = 0
        for batch in batches:
            out[start : start + len(batch)] = fid.features(self.net, batch)
            start += len(batch)
        if start != n:
            raise ValueError(f"expected {n} images, got {start}")
        return out

    def frechet_distance(self, mu: torch.Tensor, sigma: torch.Tensor, n: int, final: bool = False) -> float:
        """The Frechet distance of (mu, sigma), statistics of `n` samples, to the reference (`final`: to
        the final evaluation's real statistics, when it has its own), by `metrics.frechet`."""
        if final and self.final_reference is not None:
            ref = self.final_reference
            if self.frechet == "scipy":
                return fid.frechet_distance_scipy(mu, sigma, ref.mu, ref.sigma)
            if self._final_on_device is None:
                ref_mu, ref_sigma = (torch.from_numpy(a).to(self.device, torch.float64) for a in (ref.mu, ref.sigma))
                self._final_on_device = ref_mu, ref_sigma, fid.psd_root(ref_sigma)
            return fid.frechet_distance_eigh(mu, sigma, *self._final_on_device[:2], n, self._final_on_device[2])
        if self.frechet == "scipy":
            return fid.frechet_distance_scipy(mu, sigma, self.reference.mu, self.reference.sigma)
        return fid.frechet_distance_eigh(mu, sigma, self.ref_mu, self.ref_sigma, n, self.ref_root)

    def kid(self, feats: torch.Tensor) -> tuple[float, float]:
        """(KID, std) of generated features against the kept real ones; the seeded subsets and the real
        features' kernel sums, the same every epoch, are computed on the first call for each count."""
        n = len(feats)
        if n not in self._kid_subsets:
            subsets = kid.subset_indices(n, len(self.kid_real), self.kid_subsets, self.kid_subset_size)
            self._kid_subsets[n] = subsets, kid.real_sums(self.kid_real, subsets)
        return kid.kid_of_subsets(feats, self.kid_real, *self._kid_subsets[n])

    def score_features(self, feats: torch.Tensor, fid_inf: bool = False, final: bool = False) -> dict:
        """FID against the reference mu/sigma (`final`: the final evaluation's, see `frechet_distance`);
        precision/recall and KID against the real features (NaN when the stats file has none, e.g. one
        written by `python -m pytorch_fid --save-stats`); with `fid_inf`, FID-infinity too (else NaN)."""
        mu, sigma = fid.statistics(feats, self.batch_size)
        result = {"fid": self.frechet_distance(mu, sigma, len(feats), final)}
        if self.real_features is not None and len(feats) > self.pr_k:
            p, r = prdc.precision_recall(self.real_features, feats, self.pr_k, self.real_radii)
        else:
            p, r = math.nan, math.nan
        k, k_std = math.nan, math.nan
        if self.kid_real is not None and len(feats) >= 2:
            k, k_std = self.kid(feats)
        inf = math.nan
        if fid_inf:
            inf, _ = fid.fid_infinity(feats, self.frechet_distance, self.fid_inf_points, self.fid_inf_smallest,
                                      self.batch_size)
        result.update(
            precision=p,
            recall=r,
            kid=k,
            kid_std=k_std,
            fid_inf=inf,
            weights_sha256=self.weights.sha256,
            weights_official=self.weights.official,
            frechet=self.frechet,
        )
        return result

    @torch.no_grad()
    def evaluate(self, sample: Sampler, n: int, fid_inf: bool = False, final: bool = False) -> dict:
        """Score `n` images from `sample(start, count)` (floats in [-1, 1]), in batches; FID-infinity
        as well with `fid_inf`; `final`: as the final evaluation (`score_features`)."""
        if n < 2:
            raise OcbenchError(f"FID needs at least 2 samples, got metrics.fid_samples={n}")

        def batches():
            for start in range(0, n, self.batch_size):
                count = min(self.batch_size, n - start)
                images = sample(start, count)
                if images.ndim != 4 or images.shape[0] != count or images.shape[1] != 3:
                    raise ValueError(f"sample({start}, {count}) gave shape {tuple(images.shape)}")
                yield to_uint8(images)

        return self.score_features(self.features(batches(), n), fid_inf, final)

    def evaluate_images(self, folder: str | Path, final: bool = False) -> dict:
        """Score the image files in `folder`, chosen and read as `python -m pytorch_fid` does; `final`:
        as the final evaluation (`score_features`)."""
        if not Path(folder).is_dir():
            raise OcbenchError(f"image folder {folder} does not exist")
        files = image_files(folder)
        if len(files) < 2:
            raise OcbenchError(f"{folder} holds {len(files)} image files; FID needs at least 2")
        return self.score_features(self.features(read_images(files, self.batch_size), len(files)), final=final)

    def evaluate_generator(self, checkpoint: str | Path, n: int | None = None, seed: int | None = None,
                           final: bool = False) -> dict:
        """Score `n` samples of a saved generator at its epoch's beta (`generator_sampler`: by default
        the latents of its epoch's evaluation, so the FID recorded in training); `final`: as the final
        evaluation (with its `n` and seed: run.json's "final")."""
        return self.evaluate(*generator_sampler(checkpoint, self.device, n, seed), final=final)


def final_reference(reference: fid.Reference, images: int | None, seed: int, path) -> fid.Reference | None:
    """The real statistics the final evaluation's FID is measured against: None (the reference itself)
    without `metrics.final_real_images`, else the stats file's subset, which must be of that many
    images drawn with `metrics.final_real_seed`."""
    if images is None:
        return None
    subset = reference.subset
    if subset is None or (subset.images, subset.seed) != (images, seed):
        held = "none" if subset is None else f"{subset.images} drawn with seed {subset.seed}"
        raise OcbenchError(f"{path} holds no statistics of metrics.final_real_images={images} real images drawn with "
                           f"metrics.final_real_seed={seed} (it holds {held}); delete it and rerun `ocbench fid stats`")
    return subset


# --------------------------------------------------------------------------------------------------
# sources of images


def read_images(files: list[Path], batch_size: int) -> Iterable[torch.Tensor]:
    """uint8 batches B x 3 x H x W; PIL `.convert("RGB")` as pytorch-fid's ImagePathDataset."""
    from PIL import Image

    for start in range(0, len(files), batch_size):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[start : start + batch_size]]
        if len({a.shape for a in arrays}) > 1:
            raise OcbenchError(f"images in {files[0].parent} differ in size; pytorch-fid needs one size")
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# commands


def make_reference(cfg, device: torch.device | str | None = None, progress: bool = True) -> Path:
    """`ocbench fid stats`: reference statistics of the prepared images at `metrics.stats`."""
    array = load_prepared(cfg.data.prepared)  # memory-mapped: read one batch at a time
    device = resolve_device(cfg.train.device) if device is None else torch.device(device)
    weights = fid.locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
    net = fid.load_inception(weights, device, cfg.metrics.dims)
    m = cfg.metrics
    ref = fid.compute_reference(array, net, m.batch_size, m.stats_images, m.pr_real_samples, progress,
                                m.final_real_images, m.final_real_seed)
    for r in (ref, ref.subset) if ref.subset is not None else (ref,):
        r.weights_sha256 = weights.sha256
        r.split = cfg.data.split  # `ocbench data prepare` remakes the array whenever its split changes
    fid.save_reference(ref, cfg.metrics.stats)
    return Path(cfg.metrics.stats)
