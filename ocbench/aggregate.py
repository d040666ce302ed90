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

# The columns after `status` came later: a metrics.csv written before them still aggregates and plots.
ADDED_COLUMNS = METRIC_COLUMNS[METRIC_COLUMNS.index("status") + 1 :]
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
    if "frechet" not in df.columns:  # written before metrics.frechet existed: pytorch-fid's scipy sqrtm
        df["frechet"] = "scipy"
    for column in ADDED_COLUMNS:  # written before KID and the provenance columns existed
        if column not in df.columns:
            df[column] = np.nan
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise OcbenchError(f"{path} lacks the columns {', '.join(missing)}; it was not written by `ocbench train`")
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
