"""What every figure shares: matplotlib set up for files, the notes printed under a figure (what a
reader of it must know: figures travel without their captions), and saving it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from ocbench.formats import atomic_write  # noqa: E402

PNG_DPI = 200
WARN = "#b00000"

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8, "figure.titlesize": 11})


class Notes:
    """Lines printed under a figure; `warn` lines (non-official weights) in red."""

    def __init__(self):
        self.lines: list[tuple[str, bool]] = []

    def add(self, text: str, warn: bool = False) -> None:
        if text and (text, warn) not in self.lines:
            self.lines.append((text, warn))

    def first(self, text: str | None) -> None:
        """`text` before every other note, in red: what makes the whole figure uninformative (the
        smoke label, `aggregate.smoke_settings`)."""
        if text:
            self.lines.insert(0, (text, True))

    def wrapped(self, width_in: float) -> list[tuple[str, bool]]:
        chars = max(40, int(width_in * 15))  # ~15 characters per inch at 7.5 pt
        return [(w, warn) for text, warn in self.lines for w in textwrap.wrap(text, chars)]

    def height(self, width_in: float) -> float:
        """Inches the notes take at the bottom of a figure `width_in` wide."""
        n = len(self.wrapped(width_in))
        return 0.15 + 0.14 * n if n else 0.05

    def draw(self, fig) -> None:
        width, height = fig.get_size_inches()
        y = 0.06
        for text, warn in reversed(self.wrapped(width)):
            fig.text(0.01, y / height, text, fontsize=7.5, va="bottom", ha="left",
                     color=WARN if warn else "0.15", fontweight="bold" if warn else "normal")
            y += 0.14


def weights_notes(notes: Notes, rows: pd.DataFrame) -> None:
    """The visible warning for FIDs that no published number can be compared with."""
    unofficial = rows.loc[~rows.weights_official.astype(bool), "weights_sha256"].dropna().unique()
    for sha in unofficial:
        notes.add(f"FID from non-official Inception weights (sha256 {str(sha)[:12]}…): "
                  "not comparable to published numbers", warn=True)


def notes_below(fig, notes: Notes, tight: bool):
    """Notes under the figure; `tight` lays out subplot grids in the space left above them."""
    width, height = fig.get_size_inches()
    reserve = notes.height(width)
    if tight:
        fig.set_size_inches(width, height + reserve)
        fig.tight_layout(rect=(0, reserve / (height + reserve), 1, 1))
    notes.draw(fig)
    return fig


def save_all(fig, paths: list[Path]) -> list[Path]:
    """`fig` in each of `paths` (their folders made), then closed, however the saving ends."""
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            save(fig, path)
    finally:
        plt.close(fig)
    return paths


def save(fig, path: Path) -> None:
    """`fig` as `path`'s format, the same bytes for the same figure: a PDF without its creation date."""
    # Vector formats embed each sample image at its own resolution (sharp at any zoom); raster formats
    # resample it to the output resolution with antialiasing.
    fmt = path.suffix.lstrip(".").lower()
    vector = fmt in ("pdf", "svg", "eps")
    for image in fig.findobj(AxesImage):
        image.set_interpolation("none" if vector else "antialiased")
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    atomic_write(path, lambda f: fig.savefig(f, dpi=PNG_DPI, format=fmt, metadata=metadata))
