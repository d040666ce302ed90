"""Resuming the workflow after a crash with the same command: the Snakemake processes of this
workflow that are alive in a working directory, proven by the kernel, and the stale Snakemake lock.

Snakemake locks its working directory with files (.snakemake/locks/) that a killed Snakemake leaves
behind; the next `snakemake` then refuses ("the remaining lock was likely caused by a kill signal or
a power loss ... --unlock"). So every Snakemake that parses the Snakefile in its own process (not a
job process on a compute node) registers here first: .snakemake/ocbench/instances/<pid>.lock, an
flock it holds until it ends, however it ends (the kernel drops it at SIGKILL and power loss, as for
train.lock). Snakemake checks its lock files only after it has parsed the Snakefile
(Workflow.execute -> persistence.lock()), so at parse time:

- no other registered process is alive: Snakemake lock files present can only have been left by a
  dead Snakemake; they are removed, and the command resumes (the default profile reruns the
  incomplete jobs);
- another one is alive: nothing is removed, its PID and command are named, and Snakemake's own lock
  decides (a second run of the DAG refuses; `-n` still works).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from ocbench.lock import holder, probe

INSTANCES = Path(".snakemake") / "ocbench" / "instances"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
_registered: dict[str, int] = {}  # our own instance file -> its descriptor (one per process)


def register(workdir: Path = Path(".")) -> None:
    """This process, as a live Snakemake of the workflow in `workdir`, until it ends. Parsing the
    Snakefile again in the same process registers it once."""
    folder = workdir / INSTANCES
    path = folder / f"{os.getpid()}.lock"
    if str(path.resolve()) in _registered:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # Locked under a temporary name, then renamed: whoever sees <pid>.lock sees it held.
    tmp = folder / f"{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n{' '.join(sys.argv)}\n".encode())
    os.replace(tmp, path)
    _registered[str(path.resolve())] = fd


def live_instances(workdir: Path = Path("."), forget_dead: bool = False) -> list[tuple[str, str]]:
    """(PID, command line) of every other registered process still alive in `workdir`. With
    `forget_dead`, the files of dead ones are removed."""
    live = []
    folder = workdir / INSTANCES
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        if str(path.resolve()) in _registered:
            continue
        if probe(path) is None:
            if forget_dead:
                path.unlink(missing_ok=True)
            continue
        pid, _, command = holder(path).partition("\n")
        live.append((pid, command.strip()))
    return live


def stale_snakemake_locks(workdir: Path = Path(".")) -> list[Path]:
    """Snakemake's lock files in `workdir` (stale when no registered process is alive)."""
    folder = workdir / SNAKEMAKE_LOCKS
    return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def claim(workdir: Path = Path(".")) -> str | None:
    """Register, then remove the stale Snakemake lock when no other Snakemake of the workflow is
    alive here. Returns a line for the user, or None when there is nothing to say."""
    register(workdir)
    others = live_instances(workdir, forget_dead=True)
    if others:
        names = "; ".join(f"PID {pid} ({command})" for pid, command in others)
        return (f"ocbench: another snakemake of this workflow is running in {workdir.resolve()}: {names}. "
                f"Its lock stays: a second run here refuses (a dry run works); wait for it to end, or "
                f"stop it (kill {others[0][0]}), then rerun this command. Do not --unlock while it runs.")
    stale = stale_snakemake_locks(workdir)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        return (f"ocbench: removed the lock a killed snakemake left in {workdir.resolve() / SNAKEMAKE_LOCKS} "
                f"(no snakemake of this workflow is alive here); incomplete jobs resume")
    return None
