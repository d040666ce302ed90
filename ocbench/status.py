"""`ocbench status`: where every run of a config stands, from the files runs write, while they run.

It reads, per run: state/<run>/checkpoint.json (the newest checkpoint's position, written beside
it), runs/<run>/metrics.csv and run.json, and whether a trainer holds state/<run>/train.lock now (a
shared flock tried and dropped at once). It loads no checkpoint and no network, so it costs
milliseconds per run and works on a login node while SLURM jobs train. Below the table, the
Snakemake lock of the working directory: a live Snakemake of the workflow, or a stale lock, and
what the next `snakemake` will do (ocbench/workflow_lock.py).

States: not started, training (a trainer holds the run's lock), finished, diverged (run.json), and
failed: started, not finished, and no trainer alive (killed, crashed, or stopped by an error in its
log); rerunning the workflow resumes it from its last checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import time
from pathlib import Path

from ocbench.config import REPO_ROOT, WORKFLOW_DIR, Config, load
from ocbench.errors import OcbenchError
from ocbench.formats import CHECKPOINT, LOCK, POSITION
from ocbench.lock import current_holder
from ocbench.workflow_lock import live_instances, stale_snakemake_locks, why_lock_stays

COLUMNS = ("run", "state", "epoch", "iteration", "fid", "best fid", "img/s", "left", "trainer")


def read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes}m" if minutes else f"{seconds:.0f}s"


def run_status(cfg: Config, run_id: str) -> dict:
    """One run's row: the COLUMNS as text, plus `state`."""
    state_dir, run_dir = cfg.results_dir / "state" / run_id, cfg.run_dir(run_id)
    rows = read_rows(run_dir / "metrics.csv")
    try:
        where = json.loads((state_dir / POSITION).read_text())
    except (OSError, ValueError):
        where = None
    try:
        finished = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        finished = None
    trainer = current_holder(state_dir / LOCK)
    epochs = cfg.train.epochs

    if finished is not None:
        state = "finished" if finished.get("status") == "ok" else finished.get("status", "failed")
    elif trainer is not None:
        state = "training"
    elif where is not None or rows or (state_dir / CHECKPOINT).exists():
        state = "failed"
    else:
        state = "not started"

    fids = [number(r.get("fid")) for r in rows]
    finite = [(f, i) for i, f in enumerate(fids) if math.isfinite(f)]
    best = min(finite) if finite else None
    speed = number(rows[-1]["images_per_s"]) if rows else math.nan
    out = {"run": run_id, "state": state, "epoch": "-", "iteration": "-",
           "fid": f"{fids[-1]:.2f}" if fids and math.isfinite(fids[-1]) else "-",
           "best fid": f"{best[0]:.2f} (e{best[1] + 1})" if best else "-",
           "img/s": f"{speed:.0f}" if math.isfinite(speed) else "-", "left": "-",
           "trainer": f"PID {trainer}" if trainer is not None else "-"}
    if finished is not None:
        out.update(epoch=f"{finished.get('epochs_done', len(rows))}/{epochs}", iteration=str(finished.get("iterations", "-")))
        return out
    if where is None:
        if rows:
            out["epoch"] = f"{len(rows)}/{epochs}"
        return out

    # where the newest checkpoint stands, and the time left at the rate measured so far
    done = where["epoch"] + where["batch"] / where["n_batches"]  # epochs done, fractional
    out["epoch"] = f"{where['epoch'] + 1}/{epochs}" + (f" ({where['batch']}/{where['n_batches']})" if where["batch"] else "")
    out["iteration"] = str(where["iterations"])
    train_s = [number(r["epoch_seconds"]) for r in rows]
    eval_s = [number(r["eval_seconds"]) for r in rows]
    if rows:
        per_epoch_train, per_epoch_eval = sum(train_s) / len(train_s), sum(eval_s) / len(eval_s)
    elif where["batch"]:
        per_epoch_train, per_epoch_eval = where["elapsed"] * where["n_batches"] / where["batch"], 0.0
        out["img/s"] = f"{where['batch'] * where['batch_size'] / max(where['elapsed'], 1e-9):.0f}"
    else:
        per_epoch_train = per_epoch_eval = math.nan
    left = (epochs - done) * per_epoch_train + (epochs - where["epoch"]) * per_epoch_eval
    if state == "training":
        left -= time.time() - where["time"]  # trained since that checkpoint
    out["left"] = duration(max(left, 0.0)) + ("" if rows else "+eval")
    return out


def workflow_line(workdir: Path = Path(".")) -> str:
    """What the next `snakemake` in `workdir` will do about the directory's lock."""
    live = live_instances(workdir)
    if live:
        names = ", ".join(f"PID {pid}" for pid, _ in live)
        return (f"snakemake: running here ({names}); a second run of the workflow here refuses until it "
                f"ends (a dry run works)")
    if stale_snakemake_locks(workdir):
        why = why_lock_stays(workdir)
        if why:
            return f"snakemake: a stale lock (.snakemake/locks) left by a killed snakemake, which stays: {why}"
        return ("snakemake: a stale lock (.snakemake/locks) left by a killed snakemake; no snakemake of the "
                "workflow nor any of its jobs is alive, so the next `snakemake` here removes it and resumes the "
                "unfinished runs")
    return "snakemake: not running here, no lock"


def state_counts(rows: list[dict]) -> str:
    """'3 finished, 12 not started'."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def table(cfg: Config, workdir: Path = Path(".")) -> str:
    """The status table of every run of `cfg`, and the Snakemake line."""
    rows = [run_status(cfg, run_id) for run_id in cfg.run_ids()]
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(r[c].ljust(w) for c, w in zip(COLUMNS, widths)).rstrip() for r in rows]
    lines.append(f"{cfg.name}: {state_counts(rows)}")
    lines.append(workflow_line(workdir))
    return "\n".join(lines)


def results_folders(root: Path) -> list[Path]:
    """The folders under `root` (paths.results) that hold some config's results: the merged config
    the workflow wrote, or run and state folders that `ocbench train` wrote."""
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    return [p for p in folders if any((p / name).exists() for name in ("config.yaml", "runs", "state"))]


def folder_line(folder: Path) -> str:
    """One results folder in a line: its runs' states, and the --config that shows their table."""
    merged = folder / "config.yaml"  # the merged config every job of the workflow read
    if merged.is_file():
        show = f"ocbench status --config {shlex.quote(str(merged))}"
        try:
            cfg = load([merged])
        except OcbenchError as err:
            return f"  {folder.name}: its {merged} does not load ({err})"
        if cfg.results_dir.resolve() != folder.resolve():  # another working directory's, or moved since
            return (f"  {folder.name}: its config.yaml reads {cfg.results_dir} from the working directory it was "
                    f"written in; there: {show}")
        return f"  {folder.name}: {state_counts([run_status(cfg, r) for r in cfg.run_ids()])}  ({show})"
    preset = WORKFLOW_DIR / "config" / f"{folder.name}.yaml"
    how = (f"ocbench status --config {shlex.quote(str(preset.relative_to(REPO_ROOT)))}" if preset.is_file()
           else "ocbench status --config <the YAML it was made with>")
    runs = len([p for p in (folder / "runs").glob("*") if p.is_dir()])
    return f"  {folder.name}: {runs} run folder(s), no merged config.yaml  ({how})"


def overview(cfg: Config, workdir: Path = Path("."), others: bool = False) -> str:
    """`ocbench status`: the table of `cfg`. With `others` (no --config given, so `cfg` is the
    default, paper.yaml), also every other config's results found under paths.results, a line each
    with the --config that shows its table; and where `cfg` has no results yet but others do, only
    those lines (its table of runs not started would hide them)."""
    if not others:
        return table(cfg, workdir)
    found = [f for f in results_folders(Path(cfg.paths.results)) if f.resolve() != cfg.results_dir.resolve()]
    if not found:
        return table(cfg, workdir)
    lines = [folder_line(f) for f in found]
    if cfg.results_dir.exists():
        return table(cfg, workdir) + f"\nOther results in {cfg.paths.results}/ (without --config, status shows " \
            f"config {cfg.name}):\n" + "\n".join(lines)
    return (f"No results of config {cfg.name} (the default without --config) in {cfg.paths.results}/; found:\n"
            + "\n".join(lines) + "\n" + workflow_line(workdir))
