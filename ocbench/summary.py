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

import numpy as np
import pandas as pd

from ocbench.aggregate import Runs, collect, label, provenance_line, require_finished, smoke_paragraph, weights_header
from ocbench.config import Config
from ocbench.formats import atomic_write

RUN_COLUMNS = [
    "run", "label", "gan", "variant", "seed", "alpha", "status", "epochs_done",
    "best_fid", "best_epoch", "final_fid", "final_epoch", "fid_std_last10", "largest_rise",
    "largest_rise_epoch", "final_precision", "final_recall", "best_kid", "final_kid",
]


def run_stats(rows: pd.DataFrame, std_window: int) -> dict:
    """The stability numbers of one run from its per-epoch rows (epochs with a finite FID only);
    `std_window`: the last epochs fid_std_last10 is taken over (analysis.std_window)."""
    ok = rows[np.isfinite(rows["fid"].astype(float))].sort_values("epoch")
    if ok.empty:
        return {}
    fid, epochs = ok["fid"].astype(float).to_numpy(), ok["epoch"].astype(int).to_numpy()
    best = int(np.argmin(fid))
    out = {
        "best_fid": fid[best], "best_epoch": epochs[best],
        "final_fid": fid[-1], "final_epoch": epochs[-1],
        # ddof=1: the sample standard deviation; a single epoch has none
        "fid_std_last10": float(np.std(fid[-std_window:], ddof=1)) if len(fid) > 1 else np.nan,
        "final_precision": float(ok["precision"].iloc[-1]), "final_recall": float(ok["recall"].iloc[-1]),
        "largest_rise": np.nan, "largest_rise_epoch": np.nan,
        **kid_stats(ok),
    }
    if len(fid) > 1:
        rises = np.diff(fid)
        i = int(np.argmax(rises))
        # the epoch at which FID had risen; a run whose FID only fell has a largest rise of 0
        out["largest_rise"], out["largest_rise_epoch"] = (rises[i], epochs[i + 1]) if rises[i] > 0 else (0.0, np.nan)
    return out


def kid_stats(rows: pd.DataFrame) -> dict:
    """Best and final KID, as for FID, over the epochs with a finite KID (none in a metrics.csv written
    before KID was computed)."""
    kid = rows["kid"].astype(float).to_numpy()
    kid = kid[np.isfinite(kid)]
    return {"best_kid": kid.min(), "final_kid": kid[-1]} if len(kid) else {}


def per_run(runs: Runs, std_window: int) -> pd.DataFrame:
    """One row per configured run: its status and stability numbers (`run_stats`)."""
    lines = []
    for r in runs.runs.itertuples():
        rows = runs.metrics[runs.metrics.run == r.run]
        lines.append({"run": r.run, "label": r.label, "gan": r.gan, "variant": r.variant, "seed": r.seed,
                      "alpha": r.alpha, "status": r.run_status, "epochs_done": r.epochs_done,
                      **run_stats(rows, std_window)})
    table = pd.DataFrame(lines).reindex(columns=RUN_COLUMNS)
    for col in ("best_epoch", "final_epoch", "largest_rise_epoch"):
        table[col] = table[col].astype("Int64")
    return table


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
