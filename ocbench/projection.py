"""The projection of a protocol's cost from measured rates: what `ocbench preflight` and `bench
protocol` both report.

    per run  = iterations with a G step x their time + iterations without one x theirs
               + evaluations x one evaluation's time
    protocol = per run x seeds, summed over the (GAN, variant) cases, / runs sharing the device

The iteration counts come from the critic schedule's one walk (`CriticConfig.iterations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ocbench.config import Config


@dataclass
class Timing:
    """Seconds per iteration (with and without a G step) and per evaluation, for one job."""

    with_g: float
    without_g: float | None  # None: the schedule never makes a D-only iteration, so not timed
    evaluation: float


@dataclass
class Case:
    gan: str
    variant: str
    runs: int  # seeds
    iterations_with_g: int  # per run, over all epochs
    iterations_without_g: int
    ours: Timing
    authors: Timing | None
    sharing: int  # jobs that shared the device while `ours` was timed
    projection: dict = field(default_factory=dict)


def evaluations(cfg: Config) -> float:
    """A run's evaluations in units of one epoch's (`metrics.fid_samples` samples): one per epoch, and
    the final one of `metrics.final_samples`."""
    return cfg.train.epochs + (cfg.metrics.final_samples or 0) / cfg.metrics.fid_samples


def project(case: Case, evaluations: float) -> dict:
    """Seconds per run and device-hours of the case's runs, ours and the authors', with `evaluations`
    per run (`evaluations(cfg)`)."""
    def per_run(t: Timing) -> float:
        seconds = case.iterations_with_g * t.with_g + evaluations * t.evaluation
        if case.iterations_without_g:
            seconds += case.iterations_without_g * t.without_g
        return seconds

    out = {"ours_run_s": per_run(case.ours)}
    out["ours_device_h"] = out["ours_run_s"] * case.runs / case.sharing / 3600
    out["ours_it_s"] = case.sharing / case.ours.with_g  # aggregate over the jobs sharing the device
    if case.authors is not None:
        out["authors_run_s"] = per_run(case.authors)
        out["authors_device_h"] = out["authors_run_s"] * case.runs / 3600
        out["authors_it_s"] = 1 / case.authors.with_g
        out["ratio"] = out["authors_device_h"] / out["ours_device_h"]
    return out
