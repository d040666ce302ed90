"""One GPU per job on a multi-GPU machine: `ocbench with-gpu -- COMMAND ...`.

Snakemake counts a `gpu` resource but does not tell a job which GPU it got, so every concurrent
job would land on GPU 0. Each job instead claims a slot, a lock file per (GPU, k) for
k < runs_per_gpu, with an exclusive `flock`, sets CUDA_VISIBLE_DEVICES to that GPU and execs the
command, which inherits the locked descriptor. The kernel drops the lock when the process ends,
however it ends (SIGKILL included), so a killed job's slot frees itself. When every slot is taken
the job waits for one.

Which GPUs: gpus.devices (or --devices) when given, else CUDA_VISIBLE_DEVICES when set, else every
GPU `nvidia-smi -L` lists (a MIG-enabled GPU as its MIG devices). A GPU is named to CUDA as
nvidia-smi numbers it, so the command runs with CUDA_DEVICE_ORDER=PCI_BUS_ID (CUDA's own default
order, fastest first, can differ from nvidia-smi's), or by its `GPU-`/`MIG-` UUID. Its lock files
are named by the physical device, its UUID from nvidia-smi, so that jobs which name one GPU
differently (an index, a UUID, another CUDA_VISIBLE_DEVICES) still share its slots.

Inside a SLURM job, SLURM has chosen the job's GPUs and set CUDA_VISIBLE_DEVICES; with device
confinement (cgroups) the job sees them as 0, 1, ..., so these names mean other GPUs in another
job on the same node, and nvidia-smi there may or may not number the GPUs as CUDA does. So:
  - one visible GPU (an sbatch job with --gres=gpu:1, the SLURM profile's case): nothing to
    choose, no slot is claimed; a lock would be harmless only if its file named the physical GPU
    for certain, and it cannot add anything SLURM has not already ensured;
  - several (snakemake inside `salloc --gres=gpu:4`): jobs claim among them, in a lock folder of
    this SLURM job's own (SLURM never gives one GPU to two jobs, so only jobs of this allocation
    can share a GPU, and they all see the same names);
  - none (CUDA_VISIBLE_DEVICES unset: the job asked SLURM for no GPU): the command runs as is.

Several users of one machine share slots when they share the lock folder: it is created like /tmp
(mode 1777: anyone adds files, nobody removes another's; its missing parents get the umask) and its
files are 0o666 whatever the umask. Since anyone may add files there, a slot file is used only when
it is a regular file of ours (ocbench/lock.py: no symlink, hard link, FIFO or directory under its
name), and a folder only when nobody but its owner, root or (for a sticky one) each file's owner
can swap its files; a SLURM job's own folder must be this user's.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ocbench.errors import OcbenchError, UsageError
from ocbench.lock import UnusableLock, current_holder, try_lock

DEFAULT_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "ocbench-gpu-slots"

# `nvidia-smi -L`:  "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5b...)" and, under a MIG-enabled
# GPU, "  MIG 3g.40gb     Device  0: (UUID: MIG-c6d4...)" (drivers before R470: MIG-GPU-<uuid>/1/0).
GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[^)\s]+)\)")
MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)\s]+)\)")


@dataclass(frozen=True)
class Gpu:
    name: str  # what CUDA_VISIBLE_DEVICES gets: nvidia-smi's index, or a GPU-/MIG- UUID
    key: str   # the physical device, which names its lock files: its UUID, or gpu<index> if unknown


class NoNvidiaSmi(OcbenchError):
    """nvidia-smi is not on PATH: no list of GPUs can be had."""


def nvidia_smi_gpus() -> list[tuple[str, str, list[str]]]:
    """(index, GPU UUID, MIG UUIDs) of every GPU `nvidia-smi -L` lists, in its order (PCI bus id)."""
    if shutil.which("nvidia-smi") is None:
        raise NoNvidiaSmi("nvidia-smi is not on PATH")
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise OcbenchError("nvidia-smi -L did not answer in 120 s: the NVIDIA driver is stuck; "
                           "check the GPUs (or name them in gpus.devices) before starting GPU jobs") from None
    if out.returncode != 0:
        message = next((line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()), "")
        raise OcbenchError(f"nvidia-smi -L failed (exit {out.returncode}): {message or 'no message'}; fix the "
                           "NVIDIA driver, or name the GPUs in gpus.devices ([] to run without claiming one)")
    gpus: list[tuple[str, str, list[str]]] = []
    for line in out.stdout.splitlines():
        if m := GPU_LINE.match(line):
            gpus.append((m[1], m[2], []))
        elif (m := MIG_LINE.match(line)) and gpus:
            gpus[-1][2].append(m[1])
    return gpus


def parse_visible(value: str) -> list[str]:
    """The device names in a CUDA_VISIBLE_DEVICES value ("" and "-1": none)."""
    return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]


def any_gpu() -> bool:
    """Whether a process started here sees a GPU: what torch.cuda.is_available() says, without
    importing torch or starting CUDA (the Snakefile asks while it is parsed, see
    workflow/rules/common.smk). A CUDA_VISIBLE_DEVICES of "" or -1 hides every GPU; otherwise there
    is one when nvidia-smi -L lists one (in a SLURM job with device confinement, the job's own), or,
    without nvidia-smi, when CUDA_VISIBLE_DEVICES names one. Raises OcbenchError when nvidia-smi
    fails or does not answer (in 120 s)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not parse_visible(visible):
        return False
    try:
        return bool(nvidia_smi_gpus())
    except NoNvidiaSmi:
        return visible is not None


def gpus_to_claim(devices: list[str] | None) -> list[Gpu]:
    """The GPUs to choose among: `devices` when given, else CUDA_VISIBLE_DEVICES when set, else
    every GPU nvidia-smi lists (a MIG-enabled one as its MIG devices); each with its physical key.
    Raises NoNvidiaSmi when there is neither a list nor nvidia-smi, OcbenchError when it fails."""
    if devices is None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        # CUDA cannot use a MIG-enabled GPU whole, only its MIG devices: each is a GPU of its own here.
        return [gpu for index, uuid, migs in nvidia_smi_gpus()
                for gpu in ([Gpu(mig, mig) for mig in migs] or [Gpu(index, uuid)])]
    names = parse_visible(os.environ["CUDA_VISIBLE_DEVICES"]) if devices is None else devices
    if not names:
        return []
    if not any(name.isdigit() for name in names):
        return [Gpu(name, name) for name in names]  # UUIDs name the devices: nothing to look up
    try:
        uuid_of = {index: uuid for index, uuid, _ in nvidia_smi_gpus()}
    except NoNvidiaSmi:
        uuid_of = None  # the names are all there is: an index stands for itself
    gpus = []
    for name in names:
        if not name.isdigit():
            gpus.append(Gpu(name, name))  # a GPU- or MIG- UUID names the device itself
        elif uuid_of is None:
            gpus.append(Gpu(name, f"gpu{name}"))
        elif name in uuid_of:
            gpus.append(Gpu(name, uuid_of[name]))
        else:
            raise OcbenchError(f"GPU {name} is not among the GPUs nvidia-smi lists ({', '.join(uuid_of) or 'none'}); "
                               "fix CUDA_VISIBLE_DEVICES or gpus.devices")
    return gpus


def slot_name(gpu: Gpu, k: int) -> str:
    # Old MIG UUIDs hold slashes (MIG-GPU-<uuid>/1/0): a file name keeps letters, digits, - . _ only.
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', gpu.key)}-slot{k}.lock"


def open_lock_dir(path: Path, shared: bool) -> int:
    """The slot folder, created if absent, opened without following a symlink (the slot files are then
    opened relative to it, so nothing can swap the folder in between). `shared`: made like /tmp, 1777,
    so every user can add slots to it; only the folder itself, its missing parents get the umask (a
    1777 folder in a home is one anyone could fill with symlinks). Not shared (a SLURM job's own): made
    0700, and it must be this user's. Either way a folder that exists must be a real folder
    whose slot files nobody else can swap: its owner this user or root (or, shared, any user, when it is
    sticky like /tmp), and no group or other write without the sticky bit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)  # a SLURM job's own stays so; a shared one is made 1777 below
            made = True
        except FileExistsError:
            made = False
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except PermissionError as err:
        raise open_error(Path(err.filename or path), err) from None
    except OSError as err:  # ELOOP: a symlink; ENOTDIR: a file or a symlink to one
        raise OcbenchError(f"GPU slot folder {path} is not a folder (a symlink or a file: {err.strerror}); "
                           "remove it, or set gpus.lock_dir to a folder of your own") from None
    if made and shared:
        os.fchmod(fd, 0o1777)  # not left to the umask, which would keep other users out
    st = os.fstat(fd)
    mode, sticky = stat.S_IMODE(st.st_mode), bool(st.st_mode & stat.S_ISVTX)
    problem = None
    if st.st_uid not in (os.geteuid(), 0) and not (shared and sticky):
        problem = f"belongs to uid {st.st_uid}, not to you"
    elif mode & 0o022 and not sticky:
        problem = f"is writable by others (mode {mode:o}) without the sticky bit: anyone could swap its lock files"
    if problem:
        os.close(fd)
        raise OcbenchError(f"GPU slot folder {path} {problem}; remove it (its owner or root can), or set "
                           "gpus.lock_dir to a folder of your own")
    return fd


def open_error(path: Path, err: OSError) -> OcbenchError:
    """The one line a slot file or folder that this user cannot open or create gets."""
    where = path if os.path.lexists(path) else path.parent
    st = where.lstat()
    what = "GPU slot file" if where == path and not stat.S_ISDIR(st.st_mode) else "GPU slot folder"
    fix = ("its owner can make it 666 (chmod 666, or remove it)" if what == "GPU slot file"
           else "its owner can make it 1777 like /tmp (chmod 1777)")
    return OcbenchError(f"cannot open {what} {where} (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o}): "
                        f"{err.strerror}; {fix}, or set gpus.lock_dir to a folder of your own")


def slot_holders(lock_dir: Path, dir_fd: int, names: list[str]) -> str:
    """Who holds these slots, for the one waiting: "PID 123 (alice), PID 456 (bob)"."""
    pids = []
    for name in names:
        pid = current_holder(name, dir_fd)
        if pid is None:
            continue
        pid = pid.split()[0] if pid.split() else pid
        try:
            user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
        except (OSError, KeyError, ValueError):
            user = "?"
        pids.append(f"PID {pid} ({user})")
    return ", ".join(pids) or "nobody now"


def claim(gpus: list[Gpu], runs_per_gpu: int, lock_dir: Path, poll: float = 1.0,
          timeout: float | None = None, shared: bool = True) -> tuple[Gpu, int]:
    """Lock a free slot, preferring the least-loaded GPU; returns (GPU, fd of the held lock). A slot
    whose file cannot be used (another user's 0600 file, a directory, a symlink) is named in one line
    and skipped; when none can be used, that is the error. Waits for a busy one, saying who holds them,
    at most `timeout` seconds (None: as long as it takes)."""
    if runs_per_gpu < 1:
        raise UsageError(f"gpus.runs_per_gpu must be at least 1, got {runs_per_gpu}")
    dir_fd = open_lock_dir(lock_dir, shared)
    try:
        # Slot k of every GPU before slot k + 1 of any: jobs spread over the GPUs before they share.
        slots = [(gpu, k) for k in range(runs_per_gpu) for gpu in gpus]
        unusable: dict[str, str] = {}  # slot file name -> why it cannot be used, said once
        started, last_told = time.monotonic(), None
        while True:
            for gpu, k in slots:
                name = slot_name(gpu, k)
                if name in unusable:
                    continue
                try:
                    fd = try_lock(name, shared=True, dir_fd=dir_fd)
                except UnusableLock as err:
                    unusable[name] = str(err)
                except OSError as err:  # PermissionError, and what else the kernel answers
                    unusable[name] = str(open_error(lock_dir / name, err))
                else:
                    if fd is not None:
                        return gpu, fd
                    continue
                if len(unusable) < len(slots):
                    print(f"ocbench: skipping a GPU slot: {unusable[name]}", file=sys.stderr)
            if len(unusable) == len(slots):
                raise OcbenchError(next(iter(unusable.values())) if len(slots) == 1 else
                                   f"none of the {len(slots)} GPU slots in {lock_dir} can be used; the first: "
                                   f"{next(iter(unusable.values()))}")
            busy = [slot_name(gpu, k) for gpu, k in slots if slot_name(gpu, k) not in unusable]
            who = slot_holders(lock_dir, dir_fd, busy)
            if timeout is not None and time.monotonic() - started >= timeout:
                raise OcbenchError(f"no free GPU slot in {lock_dir} after {timeout:g} s (held by {who}); "
                                   "try again later, or wait longer (--timeout)")
            if who != last_told:  # at the start, and whenever the holders change
                print(f"ocbench: all {len(busy)} GPU slots busy (held by {who}); waiting for one"
                      + (f", at most {timeout:g} s" if timeout is not None else ""), file=sys.stderr)
                last_told = who
            time.sleep(poll)
    finally:
        os.close(dir_fd)


# Where a loaded NVIDIA driver shows itself, with or without nvidia-smi: its /proc entry and its devices.
NVIDIA_DRIVER_SIGNS = (Path("/proc/driver/nvidia/gpus"), Path("/dev/nvidiactl"), Path("/dev/nvidia0"))


def no_gpu_list_line(train_device: str, signs=NVIDIA_DRIVER_SIGNS) -> str:
    """What with-gpu says when it has no list of GPUs (no nvidia-smi, no CUDA_VISIBLE_DEVICES): on a
    machine without an NVIDIA driver, or for a CPU config, that this is expected; where a driver is
    loaded, that nvidia-smi is missing and how to give the list."""
    driver = next((str(p) for p in signs if p.exists()), None)
    if train_device == "cpu":
        return "ocbench: running on the CPU as configured (train.device: cpu); no GPU slot needed"
    if driver is None:
        line = ("ocbench: no GPU on this machine (no NVIDIA driver, no nvidia-smi): running on the CPU without a GPU "
                "slot, as expected on a machine without a GPU")
        if train_device.startswith("cuda"):
            line += f"; train.device is {train_device}, which needs one: set train.device: auto or cpu"
        return line
    return (f"ocbench: no GPU slot claimed: an NVIDIA driver is loaded ({driver}) but nvidia-smi is not on PATH "
            "and CUDA_VISIBLE_DEVICES is unset, so there is no list of GPUs; put nvidia-smi on PATH, or name the "
            "GPUs in gpus.devices (or CUDA_VISIBLE_DEVICES)")


def exec_with_gpu(command: list[str], devices: list[str] | None, runs_per_gpu: int,
                  lock_dir: Path, timeout: float | None = None, train_device: str = "auto") -> None:
    """Claim a slot (waiting at most `timeout` s), then replace this process with `command` on that
    GPU (never returns). `train_device`: the config's train.device, which says whether running
    without a GPU is expected."""
    if not command:
        raise UsageError("with-gpu needs a command after --, e.g. ocbench with-gpu -- ocbench train ...")
    if runs_per_gpu < 1:  # checked here, not only when there are GPUs to claim: it is wrong on any machine
        raise UsageError(f"--runs-per-gpu {runs_per_gpu}: the slots per GPU must be at least 1, e.g. --runs-per-gpu 2")
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # GPU N is nvidia-smi's GPU N
    job = os.environ.get("SLURM_JOB_ID")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if job and devices is None and (visible is None or len(parse_visible(visible)) <= 1):
        # See the module's docstring: SLURM chose this job's one GPU (or none), nothing to claim.
        print(f"ocbench: running on GPU {visible} (chosen by SLURM)" if visible and parse_visible(visible)
              else "ocbench: this SLURM job has no GPU (CUDA_VISIBLE_DEVICES unset); running as is",
              file=sys.stderr)
        gpus = []
    else:
        try:
            gpus = gpus_to_claim(devices)
        except NoNvidiaSmi:
            gpus = []
            print(no_gpu_list_line(train_device), file=sys.stderr)
    if gpus:
        shared = True
        if job:  # the names are this allocation's own; only its jobs (this user's) may share its GPUs
            os.close(open_lock_dir(lock_dir, shared=True))  # the shared folder the job folders sit in
            lock_dir, shared = lock_dir / f"slurm-job-{job}", False
        gpu, fd = claim(gpus, runs_per_gpu, lock_dir, timeout=timeout, shared=shared)
        os.set_inheritable(fd, True)  # the lock lives as long as the command does
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu.name
        physical = f" ({gpu.key})" if gpu.key not in (gpu.name, f"gpu{gpu.name}") else ""
        print(f"ocbench: running on GPU {gpu.name}{physical}", file=sys.stderr)
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        raise OcbenchError(f"command not found: {command[0]}") from None
