"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"), as torch-fidelity
computes it, on features already computed.

KID is the squared maximum mean discrepancy between generated and real features under the
polynomial kernel k(x, y) = (x.y / d + 1)^3, by the unbiased estimator. Unlike FID it has no bias
that depends on the number of samples, so KIDs of different sample counts compare. It is averaged
over `subsets` random subsets of `subset_size` features of each set (torch-fidelity's defaults:
100 of 1,000; all features when there are fewer), and the standard deviation over the subsets
(np.std: ddof 0, as torch-fidelity) says how much the subsets alone move it.

The subsets come from a CPU generator seeded here (SEED), apart from every generator training and the
FID use: computing KID changes no other number. The kernel sums run in float64 on the features'
device: the unbiased estimate is a difference of sums of ~m^2 terms that nearly cancel.
"""

from __future__ import annotations

import numpy as np
import torch

SEED = 2020  # torch-fidelity's default rng_seed; our subsets are drawn with torch's generator


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x y^T / d + 1)^3: torch-fidelity's `kernel_poly` with its defaults (degree 3, gamma 1/d, coef0 1)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_sum(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of k(x_i, y_j) over all pairs; with `y` None, over the pairs i != j of `x` (what the
    unbiased estimator's within-set terms take)."""
    if y is None:
        k = polynomial_kernel(x, x)
        return k.sum() - k.diagonal().sum()
    return polynomial_kernel(x, y).sum()


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, within_x=None, within_y=None) -> float:
    """The unbiased MMD^2 of two equally many feature rows (torch-fidelity's `mmd2`, mmd_est="unbiased"):
    the within-set kernel means without their diagonals, minus twice the cross mean. `within_x`,
    `within_y`: `kernel_sum(x)`, `kernel_sum(y)`, when they are known already."""
    m = len(x)
    within_x = kernel_sum(x) if within_x is None else within_x
    within_y = kernel_sum(y) if within_y is None else within_y
    return float((within_x + within_y) / (m * (m - 1)) - 2 * kernel_sum(x, y) / (m * m))


def real_sums(real: torch.Tensor, subsets) -> list[torch.Tensor]:
    """`kernel_sum` of each subset's real rows. The real features and the seeded subsets are the same
    every epoch: an evaluator computes these once per run, and each epoch pays for the generated
    features' terms only."""
    real = real.to(torch.float64)
    if len(subsets[0][1]) == len(real):  # every subset is all of them, permuted: one sum serves all
        return [kernel_sum(real)] * len(subsets)
    return [kernel_sum(real[j.to(real.device)]) for _, j in subsets]


def kid_of_subsets(fake: torch.Tensor, real: torch.Tensor, subsets, within_real=None) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets`, pairs of row indices (fake rows, real rows);
    `within_real`: `real_sums(real, subsets)`, if computed before."""
    fake, real = fake.to(torch.float64), real.to(fake.device, torch.float64)
    # Subsets as large as a set are all of it, permuted, and kernel sums do not see the order (up to
    # rounding): the set itself and one within-set sum serve every subset; when both sets are whole,
    # every subset gives the same MMD (torch-fidelity's std is then rounding, ~1e-17).
    if len(subsets[0][0]) == len(fake) and len(subsets[0][1]) == len(real):
        return mmd2_unbiased(fake, real), 0.0
    within_real = real_sums(real, subsets) if within_real is None else within_real
    whole = len(subsets[0][0]) == len(fake)
    within_fake = kernel_sum(fake) if whole else None
    mmds = [mmd2_unbiased(fake if whole else fake[i.to(fake.device)], real[j.to(fake.device)], within_fake, w)
            for (i, j), w in zip(subsets, within_real)]
    return float(np.mean(mmds)), float(np.std(mmds))


def subset_indices(n_fake: int, n_real: int, subsets: int, subset_size: int, seed: int = SEED):
    """`subsets` pairs of index tensors, each of min(subset_size, n_fake, n_real) rows drawn without
    replacement, from a CPU generator seeded with `seed` (the same pairs on every device)."""
    m = min(subset_size, n_fake, n_real)
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randperm(n_fake, generator=gen)[:m], torch.randperm(n_real, generator=gen)[:m])
            for _ in range(subsets)]


def kid(fake: torch.Tensor, real: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = SEED) -> tuple[float, float]:
    """(KID, its standard deviation over the subsets) of generated features `fake` against real
    features `real` (N x D tensors), on the device of `fake`."""
    if min(len(fake), len(real)) < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(fake)} and {len(real)}")
    return kid_of_subsets(fake, real, subset_indices(len(fake), len(real), subsets, subset_size, seed))
