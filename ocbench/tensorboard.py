"""TensorBoard event files of a run, for watching it while it trains: `tensorboard --logdir
results/<config>/tensorboard`.

One directory per run, results/<config>/tensorboard/<run id>/, and one tag scheme for every run, so
that runs overlay. The x axis (TensorBoard's step) is the run's iteration count (D steps), the
checkpoint's `position.iterations`, for every tag:

    loss/d, loss/g      mean D and G loss over the iterations since the previous point (every
                        `log.every` iterations and at the end of each epoch)
    beta/h, beta/l      the epoch's beta weighting, at the same points
    fid, precision, recall, kid (when a row has it), speed/images_per_s, epoch   once per epoch
    samples             the epoch's fixed-noise grid, the PNG training saved

Only values training has already fetched from the device are written (the loop reads its running
losses every `log.every` iterations anyway), so logging adds no wait for the device and changes no
number training computes.

Resume: everything up to a checkpoint's step is flushed to disk before that checkpoint is written
(`flush`), and a resumed run opens its writer with `purge_step` = that step + 1, which hides from
TensorBoard whatever the killed attempt wrote after the checkpoint. A step is therefore shown
once, and none is missing. A run that starts afresh purges from step 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ocbench.errors import OcbenchError


class RunLog:
    """The SummaryWriter of one run, with the tag scheme above."""

    def __init__(self, log_dir: Path, resumed_at: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # e.g. a GPU machine's image with torch but not tensorboard
            raise OcbenchError(f"log.tensorboard is on but {exc}; install tensorboard (pip install "
                               f"tensorboard), or set log.tensorboard: false") from None

        purge_step = 0 if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        # (g_mean, d_mean, g_steps, d_steps) at the previous loss point. After a resume the first
        # window reaches back to the epoch's start: the sums at the previous point are not in the
        # checkpoint, and a window from the checkpoint could hold no G step where the uninterrupted
        # run's has one (WGAN's critic schedule), leaving its loss/g step out.
        self._last = None

    def losses(self, step: int, g_mean: float, d_mean: float, g_steps: int, d_steps: int, beta) -> None:
        """A loss point from the epoch's running means over `g_steps` G and `d_steps` D steps: the
        mean over the iterations since the previous point of this epoch (the first point after a
        resume: since the epoch's start)."""
        last = self._last if self._last is not None and self._last[3] <= d_steps else (0.0, 0.0, 0, 0)
        if d_steps > last[3]:
            self.writer.add_scalar("loss/d", (d_mean * d_steps - last[1] * last[3]) / (d_steps - last[3]), step)
        if g_steps > last[2]:  # WGAN's critic schedule can leave a window without a G step
            self.writer.add_scalar("loss/g", (g_mean * g_steps - last[0] * last[2]) / (g_steps - last[2]), step)
        self.writer.add_scalar("beta/h", beta[0], step)
        self.writer.add_scalar("beta/l", beta[1], step)
        self._last = (g_mean, d_mean, g_steps, d_steps)

    def epoch(self, step: int, row: dict, grid_png: Path | None) -> None:
        """The epoch's metrics row and its sample grid (None when the run diverged: no grid)."""
        self._last = None  # the next epoch's running means start from zero
        for tag, column in (("fid", "fid"), ("precision", "precision"), ("recall", "recall"), ("kid", "kid"),
                            ("speed/images_per_s", "images_per_s"), ("epoch", "epoch")):
            value = row.get(column)
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)
        if grid_png is not None and grid_png.exists():
            from PIL import Image

            with Image.open(grid_png) as im:
                self.writer.add_image("samples", np.asarray(im.convert("RGB")), step, dataformats="HWC")

    def flush(self) -> None:
        """On disk now: called before every checkpoint, so that a resume from it misses no step."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoLog:
    """`log.tensorboard: false`: the same calls, writing nothing."""

    def losses(self, *args, **kwargs) -> None:
        pass

    def epoch(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_log_dir(cfg, run_id: str) -> Path:
    return cfg.results_dir / "tensorboard" / run_id


def open_run_log(cfg, run_id: str, resumed_at: int | None) -> RunLog | NoLog:
    """The run's log as the config asks; `resumed_at`: the iteration count of the checkpoint resumed
    from, None for a fresh start."""
    if not cfg.log.tensorboard:
        return NoLog()
    return RunLog(run_log_dir(cfg, run_id), resumed_at)
