"""Improved precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall Metric
for Assessing Generative Models") on Inception pool3 features.

Each set of features is a manifold estimate: the union of balls around its points, each ball's
radius the distance to that point's k-th nearest neighbour in the same set (self excluded).

    precision = share of generated features inside the real manifold   (quality)
    recall    = share of real features inside the generated manifold   (coverage)

Distances are Euclidean, computed with `torch.cdist` in float64 (so that ties at a radius do not
depend on float32 rounding), a block of rows at a time: a block holds at most `max_elements`
distances (256 MB in float64 by default), so 10,000 x 10,000 fits in bounded memory on a GPU or CPU.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_ELEMENTS = 1 << 25


def _as_tensor(x, device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.to(device=device, dtype=torch.float64)


def _row_blocks(n_rows: int, n_cols: int, max_elements: int):
    step = max(1, max_elements // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def knn_radii(feats, k: int = 3, max_elements: int = MAX_ELEMENTS, device=None) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (float64, on `device`)."""
    x = _as_tensor(feats, device if device is not None else getattr(feats, "device", "cpu"))
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for rows in _row_blocks(len(x), len(x), max_elements):
        d = torch.cdist(x[rows], x)
        # k + 1 smallest: the first is the point itself (distance 0), the last the k-th neighbour.
        radii[rows] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def precision_recall(
    real,
    fake,
    k: int = 3,
    real_radii: torch.Tensor | None = None,
    max_elements: int = MAX_ELEMENTS,
    device=None,
) -> tuple[float, float]:
    """(precision, recall) of `fake` features against `real` ones (N x D arrays or tensors).

    `real_radii` (from `knn_radii(real, k)`) can be passed in when the real set is reused, as the
    per-epoch evaluation does. One pass over fake x real distances serves both numbers.
    """
    device = device if device is not None else getattr(fake, "device", "cpu")
    real, fake = _as_tensor(real, device), _as_tensor(fake, device)
    if real_radii is None:
        real_radii = knn_radii(real, k, max_elements)
    real_radii = real_radii.to(device=device, dtype=torch.float64)
    fake_radii = knn_radii(fake, k, max_elements)

    fake_in_real = torch.zeros(len(fake), dtype=torch.bool, device=device)
    real_in_fake = torch.zeros(len(real), dtype=torch.bool, device=device)
    for rows in _row_blocks(len(fake), len(real), max_elements):
        d = torch.cdist(fake[rows], real)  # block of fake rows x all real
        fake_in_real[rows] = (d <= real_radii[None, :]).any(dim=1)
        real_in_fake |= (d <= fake_radii[rows, None]).any(dim=0)
    return fake_in_real.double().mean().item(), real_in_fake.double().mean().item()
