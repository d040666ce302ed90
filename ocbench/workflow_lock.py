"""Resuming the workflow after a crash with the same command: the Snakemake processes of this
workflow that are alive in a working directory, proven by the kernel, their jobs, and the stale
Snakemake lock.

Snakemake locks its working directory with files (.snakemake/locks/) that a killed Snakemake leaves
behind; the next `snakemake` then refuses ("the remaining lock was likely caused by a kill signal or
a power loss ... --unlock"). So every Snakemake that parses the Snakefile in its own process (not a
job process on a compute node) registers here first: .snakemake/ocbench/instances/<pid>.lock, an
flock it holds until it ends, however it ends (the kernel drops it at SIGKILL and power loss, as for
train.lock), naming its host and whether it runs its jobs locally. It also marks its environment
(MARK), which every job process it starts inherits, whatever the job runs. Snakemake checks its lock
files only after it has parsed the Snakefile (Workflow.execute -> persistence.lock()), so at parse
time the lock files are removed only when all of these hold (`why_lock_stays` says which does not):

- this Snakemake will run jobs here (not a dry run) on this machine (not a cluster executor);
- no other registered Snakemake of the workflow is alive here (else its PID and command are named,
  and Snakemake's own lock refuses a second run; `-n` still works);
- the working directory's filesystem makes flock coherent across hosts (not NFS mounted with local
  locks, Lustre with localflock, BeeGFS), so that a Snakemake alive on another host shows as alive;
- every dead Snakemake registered here ran its jobs locally, on this host: a SLURM job outlives the
  Snakemake that submitted it, and a local job on another host cannot be seen from here;
- no job process of a dead Snakemake is alive: a `kill -9` of Snakemake alone (the OOM killer, a
  closed terminal with nohup) leaves its local jobs running, and a second copy of a running job
  must not start.

Killing the whole process group (Ctrl-C, a closed terminal, a power loss) leaves no job alive: the
same command resumes. Otherwise the lock stays, and the line printed says why and what to do.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import socket
import sys
from pathlib import Path

from ocbench.lock import current_holder, recorded_holder

INSTANCES = Path(".snakemake") / "ocbench" / "instances"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
MARK = "OCBENCH_SNAKEMAKE_WORKDIR"  # in the environment of a registered Snakemake and of its jobs
_registered: dict[str, int] = {}  # our own instance file -> its descriptor (one per process)


def register(workdir: Path = Path("."), local: bool = True, dry_run: bool = False) -> None:
    """This process, as a live Snakemake of the workflow in `workdir` (running its jobs locally, on a
    cluster, or none: a dry run), until it ends; its jobs carry MARK. An end by exit removes its file:
    only killed ones leave theirs. Parsing the Snakefile again in the same process registers it once."""
    folder = workdir / INSTANCES
    path = folder / f"{os.getpid()}.lock"
    if str(path.resolve()) in _registered:
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MARK] = str(workdir.resolve())
    # Locked under a temporary name, then renamed: whoever sees <pid>.lock sees it held.
    tmp = folder / f"{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    command = " ".join(sys.argv).replace("\n", " ")
    mode = "dry-run" if dry_run else "local" if local else "cluster"
    os.write(fd, f"{os.getpid()}\n{command}\n{socket.gethostname()}\n{mode}\n".encode())
    os.replace(tmp, path)
    _registered[str(path.resolve())] = fd
    atexit.register(path.unlink, missing_ok=True)


def _instances(workdir: Path):
    """(path, alive, [pid, command, host, mode]) of every other registered process in `workdir`
    (host and mode are "" in files written before they were recorded)."""
    folder = workdir / INSTANCES
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        if str(path.resolve()) in _registered:
            continue
        held = current_holder(path)  # the holder's record, or None when nobody holds it
        alive = held is not None
        fields = (held if alive else recorded_holder(path)).split("\n")
        yield path, alive, [*fields, "", "", "", ""][:4]


def live_instances(workdir: Path = Path("."), forget_dead: bool = False) -> list[tuple[str, str]]:
    """(PID, command line) of every other registered process still alive in `workdir`. With
    `forget_dead`, the files of dead ones are removed."""
    live = []
    for path, alive, (pid, command, _, _) in _instances(workdir):
        if alive:
            live.append((pid, command.strip()))
        elif forget_dead:
            path.unlink(missing_ok=True)
    return live


def stale_snakemake_locks(workdir: Path = Path(".")) -> list[Path]:
    """Snakemake's lock files in `workdir` (stale when no registered process is alive)."""
    folder = workdir / SNAKEMAKE_LOCKS
    return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def incoherent_flock(workdir: Path, mounts: str | None = None) -> str | None:
    """Why flock in `workdir` is not seen across hosts (its filesystem and mount options, from
    /proc/self/mounts or the `mounts` text given), or None."""
    try:
        text = Path("/proc/self/mounts").read_text() if mounts is None else mounts
    except OSError:
        return None
    mounts = [line.split()[1:4] for line in text.splitlines()]
    where = str(workdir.resolve())
    best = max((m for m in mounts if len(m) == 3 and (where + "/").startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    if best is None:
        return None
    mountpoint, fstype, options = best[0], best[1], best[2].split(",")
    if fstype.startswith("nfs") and ({"local_lock=flock", "local_lock=all"} & set(options)):
        return f"{mountpoint} is {fstype} mounted with {next(o for o in options if o.startswith('local_lock'))}"
    if fstype == "lustre" and "flock" not in options:
        return f"{mountpoint} is Lustre mounted without the flock option (localflock, or none)"
    if "beegfs" in fstype:
        return f"{mountpoint} is BeeGFS, whose locks are local to each host by default"
    return None


def orphaned_jobs(workdir: Path) -> list[tuple[str, str]]:
    """(PID, command) of live processes other than this one that carry MARK for `workdir`: jobs of a
    Snakemake of the workflow (by the time this is asked, one that is dead). Reads /proc (this
    user's processes; root: everyone's)."""
    mark = f"{MARK}={workdir.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile, or another user's
            continue
        found.append((entry.name, command[:100]))
    return found


def why_lock_stays(workdir: Path = Path("."), dry_run: bool = False, local: bool = True) -> str | None:
    """Why the stale lock in `workdir` must stay (see the module's docstring), or None when it may go.
    Asked when no other registered Snakemake of the workflow is alive here."""
    if dry_run:
        return "a dry run removes nothing"
    if not local:
        return "this snakemake submits its jobs to a cluster, where jobs of a killed one may still run"
    shared = incoherent_flock(workdir)
    if shared:
        return (f"{shared}: a snakemake alive on another host cannot be seen from here; if none is, "
                "run `snakemake --unlock` once")
    for _, _, (pid, _, host, mode) in _instances(workdir):
        if mode == "dry-run":  # ran no job
            continue
        if mode == "cluster":
            return (f"the killed snakemake (PID {pid}) submitted its jobs to a cluster, where they may still run; "
                    "when none does (squeue), run `snakemake --unlock` once")
        if host and host != socket.gethostname():
            return (f"the killed snakemake (PID {pid}) ran on {host}, where its jobs may still run; when none "
                    "does, run `snakemake --unlock` once")
    jobs = orphaned_jobs(workdir)
    if jobs:
        names = "; ".join(f"PID {pid} ({command})" for pid, command in jobs[:3])
        return (f"{len(jobs)} job process(es) of a killed snakemake still run: {names}; wait for them to end "
                f"or stop them (kill {jobs[0][0]}), then rerun this command")
    return None


def executor_and_dry_run() -> tuple[str | None, bool]:
    """The executor (local, slurm, ...; profiles applied) and whether it is a dry run, of the Snakemake
    CLI now parsing the Snakefile: Snakemake tells the workflow neither before it has parsed it, so they
    are read from the CLI's parsed arguments up the stack (snakemake.cli.args_to_api). (None, True)
    when Snakemake runs through its API (nothing is removed then)."""
    frame = sys._getframe()
    while frame is not None and not (frame.f_code.co_name == "args_to_api" and "args" in frame.f_locals):
        frame = frame.f_back
    if frame is None:
        return None, True
    args = frame.f_locals["args"]
    return getattr(args, "executor", None), bool(getattr(args, "dryrun", True))


def claim_for_snakemake() -> str | None:
    """`claim` in the working directory of the Snakemake CLI parsing the Snakefile (the Snakefile's
    one call)."""
    executor, dry_run = executor_and_dry_run()
    return claim(Path("."), dry_run=dry_run, local=executor in ("local", "touch"))


def claim(workdir: Path = Path("."), dry_run: bool = False, local: bool = True) -> str | None:
    """Register, then remove the stale Snakemake lock unless something says it must stay (`why_lock_stays`).
    Returns a line for the user, or None when there is nothing to say."""
    register(workdir, local, dry_run)
    others = live_instances(workdir)
    if others:
        names = "; ".join(f"PID {pid} ({command})" for pid, command in others)
        return (f"ocbench: another snakemake of this workflow is running in {workdir.resolve()}: {names}. "
                f"Its lock stays: a second run here refuses (a dry run works); wait for it to end, or "
                f"stop it (kill {others[0][0]}), then rerun this command. Do not --unlock while it runs.")
    stale = stale_snakemake_locks(workdir)
    if not stale:
        live_instances(workdir, forget_dead=True)
        return None
    why = why_lock_stays(workdir, dry_run, local)
    if why is not None:
        if dry_run:
            return None  # a dry run ignores the lock; the next run decides
        return (f"ocbench: the lock a killed snakemake left in {workdir.resolve() / SNAKEMAKE_LOCKS} stays: "
                f"{why}. Snakemake refuses to run while it is there.")
    for path in stale:
        path.unlink(missing_ok=True)
    live_instances(workdir, forget_dead=True)  # their evidence is used: the lock is gone
    return (f"ocbench: removed the lock a killed snakemake left in {workdir.resolve() / SNAKEMAKE_LOCKS} "
            f"(no snakemake of this workflow and none of its jobs is alive here); incomplete jobs resume")
