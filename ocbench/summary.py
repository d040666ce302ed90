"""The stability summary: per run the numbers the paper argues with, per GAN the variants against the baseline.

results/<config>/summary.csv        one row per configured run (missing runs too, with empty numbers)
results/<config>/summary_gans.csv   per GAN and variant: means over seeds, differences to the baseline
results/<config>/summary.md         both tables, headed by which Inception weights made the FIDs

"fid_std_last10" is the sample standard deviation of FID over the last `analysis.std_window` epochs
(10 by default; the column keeps its name). "Largest rise" is the biggest increase of FID from one
epoch to the next (0 when FID never rose): the sudden collapses that the paper says octave
convolutions remove. A diverged run is summarised over
the epochs it finished; its final FID is the last finite one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ocbench.aggregate import (Runs, collect, label, per_run, provenance_line, require_finished,
                               smoke_paragraph, weights_header)
from ocbench.config import Config
from ocbench.formats import atomic_write


def per_gan(table: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per GAN and variant, and each variant minus its GAN's baseline (negative: better)."""
    measures = ["best_fid", "final_fid", "fid_std_last10", "largest_rise", "best_kid", "final_kid"]
    done = table[table.status.isin(("ok", "diverged"))]
    grouped = done.groupby(["gan", "variant"], sort=False)
    means = grouped[measures].mean()
    means["seeds"] = grouped.size()
    means["diverged"] = grouped["status"].apply(lambda s: int((s == "diverged").sum()))
    means = means.reset_index()
    for m in (m for m in measures if m != "fid_std_last10"):  # a spread has no baseline difference
        base = means[means.variant == "baseline"].set_index("gan")[m]
        means[f"{m}_vs_baseline"] = means[m] - means.gan.map(base)
    means.insert(0, "label", [label(g, v) for g, v in zip(means.gan, means.variant)])
    return means


def markdown(cfg: Config, runs: Runs, table: pd.DataFrame, gans: pd.DataFrame) -> str:
    def md(df: pd.DataFrame) -> str:
        # plain pipe tables, without the optional `tabulate` dependency of DataFrame.to_markdown
        shown = df.copy()
        for col in shown.columns:
            if shown[col].dtype.kind == "f":
                digits = ".4g" if "kid" in col else ".2f"  # KIDs are ~1e-3 .. 1e-1
                shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:{digits}}")
        shown = shown.astype(object).where(shown.notna(), "")
        head = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
        return head + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.itertuples(index=False))

    unfinished = runs.describe_unfinished()
    parts = [
        f"# Stability summary: {cfg.name}", "",
        *smoke_paragraph(cfg, runs.metrics),
        weights_header(runs), "",
        f"{len(runs.runs)} configured runs, {cfg.train.epochs} epochs each"
        + (f"; not finished: {', '.join(unfinished)}." if unfinished else "; all finished."), "",
        "## Per run", "",
        f"best_fid at best_epoch; final_fid at the last epoch with a finite FID; fid_std_last10 over the "
        f"last {cfg.analysis.std_window} such epochs (or all, if fewer); largest_rise: the biggest increase of FID from "
        "one epoch to the next (0: never rose), at largest_rise_epoch. best_kid and final_kid: the same for "
        "KID (unbiased by the sample count; empty for runs written before KID was computed).", "",
        provenance_line(runs), "",
        md(table.drop(columns=["gan", "variant"])), "",
        "## Variants against the baseline", "",
        "Means over the finished seeds; *_vs_baseline = variant − baseline of the same GAN "
        "(negative: lower FID, smaller jumps).", "",
        md(gans), "",
    ]
    return "\n".join(parts)


def write(cfg: Config, allow_partial: bool = False, config_args: str = "") -> list[Path]:
    runs = collect(cfg)
    require_finished(runs, allow_partial, config_args)
    table = per_run(runs, cfg.analysis.std_window)
    gans = per_gan(table)
    out = cfg.results_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.csv", out / "summary_gans.csv", out / "summary.md"]
    atomic_write(paths[0], table.to_csv(index=False))
    atomic_write(paths[1], gans.to_csv(index=False))
    atomic_write(paths[2], markdown(cfg, runs, table, gans))
    return paths
