"""One GPU per job on a multi-GPU machine: `ocbench with-gpu -- COMMAND ...`.

Snakemake counts a `gpu` resource but does not tell a job which GPU it got, so every concurrent
job would land on GPU 0. Each job instead claims a slot, a lock file per (GPU, k) for
k < runs_per_gpu, with an exclusive `flock`, sets CUDA_VISIBLE_DEVICES to that GPU and execs the
command, which inherits the locked descriptor. The kernel drops the lock when the process ends,
however it ends (SIGKILL included), so a killed job's slot frees itself. When every slot is taken
the job waits for one. Inside a SLURM job, SLURM has already chosen the GPU: no slot is claimed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ocbench.errors import OcbenchError, UsageError
from ocbench.lock import try_lock

DEFAULT_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "ocbench-gpu-slots"


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set (SLURM sets it), else all."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return []


def claim(devices: list[str], runs_per_gpu: int, lock_dir: Path, poll: float = 1.0,
          timeout: float | None = None) -> tuple[str, int]:
    """Lock a free slot, preferring the least-loaded GPU; returns (device, fd of the held lock)."""
    if runs_per_gpu < 1:
        raise UsageError(f"gpus.runs_per_gpu must be at least 1, got {runs_per_gpu}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    # Slot k of every GPU before slot k + 1 of any: jobs spread over the GPUs before they share.
    slots = [(dev, k) for k in range(runs_per_gpu) for dev in devices]
    started, waiting_said = time.monotonic(), False
    while True:
        for dev, k in slots:
            fd = try_lock(lock_dir / f"gpu{dev}-slot{k}.lock")
            if fd is not None:
                return dev, fd
        if timeout is not None and time.monotonic() - started > timeout:
            raise OcbenchError(f"no free GPU slot in {lock_dir} after {timeout:.0f} s")
        if not waiting_said:
            print(f"ocbench: all {len(slots)} GPU slots busy; waiting for one", file=sys.stderr)
            waiting_said = True
        time.sleep(poll)


def exec_with_gpu(command: list[str], devices: list[str] | None, runs_per_gpu: int,
                  lock_dir: Path) -> None:
    """Claim a slot, then replace this process with `command` on that GPU (never returns)."""
    if not command:
        raise UsageError("with-gpu needs a command after --, e.g. ocbench with-gpu -- ocbench train ...")
    if devices is None and "SLURM_JOB_ID" in os.environ:
        # SLURM gave this job its GPU(s) and set CUDA_VISIBLE_DEVICES; with device confinement
        # every job sees its own GPU as 0, so a node-wide lock on "GPU 0" would serialise them.
        chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
        if chosen:
            print(f"ocbench: running on GPU {chosen} (chosen by SLURM)", file=sys.stderr)
    else:
        devices = visible_gpus() if devices is None else devices
        if devices:
            dev, fd = claim(devices, runs_per_gpu, lock_dir)
            os.set_inheritable(fd, True)  # the lock lives as long as the command does
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
            print(f"ocbench: running on GPU {dev}", file=sys.stderr)
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        raise OcbenchError(f"command not found: {command[0]}") from None
