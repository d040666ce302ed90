"""The paper's Figures 2-7 (and 8, beyond the paper) from the runs on disk, with matplotlib (Agg), as
figures/<config>/figN.<format>.

2  FID per epoch, a panel per GAN: baseline vs OCT.
3  DCGAN vs DCGAN_OCT FID with samples at `figures.curve_sample_epochs` under the curves.
4  Sample grids: a block per GAN, columns vanilla | octave, rows `figures.grid_epochs`.
5  DCGAN_OCT samples at alpha 0.5 (top) and alpha 0.99 (DCGAN_LOW, bottom), last epoch.
6  FID per epoch, a panel per GAN: every variant.
7  beta_H and beta_L per epoch for the ramp (a) and combination (b) schedules, from the config.
8  Beyond the paper, when the config trains a GAN with spectral norm or a gradient penalty: FID per
   epoch, a panel per such GAN (and DCGAN, without either), baseline vs OCT.

Nothing is dropped silently: a diverged run ends its line with an x and a note, a run that is missing
or unfinished is named on the figure, a variant or GAN the config does not train is named as absent,
and FIDs from non-official Inception weights carry a warning on the figure itself (figures travel
without their captions).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ocbench import schedules
from ocbench.aggregate import Runs, collect, label, provenance, require_finished, smoke_settings
from ocbench.config import Config
from ocbench.errors import OcbenchError
from ocbench.formats import GRID_PADDING as PADDING, grid_columns
from ocbench.plots import WARN, Notes, notes_below, plt, save_all, weights_notes

STABILISER_GANS = ("dcgan", "sngan", "wgan_gp")  # Figure 8's panels in paper.yaml: no stabiliser, SN, GP
COLORS = {"baseline": "tab:blue", "oct": "tab:orange", "low": "tab:green", "ramp": "tab:red",
          "combi": "tab:purple"}
EXTRA_COLORS = ["tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
BAND_TEXT = {"minmax": "shaded band: min–max over seeds",
             "ci95": "shaded band: 95% t-interval of the mean over seeds"}

def color(cfg: Config, variant: str) -> str:
    if variant in COLORS:
        return COLORS[variant]
    others = [v for v in cfg.variants if v not in COLORS]
    return EXTRA_COLORS[others.index(variant) % len(EXTRA_COLORS)]


# --------------------------------------------------------------------------------------------------
# notes: what a reader of the figure must know, printed under it (ocbench/plots.py draws them)


def absent_notes(notes: Notes, cfg: Config, gans: list[str], variants: list[str]) -> None:
    """Name what a figure would show but this config does not train (e.g. the official-wgan preset)."""
    missing_gans = [g for g in gans if g not in cfg.run.gans]
    missing_variants = [v for v in variants if v not in cfg.run.variants]
    if missing_gans:
        notes.add(f"Not trained by config '{cfg.name}' (run.gans): {', '.join(g.upper() for g in missing_gans)}.")
    if missing_variants:
        notes.add(f"Not trained by config '{cfg.name}' (run.variants): "
                  f"{', '.join(v.upper() for v in missing_variants)}.")


def unfinished_notes(notes: Notes, runs: Runs, gans: list[str], variants: list[str]) -> None:
    sel = runs.runs[runs.runs.gan.isin(gans) & runs.runs.variant.isin(variants)]
    missing = sel[sel.run_status == "missing"].run.tolist()
    partial = sel[sel.run_status == "incomplete"]
    if missing:
        notes.add(f"Missing runs (not trained yet, nothing to plot): {', '.join(missing)}.")
    if len(partial):
        notes.add("Unfinished runs (plotted as far as they got): "
                  + ", ".join(f"{r.run} ({r.epochs_done} of {r.epochs} epochs)" for r in partial.itertuples()) + ".")


# --------------------------------------------------------------------------------------------------
# FID curves


def fid_by_seed(runs: Runs, gan: str, variant: str, metric: str = "fid") -> pd.DataFrame:
    """epoch x seed table of FID, or of `metric` (kid) (NaN where a seed has no finite value for that epoch)."""
    rows = runs.metrics[(runs.metrics.gan == gan) & (runs.metrics.variant == variant)]
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index="epoch", columns="seed", values=metric, aggfunc="first", dropna=False)
    return table.astype(float).replace([np.inf, -np.inf], np.nan).sort_index()


def mean_and_band(table: pd.DataFrame, band: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Mean over seeds per epoch, and the band: min-max, or the 95% t-interval of the mean."""
    mean = table.mean(axis=1, skipna=True)
    if band == "ci95":
        from scipy import stats

        n = table.notna().sum(axis=1)
        half = stats.t.ppf(0.975, (n - 1).clip(lower=1)) * table.std(axis=1, ddof=1) / np.sqrt(n)
        half = half.where(n > 1, 0.0)
        return mean, mean - half, mean + half
    return mean, table.min(axis=1, skipna=True), table.max(axis=1, skipna=True)


def plot_fid(ax, cfg: Config, runs: Runs, gan: str, variants: list[str], notes: Notes, metric: str = "fid") -> None:
    """One panel: a mean line (and band, with several seeds) per variant; diverged runs end in an x."""
    n_seeds = len(cfg.run.seeds)
    absent = []
    for variant in variants:
        name, c = label(gan, variant), color(cfg, variant)
        table = fid_by_seed(runs, gan, variant, metric)
        if table.empty or table.notna().sum().sum() == 0:
            absent.append(name)
            continue
        seeds_with_rows = table.shape[1]
        mean, lo, hi = mean_and_band(table, cfg.figures.band)
        text = name if seeds_with_rows == n_seeds else f"{name} ({seeds_with_rows} of {n_seeds} seeds)"
        ax.plot(mean.index, mean.values, color=c, lw=1.6, label=text,
                marker="o" if len(mean) <= 12 else None, ms=3)
        if n_seeds > 1 and seeds_with_rows > 1:
            ax.fill_between(mean.index, lo.values, hi.values, color=c, alpha=0.18, lw=0)
        sel = runs.runs[(runs.runs.gan == gan) & (runs.runs.variant == variant) & (runs.runs.run_status == "diverged")]
        for r in sel.itertuples():
            mark_diverged(ax, table[r.seed] if r.seed in table else pd.Series(dtype=float), r, c, n_seeds, notes)
    if absent:
        ax.text(0.02, 0.97, f"no {metric.upper()} yet: " + ", ".join(absent), transform=ax.transAxes, va="top", ha="left",
                fontsize=7.5, color="0.35", style="italic")
    ax.set_title(gan.upper())
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.upper())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, cfg.train.epochs + 0.5)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", frameon=True)


def mark_diverged(ax, fid: pd.Series, r, c: str, n_seeds: int, notes: Notes) -> None:
    """An x at the epoch the run diverged, at the height of its last finite FID (top of the panel if none)."""
    finite = fid.dropna()
    who = r.label if n_seeds == 1 else f"{r.label} seed {r.seed}"
    if len(finite):
        ax.plot([finite.index[-1], r.diverged_epoch], [finite.iloc[-1]] * 2, color=c, ls=":", lw=1.2)
        ax.plot([r.diverged_epoch], [finite.iloc[-1]], marker="x", ms=9, mew=2.2, color=c, ls="none")
        y, transform = finite.iloc[-1], ax.transData
    else:
        transform = ax.get_xaxis_transform()  # x in epochs, y in axes fraction
        ax.plot([r.diverged_epoch], [0.9], marker="x", ms=9, mew=2.2, color=c, ls="none", transform=transform)
        y = 0.9
    ax.annotate("diverged", (r.diverged_epoch, y), xycoords=transform, xytext=(4, 4),
                textcoords="offset points", fontsize=7, color=c)
    extra = "; the mean after it is over the other seeds" if n_seeds > 1 else ""
    notes.add(f"×: {who} diverged at epoch {r.diverged_epoch} (non-finite loss; no FID from then on){extra}.")


def band_note(cfg: Config, notes: Notes) -> None:
    if len(cfg.run.seeds) > 1:
        notes.add(f"Lines: mean FID over {len(cfg.run.seeds)} seeds ({', '.join(map(str, cfg.run.seeds))}); "
                  f"{BAND_TEXT[cfg.figures.band]}.")


def set_fid_range(ax, rows: pd.DataFrame, cfg: Config, notes: Notes, metric: str = "fid") -> None:
    """One FID range for the whole figure (the panels share their y-axis), from the seeds' own FIDs:
    a 95% interval from two or three seeds can be many times wider than the data and would flatten
    every curve, so it may run off the axis, and the figure says so."""
    fid = rows[metric].astype(float)
    fid = fid[np.isfinite(fid)]
    if fid.empty:
        return
    lo, hi = fid.min(), fid.max()
    pad = 0.06 * (hi - lo) or (1.0 if metric == "fid" else 1e-3)
    # FID is never negative; the unbiased KID may be, a little, when the two sets are very close
    ax.set_ylim(max(0.0, lo - pad) if metric == "fid" else lo - pad, hi + pad)
    if cfg.figures.band == "ci95" and len(cfg.run.seeds) > 1:
        notes.add("Where few seeds make the 95% interval wider than the seeds' spread, it runs off the FID axis.")


def fid_figure(cfg: Config, runs: Runs, number: int, variants: list[str], title: str, gans: list[str] | None = None,
               named: tuple[str, ...] = ("dcgan", "lsgan", "wgan"), notes: Notes | None = None, metric: str = "fid"):
    """Figures 2, 6 and 8: a panel per GAN (default: every GAN the config trains) with a shared FID (or
    KID: `metric`) axis; the GANs in `named` that the config does not train are named under the figure."""
    gans = list(cfg.run.gans) if gans is None else gans
    shown = [v for v in variants if v in cfg.run.variants]
    notes = Notes() if notes is None else notes
    width = max(6.4, 4.2 * len(gans))
    fig, axes = plt.subplots(1, len(gans), figsize=(width, 3.6), sharey=True, squeeze=False)
    band_note(cfg, notes)
    for ax, gan in zip(axes[0], gans):
        plot_fid(ax, cfg, runs, gan, shown, notes, metric)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    rows = runs.metrics[runs.metrics.gan.isin(gans) & runs.metrics.variant.isin(shown)]
    set_fid_range(axes[0][0], rows, cfg, notes, metric)
    sample_count_notes(notes, rows, metric)
    protocol_notes(notes, cfg)
    # wrapped to the figure's width (~11 characters an inch at the title's size): one panel is narrow
    fig.suptitle(textwrap.fill(f"Figure {number}: {title}", int(11 * width)))
    unfinished_notes(notes, runs, gans, shown)
    absent_notes(notes, cfg, list(named), variants)
    weights_notes(notes, runs.metrics[runs.metrics.variant.isin(shown)])
    notes.first(smoke_settings(cfg, rows))
    return notes_below(fig, notes, tight=True)


def protocol_notes(notes: Notes, cfg: Config) -> None:
    """Where the config's training departs from the paper's: other networks, a length in G steps."""
    t = cfg.train
    if t.arch == "resnet":
        notes.add(f"Networks: SN-GAN's ResNet for 128x128 (Miyato et al. 2018, as mimicry's sngan_128), ngf {t.ngf}, "
                  f"ndf {t.ndf}, octave convolutions at each variant's α: beyond the paper's DCGAN-style networks.")
    if t.g_steps is not None:
        notes.add(f"Training stops at G step {t.g_steps:,} (train.g_steps), within epoch {t.epochs}: its point "
                  "scores the generator after a partial epoch.")


def sample_count_notes(notes: Notes, rows: pd.DataFrame, metric: str) -> None:
    """What the curve is and on how many samples: FIDs of different sample counts do not compare."""
    p = provenance(rows)
    what = ("KID: unbiased MMD² of Inception features, polynomial kernel (Bińkowski et al. 2018), mean over "
            "random subsets" if metric == "kid" else "FID (biased by the sample count: compare curves of equal N only)")
    counts = (f" of {p['fid_samples']} generated samples per epoch against {p['reference_images'] or '?'} real "
              f"images (split {p['reference_split'] or '?'})" if p["fid_samples"] else "")
    notes.add(f"{what}{counts}.")


def figure2(cfg: Config, runs: Runs):
    metric = cfg.figures.metric  # fid (the paper's) or kid
    return fid_figure(cfg, runs, 2, ["baseline", "oct"],
                      f"{metric.upper()} per epoch, vanilla vs octave convolution (OCT, α = 0.5)", metric=metric)


def figure6(cfg: Config, runs: Runs):
    variants = list(dict.fromkeys(["baseline", "oct", "low", "ramp", "combi", *cfg.run.variants]))
    metric = cfg.figures.metric
    return fid_figure(cfg, runs, 6, variants, f"{metric.upper()} per epoch: baseline, OCT, LOW, RAMP and COMBI",
                      metric=metric)


def figure8(cfg: Config, runs: Runs):
    """Beyond the paper: does OCT still help, or at least not hurt, on top of spectral norm or a gradient
    penalty? A panel for DCGAN and for every GAN with either stabiliser that the config trains."""
    gans = [g for g in cfg.run.gans if g == "dcgan" or cfg.gans[g].stabilised]
    notes = Notes()
    notes.add("Beyond the paper, which calls octave convolutions orthogonal and complementary to existing "
              "stabilisation methods but tests none: here they are combined with spectral normalisation "
              "(SN-GAN, Miyato et al. 2018) and the gradient penalty (WGAN-GP, Gulrajani et al. 2017).")
    for gan in gans:
        notes.add(f"{gan.upper()}: {describe_gan(cfg.gans[gan])}.")
    return fid_figure(cfg, runs, 8, ["baseline", "oct"], "(beyond the paper) FID per epoch with standard "
                      "stabilisers, vanilla vs octave (OCT)", gans=gans, named=STABILISER_GANS, notes=notes)


def describe_gan(gan) -> str:
    """'hinge loss, spectral norm, no normalisation in D, adam lr 0.0002 (0.5, 0.999), 1 D step per G step'."""
    parts = [f"{gan.loss} loss"]
    if gan.spectral_norm:
        parts.append("spectral norm")
    if gan.gradient_penalty:
        parts.append(f"gradient penalty λ = {gan.gradient_penalty:g}")
    if gan.clamp is not None:
        parts.append(f"weight clamp {gan.clamp:g}")
    parts.append({"batch": "BatchNorm", "none": "no normalisation", "layer": "layer norm"}[gan.d_norm] + " in D")
    opt = gan.optimizer
    betas = f" ({opt.betas[0]:g}, {opt.betas[1]:g})" if opt.name == "adam" else ""
    parts.append(f"{opt.name} lr {opt.lr:g}{betas}, {gan.critic.n} D step{'s' * (gan.critic.n > 1)} per G step")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# samples: crop images out of the per-epoch grids that training saves


def grid_tiles(path: Path, cfg: Config, count: int) -> list[np.ndarray]:
    """The first `count` images of a samples/epoch_EEE.png grid (torchvision's layout: nrow columns,
    `PADDING` pixels around every image)."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    nrow, size = grid_columns(cfg.train.grid_size), cfg.data.image_size
    n = cfg.train.grid_size
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    expect = (rows * (size + PADDING) + PADDING, cols * (size + PADDING) + PADDING)
    if grid.shape[:2] != expect:
        raise OcbenchError(f"{path} is {grid.shape[1]}x{grid.shape[0]} pixels, not the {expect[1]}x{expect[0]} grid "
                           f"of {n} images of {size}px that train.grid_size and data.image_size describe")
    out = []
    for i in range(min(count, n)):
        y, x = PADDING + (i // nrow) * (size + PADDING), PADDING + (i % nrow) * (size + PADDING)
        out.append(grid[y:y + size, x:x + size])
    return out


def mosaic(tiles: list[np.ndarray], rows: int, cols: int, gap: int = 3) -> np.ndarray:
    """Images in a rows x cols block with white gaps (like the paper's sample panels)."""
    size = tiles[0].shape[0]
    out = np.full((rows * size + (rows - 1) * gap, cols * size + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles[: rows * cols]):
        y, x = (i // cols) * (size + gap), (i % cols) * (size + gap)
        out[y:y + size, x:x + size] = tile
    return out


def sample_run(runs: Runs, gan: str, variant: str) -> str | None:
    """The run whose samples represent a GAN and variant: the lowest seed that has any epoch."""
    sel = runs.runs[(runs.runs.gan == gan) & (runs.runs.variant == variant) & (runs.runs.epochs_done > 0)]
    return sel.sort_values("seed").run.iloc[0] if len(sel) else None


def find_sample(cfg: Config, run: str | None, epoch: int) -> tuple[Path | None, int | None]:
    """The grid for `epoch` (clamped to the last trained epoch), or the latest one before it when the run
    stopped earlier (diverged, or still training)."""
    if run is None:
        return None, None
    samples = cfg.run_dir(run) / "samples"
    for e in range(min(epoch, cfg.train.epochs), 0, -1):
        path = samples / f"epoch_{e:03d}.png"
        if path.is_file():
            return path, e
    return None, None


def show_cell(ax, cfg: Config, run: str | None, epoch: int, rows: int, cols: int) -> int | None:
    """Draw one sample block; a grey cell that says why when there is nothing to show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    path, shown = find_sample(cfg, run, epoch)
    if path is None:
        ax.set_facecolor("0.92")
        ax.text(0.5, 0.5, "missing run" if run is None else "no samples yet", transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="0.3")
        return None
    ax.imshow(mosaic(grid_tiles(path, cfg, rows * cols), rows, cols))
    if shown != min(epoch, cfg.train.epochs):
        ax.text(0.5, -0.02, f"(epoch {shown}: the run stopped there)", transform=ax.transAxes,
                ha="center", va="top", fontsize=7, color=WARN)
    return shown


# --------------------------------------------------------------------------------------------------
# Figures 3-5: laid out by hand, in inches, so that the images, not whitespace, fill the page. Each
# figure has a layout class that names its measures and computes its rectangles, (x, y, w, h) with
# (x, y) the bottom left corner in inches from the figure's bottom left (matplotlib's origin); the
# figure function only draws into them. The notes are known only after drawing, so a page starts with
# room for a few lines of them, and `crop_to_notes` then fits its bottom to the notes.


def axes_at(fig, x: float, y: float, w: float, h: float):
    """An axes at (x, y) inches from the bottom left, w x h inches."""
    W, H = fig.get_size_inches()
    return fig.add_axes((x / W, y / H, w / W, h / H))


def crop_to_notes(fig, bottom_in: float, notes: Notes):
    """Cut the empty space below `bottom_in` inches and put the notes there instead."""
    W, H = fig.get_size_inches()
    need = notes.height(W)
    shift = bottom_in - need
    for ax in fig.axes:
        x0, y0, w, h = ax.get_position().bounds
        ax.set_position((x0, (y0 * H - shift) / (H - shift), w, h * H / (H - shift)))
    for text in fig.texts:  # the suptitle keeps its distance from the top
        x, yy = text.get_position()
        text.set_position((x, (yy * H - shift) / (H - shift)))
    fig.set_size_inches(W, H - shift)
    notes.draw(fig)
    return fig


def pick_gan(cfg: Config, notes: Notes, wanted: str = "dcgan") -> str:
    """The paper shows DCGAN in Figures 3 and 5; a config without it shows its first GAN instead."""
    if wanted in cfg.run.gans:
        return wanted
    notes.add(f"{wanted.upper()} is not trained by config '{cfg.name}'; showing {cfg.run.gans[0].upper()} instead.")
    return cfg.run.gans[0]


def epoch_label(epoch: int, cfg: Config) -> str:
    if epoch > cfg.train.epochs:
        return f"epoch {cfg.train.epochs}\n(the last;\n{epoch} asked)"
    return f"epoch {epoch}"


class Figure3Layout:
    """Figure 3's page, from the top edge down:

        TITLE        the suptitle, SUPTITLE below the top edge
        CURVE_H      LEFT | the FID curve, `curve_w` wide | RIGHT
        BELOW_CURVE  the curve's tick and axis labels, then the epoch over each column of samples
        CELL         a row of square sample cells per variant, spread evenly from the curve's left
        ROW_GAP        edge to its right edge (a single cell: centred), ROW_GAP under each row
        notes        NOTES_RISE up into the last ROW_GAP
    """

    LEFT = 1.0  # the FID axis label; each row's variant name
    RIGHT = 0.3
    TITLE = 0.55
    SUPTITLE = 0.12
    CURVE_H = 2.8
    CURVE_MIN_W = 7.0  # more columns than fit in it widen the curve
    BELOW_CURVE = 0.8
    CELL = 1.7  # 2 x 2 samples
    CELL_GAP = 0.12  # the least space between two cells
    ROW_GAP = 0.3  # room for a cell's "(epoch N: the run stopped there)"
    NOTES_RISE = 0.1

    def __init__(self, columns: int, rows: int):
        self.columns, self.rows = columns, rows  # sample epochs; variants with samples (vanilla, octave)
        self.curve_w = max(self.CURVE_MIN_W, columns * (self.CELL + self.CELL_GAP))
        # The first height, with room for a few lines of notes: `crop_to_notes` fits the page to them once
        # they are known. Any such height lays out the same page, but its float rounding reaches the
        # last pixel of some axes, so this stays the sum the figure has always been drawn with.
        self.height = 3.2 + 0.9 + rows * (self.CELL + self.ROW_GAP) + 1.2
        self.size = self.LEFT + self.curve_w + self.RIGHT, self.height
        self.suptitle_y = 1 - self.SUPTITLE / self.height
        self.curve = self.LEFT, self.height - self.TITLE - self.CURVE_H, self.curve_w, self.CURVE_H
        self.bottom = self._row_top(rows) + self.NOTES_RISE  # where the notes may begin

    def cell(self, row: int, col: int) -> tuple[float, float, float, float]:
        return self._column_x(col), self._row_top(row) - self.CELL, self.CELL, self.CELL

    def _column_x(self, col: int) -> float:
        if self.columns == 1:
            return self.LEFT + (self.curve_w - self.CELL) / 2
        step = (self.curve_w - self.CELL) / (self.columns - 1)
        return self.LEFT + col * step

    def _row_top(self, row: int) -> float:
        y = self.height - self.TITLE - self.CURVE_H - self.BELOW_CURVE
        for _ in range(row):
            y = y - self.CELL - self.ROW_GAP
        return y


def sample_epochs(cfg: Config) -> dict[int, int]:
    """Figure 3's sample columns, shown epoch -> asked epoch: an epoch after the last trained one is
    shown at the last (once), and its title says so."""
    epochs: dict[int, int] = {}
    for e in sorted(cfg.figures.curve_sample_epochs or [cfg.train.epochs]):
        epochs.setdefault(min(e, cfg.train.epochs), e)
    return epochs


def figure3(cfg: Config, runs: Runs):
    """FID curves of the vanilla and octave GAN, with samples of both at several epochs beneath."""
    notes = Notes()
    gan = pick_gan(cfg, notes)
    variants = [v for v in ("baseline", "oct") if v in cfg.run.variants]
    epochs = sample_epochs(cfg)
    metrics = runs.metrics[(runs.metrics.gan == gan) & runs.metrics.variant.isin(variants)]
    layout = Figure3Layout(columns=len(epochs), rows=len(variants))
    fig = plt.figure(figsize=layout.size)
    band_note(cfg, notes)
    curve = axes_at(fig, *layout.curve)
    plot_fid(curve, cfg, runs, gan, variants, notes)
    curve.set_title("")
    set_fid_range(curve, metrics, cfg, notes)
    for e in epochs:
        curve.axvline(e, color="0.5", ls=":", lw=0.8)
    for row, variant in enumerate(variants):
        run = sample_run(runs, gan, variant)
        for col, (e, asked) in enumerate(epochs.items()):
            ax = axes_at(fig, *layout.cell(row, col))
            show_cell(ax, cfg, run, e, 2, 2)
            if row == 0:
                ax.set_title(f"epoch {e}" if e == asked else f"epoch {e} (last; {asked} asked)", fontsize=8)
            if col == 0:
                seed = f"\nseed {cfg.parse_run(run)[2]}" if run and len(cfg.run.seeds) > 1 else ""
                ax.set_ylabel(label(gan, variant) + seed, fontsize=8.5, color=color(cfg, variant),
                              fontweight="bold")
    fig.suptitle(f"Figure 3: FID of {label(gan, 'baseline')} and {label(gan, 'oct')} with generated samples",
                 y=layout.suptitle_y)
    unfinished_notes(notes, runs, [gan], variants)
    absent_notes(notes, cfg, [], ["baseline", "oct"])
    protocol_notes(notes, cfg)
    weights_notes(notes, metrics)
    notes.add("Samples: the first 4 images of each epoch's fixed-z grid; dotted lines mark their epochs.")
    notes.first(smoke_settings(cfg, metrics))
    return crop_to_notes(fig, layout.bottom, notes)


class Figure4Layout:
    """Figure 4's page: a block of square sample cells per GAN, side by side, a column per variant and a
    row per epoch, GAP between cells, BLOCK_GAP between blocks, LEFT and RIGHT beside them.

        TOP          the suptitle (SUPTITLE below the top edge), each block's GAN name (its baseline
                     GAN_NAME below the top edge), the column titles
        CELL + GAP   a row per epoch
        BELOW_CELLS  under the last row, then the notes
    """

    LEFT = 0.95  # the epoch labels beside the first block
    RIGHT = 0.15
    TOP = 0.95
    SUPTITLE = 0.1
    GAN_NAME = 0.5
    CELL = 1.9  # 4 x 4 samples
    GAP = 0.08
    BLOCK_GAP = 0.35
    BELOW_CELLS = 0.25  # room for a cell's "(epoch N: the run stopped there)"
    NOTES_GUESS = 1.5  # the first height's room for the notes; `crop_to_notes` fits the page to them

    def __init__(self, blocks: int, columns: int, rows: int):
        self.blocks, self.columns, self.rows = blocks, columns, rows  # GANs; variants (vanilla, octave); epochs
        self.block_w = columns * self.CELL + (columns - 1) * self.GAP
        self.height = self.TOP + rows * (self.CELL + self.GAP) + self.NOTES_GUESS
        self.size = self.LEFT + blocks * self.block_w + (blocks - 1) * self.BLOCK_GAP + self.RIGHT, self.height
        self.suptitle_y = 1 - self.SUPTITLE / self.height
        lowest = self.cell(0, 0, rows - 1)[1] if blocks and columns else self.height
        self.bottom = lowest - self.BELOW_CELLS  # where the notes may begin

    def gan_name(self, block: int) -> tuple[float, float]:
        """Where the GAN's name sits: centred over its block."""
        return self._block_x(block) + self.block_w / 2, self.height - self.GAN_NAME

    def cell(self, block: int, col: int, row: int) -> tuple[float, float, float, float]:
        x = self._block_x(block) + col * (self.CELL + self.GAP)
        y = self.height - self.TOP - (row + 1) * self.CELL - row * self.GAP
        return x, y, self.CELL, self.CELL

    def _block_x(self, block: int) -> float:
        return self.LEFT + block * (self.block_w + self.BLOCK_GAP)


def figure4(cfg: Config, runs: Runs):
    """A block per GAN: columns vanilla | octave, rows the grid epochs; 4 x 4 samples per cell."""
    notes = Notes()
    gans = list(cfg.run.gans)
    variants = [v for v in ("baseline", "oct") if v in cfg.run.variants]
    epochs = list(cfg.figures.grid_epochs) or [cfg.train.epochs]
    layout = Figure4Layout(blocks=len(gans), columns=len(variants), rows=len(epochs))
    fig = plt.figure(figsize=layout.size)
    width, height = layout.size
    for b, gan in enumerate(gans):
        x, y = layout.gan_name(b)
        fig.text(x / width, y / height, gan.upper(), ha="center", va="bottom", fontsize=10, fontweight="bold")
        for col, variant in enumerate(variants):
            run = sample_run(runs, gan, variant)
            for row, e in enumerate(epochs):
                ax = axes_at(fig, *layout.cell(b, col, row))
                show_cell(ax, cfg, run, e, 4, 4)
                if row == 0:
                    ax.set_title(f"{'vanilla' if variant == 'baseline' else 'octave'}\n({label(gan, variant)})",
                                 fontsize=8.5)
                if b == 0 and col == 0:
                    ax.set_ylabel(epoch_label(e, cfg), fontsize=8.5)
    fig.suptitle("Figure 4: samples per GAN, vanilla vs octave convolution, by epoch", y=layout.suptitle_y)
    unfinished_notes(notes, runs, gans, variants)
    absent_notes(notes, cfg, ["dcgan", "lsgan", "wgan"], ["baseline", "oct"])
    seeds = f" of seed {min(cfg.run.seeds)} (lowest seed trained)" if len(cfg.run.seeds) > 1 else ""
    notes.add(f"Each cell: the first 16 images of the epoch's grid from a fixed z{seeds}.")
    shown = runs.metrics[runs.metrics.gan.isin(gans) & runs.metrics.variant.isin(variants)]
    notes.first(smoke_settings(cfg, shown))
    return crop_to_notes(fig, layout.bottom, notes)


class Figure5Layout:
    """Figure 5's page, from the top edge down:

        TOP          the suptitle, SUPTITLE below the top edge
        block        LEFT | cols x rows square tiles of TILE | RIGHT, a block per variant
        BLOCK_GAP      under each block: its "(epoch N: the run stopped there)", then the next block's title
        notes        NOTES_RISE up into the last BLOCK_GAP
    """

    LEFT = 0.3
    RIGHT = 0.3
    TOP = 0.9
    SUPTITLE = 0.1
    TILE = 1.15
    BLOCK_GAP = 0.55
    NOTES_RISE = 0.3
    NOTES_GUESS = 1.2  # the first height's room for the notes; `crop_to_notes` fits the page to them

    def __init__(self, blocks: int, cols: int, rows: int):
        self.blocks = blocks  # variants (OCT, LOW); the first height keeps room for one when there are none
        self.block_w, self.block_h = cols * self.TILE, rows * self.TILE
        self.height = self.TOP + max(1, blocks) * (self.block_h + self.BLOCK_GAP) + self.NOTES_GUESS
        self.size = self.LEFT + self.block_w + self.RIGHT, self.height
        self.suptitle_y = 1 - self.SUPTITLE / self.height
        self.bottom = self._block_top(blocks) + self.NOTES_RISE  # where the notes may begin

    def block(self, i: int) -> tuple[float, float, float, float]:
        return self.LEFT, self._block_top(i) - self.block_h, self.block_w, self.block_h

    def _block_top(self, i: int) -> float:
        y = self.height - self.TOP
        for _ in range(i):
            y = y - self.block_h - self.BLOCK_GAP
        return y


def figure5(cfg: Config, runs: Runs):
    """The octave GAN at alpha 0.5 (OCT, top) and alpha 0.99 (LOW, bottom), last epoch, 2 x 8 samples each."""
    notes = Notes()
    gan = pick_gan(cfg, notes)
    variants = [v for v in ("oct", "low") if v in cfg.run.variants]
    epoch = cfg.train.epochs
    cols = min(8, int(math.sqrt(cfg.train.grid_size)) or 1)
    rows = min(2, math.ceil(cfg.train.grid_size / cols))
    layout = Figure5Layout(blocks=len(variants), cols=cols, rows=rows)
    fig = plt.figure(figsize=layout.size)
    for i, variant in enumerate(variants):
        ax = axes_at(fig, *layout.block(i))
        shown = show_cell(ax, cfg, sample_run(runs, gan, variant), epoch, rows, cols)
        alpha = cfg.variants[variant].alpha
        where = "top" if variant == "oct" else "bottom"
        ax.set_title(f"({where}) {label(gan, variant)}: α = {alpha:g}, epoch {shown or epoch}", loc="left",
                     fontsize=9, color=color(cfg, variant))
    if not variants:
        notes.add("Neither OCT nor LOW is trained by this config: nothing to show.")
    names = " and ".join(label(gan, v) for v in variants)
    fig.suptitle(f"Figure 5: {label(gan, 'oct')} samples at α = {cfg.variants['oct'].alpha:g} (top) and "
                 f"α = {cfg.variants['low'].alpha:g} (bottom)", y=layout.suptitle_y)
    unfinished_notes(notes, runs, [gan], variants)
    absent_notes(notes, cfg, [], ["oct", "low"])
    notes.add(f"{names}: the first {rows * cols} images of the last epoch's grid from a fixed z; "
              "a larger α leaves fewer high-frequency channels.")
    shown = runs.metrics[(runs.metrics.gan == gan) & runs.metrics.variant.isin(variants)]
    notes.first(smoke_settings(cfg, shown))
    return crop_to_notes(fig, layout.bottom, notes)


# --------------------------------------------------------------------------------------------------
# Figure 7: the beta schedules, from the config (what every run uses, whether trained yet or not)


def figure7(cfg: Config, runs: Runs):
    notes = Notes()
    epochs = cfg.train.epochs
    panels = [("ramp", "(a) ramp"), ("combi", "(b) combination")]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharey=True)
    x = np.arange(1, epochs + 1)
    for ax, (variant, title) in zip(axes, panels):
        if variant not in cfg.variants:
            ax.text(0.5, 0.5, f"no variant '{variant}' in this config", transform=ax.transAxes, ha="center")
            continue
        beta = np.array([schedules.beta(cfg.variants[variant].beta, e, epochs) for e in range(epochs)])
        marker = "o" if epochs <= 12 else None
        ax.plot(x, beta[:, 0], color="tab:red", lw=1.8, marker=marker, ms=3.5, label=r"$\beta_H$ (high frequency)")
        ax.plot(x, beta[:, 1], color="tab:blue", lw=1.8, ls="--", marker=marker, ms=3.5,
                label=r"$\beta_L$ (low frequency)")
        ax.set_title(f"{title}: {variant.upper()} variant")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, epochs + 0.5)
        ax.set_ylim(-0.04, 1.04)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="center right")
    axes[0].set_ylabel(r"weight $\beta$")
    fig.suptitle(r"Figure 7: $\beta_H$ and $\beta_L$ per epoch")
    notes.add(f"From the config's schedules over train.epochs = {epochs}: t = epoch / {epochs} (epochs counted "
              "from 1), β constant within an epoch and applied to the high and low-frequency feature maps.")
    return notes_below(fig, notes, tight=True)


# --------------------------------------------------------------------------------------------------
# rendering


BUILDERS = {2: figure2, 3: figure3, 4: figure4, 5: figure5, 6: figure6, 7: figure7, 8: figure8}


def output_paths(cfg: Config) -> list[Path]:
    """figures/<config>/figN.{format} for N in `cfg.figure_numbers()`: what `render` writes (and the
    workflow declares)."""
    return [cfg.figures_dir / f"fig{n}.{fmt}" for n in cfg.figure_numbers() for fmt in cfg.figures.formats]


def render(cfg: Config, allow_partial: bool = False, config_args: str = "", log=print) -> list[Path]:
    """Every figure in every format into figures/<config>/; returns the files written."""
    runs = collect(cfg)
    require_finished(runs, allow_partial, config_args)
    written = []
    for n in cfg.figure_numbers():
        written += save_all(BUILDERS[n](cfg, runs), [cfg.figures_dir / f"fig{n}.{fmt}" for fmt in cfg.figures.formats])
    log(f"wrote {len(written)} files to {cfg.figures_dir}")
    return written
