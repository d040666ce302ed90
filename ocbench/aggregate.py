"""Collect every run's per-epoch metrics into one long table, and say which runs are not there yet.

`ocbench aggregate` writes results/<config>/metrics.csv: one row per run and epoch, the train module's
METRIC_COLUMNS with the run's identity (run, gan, variant, seed, alpha, label) and its status
prepended. Figures and the summary call `collect` in memory, so they always see the runs as they
are on disk now.

A run's status comes from its own metrics.csv, the file training appends to after every epoch:
ok (every configured epoch is there), diverged (the last row says so), incomplete (training has
not reached the last epoch: still running, or interrupted) or missing (no rows at all). A run trained
with other settings than the config's (its run.json, or while it trains its checkpoint.json, records
its protocol) is refused, not mixed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ocbench.config import Config, protocol_changes, protocol_fingerprint, run_protocol, set_options
from ocbench.errors import OcbenchError
from ocbench.formats import METRIC_COLUMNS, POSITION, atomic_write

ID_COLUMNS = ["run", "gan", "variant", "seed", "alpha", "label", "run_status"]
FINISHED = ("ok", "diverged")


def label(gan: str, variant: str) -> str:
    """The paper's names: DCGAN for the baseline, DCGAN_OCT, DCGAN_LOW, ... for the variants."""
    return gan.upper() if variant == "baseline" else f"{gan.upper()}_{variant.upper()}"


@dataclass
class Runs:
    """Every configured run's rows (`metrics`) and one line per run (`runs`) with its status."""

    metrics: pd.DataFrame  # long format, ID_COLUMNS + METRIC_COLUMNS
    runs: pd.DataFrame  # run, gan, variant, seed, alpha, label, run_status, epochs_done, diverged_epoch

    def unfinished(self) -> pd.DataFrame:
        return self.runs[~self.runs.run_status.isin(FINISHED)]

    def describe_unfinished(self) -> list[str]:
        """'lsgan_oct_s1 (missing)', 'wgan_low_s0 (incomplete: 2 of 3 epochs)', ..."""
        out = []
        for r in self.unfinished().itertuples():
            if r.run_status == "missing":
                out.append(f"{r.run} (missing)")
            else:
                out.append(f"{r.run} (incomplete: {r.epochs_done} of {r.epochs} epochs)")
        return out


def as_bool(series: pd.Series) -> pd.Series:
    """weights_official is written by csv as True/False; tolerate 1/0 and strings after a round trip."""
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))


def read_run(path: Path) -> pd.DataFrame:
    """One run's metrics.csv in the train module's format (empty frame when absent or header only)."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    df = pd.read_csv(path, dtype={"weights_sha256": str, "frechet": str, "status": str,
                                  "reference_split": str, "eval_precision": str})
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise OcbenchError(f"{path} lacks the columns {', '.join(missing)}: this version of `ocbench train` did not "
                           "write it; retrain the run, or read it with the ocbench that wrote it")
    df["weights_official"] = as_bool(df["weights_official"])
    return df[METRIC_COLUMNS]


def run_status(rows: pd.DataFrame, epochs: int) -> str:
    if rows.empty:
        return "missing"
    if rows["status"].iloc[-1] == "diverged":
        return "diverged"
    return "ok" if int(rows["epoch"].max()) >= epochs else "incomplete"


def recorded_protocol(cfg: Config, run: str) -> tuple[Path, dict] | None:
    """(file, contents) of what records the protocol a run was trained with: its run.json once it
    finished, its checkpoint.json while it trains; None when neither does."""
    for path in (cfg.run_dir(run) / "run.json", cfg.results_dir / "state" / run / POSITION):
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):  # absent, or being replaced: the next one, or nothing to check
            continue
        if isinstance(recorded, dict) and "fingerprint" in recorded:
            return path, recorded
    return None


def check_protocol(cfg: Config, run: str) -> None:
    """A run whose recorded protocol is not this config's is refused in one line naming the run and
    the settings that differ, and the two ways on."""
    found = recorded_protocol(cfg, run)
    if found is None or found[1]["fingerprint"] == protocol_fingerprint(cfg, run):
        return
    path, recorded = found
    current = run_protocol(cfg, run)
    theirs = recorded.get("protocol")
    use = f"its settings (`{set_options(theirs, current)}`)" if theirs else "the ocbench and config that made it"
    raise OcbenchError(
        f"{run} was trained with other settings than this config's ({path}): {protocol_changes(theirs, current)}; "
        f"to use it, run with {use}; to retrain it with this config's, run `snakemake`, which reruns every run "
        "whose settings changed")


def collect(cfg: Config) -> Runs:
    """Read every run of `cfg.run_ids()`; runs not on disk are listed as missing, not skipped, and a
    run of other settings is refused (`check_protocol`)."""
    frames, lines = [], []
    for run in cfg.run_ids():
        check_protocol(cfg, run)
        gan, variant, seed = cfg.parse_run(run)
        rows = read_run(cfg.run_dir(run) / "metrics.csv")
        status = run_status(rows, cfg.train.epochs)
        ident = {"run": run, "gan": gan, "variant": variant, "seed": seed,
                 "alpha": cfg.variants[variant].alpha, "label": label(gan, variant), "run_status": status}
        lines.append({**ident, "epochs_done": len(rows), "epochs": cfg.train.epochs,
                      "diverged_epoch": int(rows["epoch"].iloc[-1]) if status == "diverged" else None})
        if not rows.empty:
            frames.append(rows.assign(**ident)[ID_COLUMNS + METRIC_COLUMNS])
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ID_COLUMNS + METRIC_COLUMNS)
    table = pd.DataFrame(lines)
    table["diverged_epoch"] = table["diverged_epoch"].astype("Int64")  # integers, with NA for the others
    return Runs(metrics=metrics, runs=table)


# --------------------------------------------------------------------------------------------------
# each run's stability numbers: what the summary and the claims argue with


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


# --------------------------------------------------------------------------------------------------
# what the runs' numbers were computed with: every output that reports them says it


def weights_header(runs: Runs) -> str:
    """Which Inception weights made the FIDs, and whether they compare with published numbers."""
    m = runs.metrics
    if m.empty:
        return "No run has finished an epoch yet: no FIDs."
    lines = []
    for sha, official in m[["weights_sha256", "weights_official"]].drop_duplicates().itertuples(index=False):
        if official:
            lines.append(f"FIDs from the official pytorch-fid Inception weights (sha256 {str(sha)[:16]}…): "
                         "comparable to published numbers.")
        else:
            lines.append(f"FIDs from non-official Inception weights (sha256 {str(sha)[:16]}…): "
                         "not comparable to published numbers.")
    return "\n".join(lines)


PAPER_SAMPLES, PAPER_DIMS = 10000, 2048  # the paper's FID: 10,000 generated images, Inception pool3 features


def smoke_settings(cfg: Config, metrics: pd.DataFrame) -> str | None:
    """One paragraph saying that the numbers come from smoke-test settings, and what makes them say
    nothing about the paper; None for a config that measures. Read from facts of the config, not its
    name: synthetic data (data.synthetic) and placeholder Inception weights (metrics.placeholder_weights,
    unless every row recorded the official ones), then its sample counts, and a recall that is 0 in
    every scored epoch (the runs' rows). Every output of such a config carries it: summary.md,
    claims.md, the figures."""
    d, m = cfg.data, cfg.metrics
    official = as_bool(metrics["weights_official"]) if "weights_official" in metrics else pd.Series(dtype=bool)
    placeholder = m.placeholder_weights and not (len(official) and official.all())
    if d.synthetic is None and not placeholder:
        return None
    what = []
    if d.synthetic is not None:
        what.append(f"synthetic data ({d.synthetic['n']} drawn faces, data.synthetic), not CelebA")
    if placeholder:
        what.append("placeholder Inception (seeded random weights, metrics.placeholder_weights), so FID, KID, "
                    "precision and recall compare random features")
    if m.fid_samples < PAPER_SAMPLES or m.dims < PAPER_DIMS:
        what.append(f"{m.fid_samples} generated samples an epoch on {m.dims}-d features (the paper: "
                    f"{PAPER_SAMPLES:,} on {PAPER_DIMS}-d)")
    text = ("Smoke-test settings, not a measurement of the paper: " + "; ".join(what) + ". These runs show "
            "that the pipeline works; they neither support nor contradict the paper's claims.")
    recall = metrics["recall"].astype(float) if "recall" in metrics else pd.Series(dtype=float)
    recall = recall[np.isfinite(recall)]
    if len(recall) and (recall == 0).all():
        text += (f" Recall is 0 in every scored epoch of every run: none of the {m.pr_real_samples} real images' "
                 f"features lies within the k = {m.pr_k} nearest-neighbour balls of the {m.fid_samples} generated "
                 "ones; at this size recall, and the recall drop of claim 3, say nothing about mode collapse.")
    return text


def smoke_paragraph(cfg: Config, metrics: pd.DataFrame) -> list[str]:
    """`smoke_settings` as the lines of a markdown paragraph, its first words in bold ([] if none)."""
    text = smoke_settings(cfg, metrics)
    if text is None:
        return []
    head, _, rest = text.partition(": ")
    return [f"**{head}:** {rest}", ""]


PROVENANCE = ["fid_samples", "reference_images", "reference_split", "weights_sha256", "frechet", "eval_precision"]


def provenance(metrics: pd.DataFrame) -> dict:
    """What the rows' numbers were computed under, one string per column: the value, or all the
    distinct values (space-separated) when the rows differ, or "" when they do not record it."""
    out = {}
    for col in PROVENANCE:
        values = metrics[col].dropna().astype(str)  # aggregate.read_run gives every column
        values = [v.removesuffix(".0") for v in dict.fromkeys(values) if v not in ("", "nan")]
        out[col] = " ".join(v[:16] if col == "weights_sha256" else v for v in values)
    return out


def provenance_line(runs: Runs) -> str:
    p = provenance(runs.metrics)
    if not any(p.values()):
        return "The runs' metrics do not record their sample counts (written before ocbench recorded them)."
    return (f"Every epoch scored {p['fid_samples'] or '?'} generated samples against a reference of "
            f"{p['reference_images'] or '?'} real images (split {p['reference_split'] or '?'}); Inception in "
            f"{p['eval_precision'] or '?'}, Fréchet distance by {p['frechet'] or '?'}. FIDs of other sample counts "
            "do not compare (FID's bias falls as 1/N); KIDs do.")


def require_finished(runs: Runs, allow_partial: bool, config_args: str = "") -> None:
    """Without --allow-partial every configured run must have finished; the error names the runs
    and the command that produces them (with the caller's `--config/--set` options), on one line."""
    if allow_partial or runs.unfinished().empty:
        return
    names = runs.describe_unfinished()
    first = runs.unfinished().run.iloc[0]
    raise OcbenchError(
        f"{len(names)} run(s) not finished: {', '.join(names)}; produce them with `snakemake` or "
        f"`{' '.join(['ocbench train', *config_args.split(), '--run', first])}` (one per run), "
        "or pass --allow-partial to use the runs that exist"
    )


def write(cfg: Config, allow_partial: bool = False, config_args: str = "") -> Path:
    """results/<config>/metrics.csv, every run's rows in long format; returns the path."""
    runs = collect(cfg)
    require_finished(runs, allow_partial, config_args)
    out = cfg.results_dir / "metrics.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, runs.metrics.to_csv(index=False))
