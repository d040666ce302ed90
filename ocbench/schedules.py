"""beta schedules as data: (beta_H, beta_L) for epoch e of E, with t = (e + 1) / E.

Every kind is a piecewise-linear curve through knots (t, beta_H, beta_L); `ramp` and `combi` are
named knot lists (the paper's Fig. 7a and 7b; combi as in the official code), `constant` is a flat
line, `piecewise` takes its knots from the config.
"""

from __future__ import annotations

NAMED_KNOTS = {
    # Fig. 7a: high frequencies fade in while low frequencies fade out.
    "ramp": [(0.0, 0.0, 1.0), (1.0, 1.0, 0.0)],
    # Fig. 7b: beta_H = t + 0.2 up to t = 0.5, then 0.7; beta_L = 1 - beta_H.
    "combi": [(0.0, 0.2, 0.8), (0.5, 0.7, 0.3), (1.0, 0.7, 0.3)],
}
KINDS = ("constant", "ramp", "combi", "piecewise")


def knots(schedule: dict) -> list[tuple[float, float, float]]:
    kind = schedule["kind"]
    if kind == "constant":
        b = (float(schedule["beta_h"]), float(schedule["beta_l"]))  # the schema's defaults filled in
        return [(0.0, *b), (1.0, *b)]
    if kind == "piecewise":
        return [tuple(map(float, k)) for k in schedule["knots"]]
    if kind in NAMED_KNOTS:
        return NAMED_KNOTS[kind]
    raise ValueError(f"unknown beta schedule {kind!r}; allowed: {', '.join(KINDS)}")


def interpolate(points: list[tuple[float, float, float]], t: float) -> tuple[float, float]:
    """Linear between knots, flat beyond the first and the last."""
    if t <= points[0][0]:
        return points[0][1], points[0][2]
    for (t0, h0, l0), (t1, h1, l1) in zip(points, points[1:]):
        if t <= t1:
            w = (t - t0) / (t1 - t0)
            return h0 + w * (h1 - h0), l0 + w * (l1 - l0)
    return points[-1][1], points[-1][2]


def beta(schedule: dict, epoch: int, epochs: int) -> tuple[float, float]:
    """(beta_H, beta_L) for `epoch` (counted from 0) of `epochs`; constant within the epoch."""
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} outside 0..{epochs - 1}")
    return interpolate(knots(schedule), (epoch + 1) / epochs)


def is_identity(schedule: dict) -> bool:
    """True when beta is (1, 1) at every t: the networks need no weighting at all."""
    return all(h == 1.0 and l == 1.0 for _, h, l in knots(schedule))
