"""The device a config's `train.device` names, and why a GPU job has none.

The default GPU path (`train.device: auto`, no speed options: what `make reproduce` runs) is the
CPU-tested path plus these device-only lines, each executed by tests/test_fake_cuda.py through a
fake CUDA driver (tests/fake_cuda.py):

    device.resolve_device        torch.cuda.is_available(), the run's GPU as cuda:0
    train.configure_backends     cudnn.benchmark = True
    train.set_up                 torch.Generator(cuda:0), the run's noise stream
    batches.load_images          torch.cuda.mem_get_info and `fits_on_device`: the array on the GPU,
                                 else `PinnedGather` (pinned buffers, copy events)
    train.make_optimizer         fused Adam; `load_optimizer_state` puts `step` on the GPU for it
    train.rng_state / set_rng_state   torch.cuda.get_rng_state / set_rng_state of the run's GPU
    fid.full_fp32                Inception under cudnn.flags(allow_tf32=False, fp32 "ieee")
    device.sync                  torch.cuda.synchronize(device), around preflight's and the benchmarks' timings
    preflight.check_environment  get_device_properties, the driver from nvidia-smi
    preflight.check_evaluation   the FID on the GPU against the CPU

A job that was given a GPU (CUDA_VISIBLE_DEVICES names one: `ocbench with-gpu` or SLURM set it)
must train on it. When CUDA cannot start there (a driver older than the torch build, a CPU-only
torch), `auto` does not quietly fall back to the CPU, where the paper's protocol would run for weeks:
it stops with one line saying why.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import torch

from ocbench.errors import OcbenchError, one_line


def assigned_gpus(environ=os.environ) -> list[str]:
    """The GPUs this job was given: the entries of CUDA_VISIBLE_DEVICES (empty when unset, "" or -1)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return []
    entries = [d.strip() for d in value.split(",")]
    return [] if not entries or entries[0] in ("", "-1") else entries


def cuda_failure() -> str:
    """Why CUDA cannot be used in this process, in torch's words (its import hides it)."""
    try:
        torch.cuda.init()
    except Exception as exc:  # RuntimeError / AssertionError: no driver, too old, not compiled with CUDA
        return one_line(exc, 200)
    return "torch.cuda.is_available() is False"


def check_ordinal(name: str, count: int, environ=os.environ) -> None:
    """`cuda:N` must name one of the `count` GPUs this process sees (numbered from 0 after
    CUDA_VISIBLE_DEVICES: under `ocbench with-gpu` the job sees only its own GPU, as cuda:0)."""
    index = int(name.split(":", 1)[1])
    if index >= count:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise OcbenchError(
            f"train.device is {name} but this process sees {count} GPU{'s' * (count != 1)}{seen}, "
            f"numbered from cuda:0; use train.device=cuda (the job's own GPU under ocbench with-gpu "
            f"and SLURM) or pick GPUs with gpus.devices")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first GPU when there is one, else the CPU, unless this job was given a GPU that
    CUDA cannot use (then an error); a named GPU that is absent is an error; `cuda:N` is checked
    against the GPUs this process sees.

    A GPU always comes back with its index (`auto` and `cuda` are `cuda:0`, the job's own GPU under
    `ocbench with-gpu` and SLURM): torch's functions that take a device (`set_device`, a stream's or
    a generator's device) refuse or reinterpret an index-less `cuda`, and every call below names
    the run's device explicitly, so nothing depends on CUDA's "current device"."""
    if torch.cuda.is_available():
        if name.startswith("cuda:"):
            check_ordinal(name, torch.cuda.device_count())
            return torch.device(name)
        return torch.device("cuda", 0)
    if name.startswith("cuda"):
        raise OcbenchError(f"train.device is {name} but CUDA cannot start here: {cuda_failure()}; fix the "
                           f"driver or the torch build (ocbench preflight checks it), or use --set train.device=cpu")
    if name == "auto" and assigned_gpus():
        raise OcbenchError(
            f"this job was given GPU {','.join(assigned_gpus())} (CUDA_VISIBLE_DEVICES) but CUDA cannot start: "
            f"{cuda_failure()}; fix the driver or the torch build (ocbench preflight checks it), or train on "
            f"the CPU on purpose with --set train.device=cpu")
    return torch.device(name if name != "auto" else "cpu")


def runs_sharing_gpu(runs_per_gpu: int, environ=os.environ) -> int:
    """How many runs share this job's GPU: `gpus.runs_per_gpu` under `ocbench with-gpu`, but 1 in a
    SLURM job that was given one GPU (SLURM gives a GPU to one job; the runs_per_gpu slots then
    only matter between the jobs of one allocation with several GPUs)."""
    if environ.get("SLURM_JOB_ID") and len(assigned_gpus(environ)) == 1:
        return 1
    return max(runs_per_gpu, 1)


def sync(device: torch.device) -> None:
    """Wait for the device: a GPU's work is asynchronous, and a timer must see it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def nvidia_driver(timeout: float = 30) -> str:
    """The driver version nvidia-smi reports, or why there is none."""
    if not shutil.which("nvidia-smi"):
        return "unknown (no nvidia-smi on PATH)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"unknown (nvidia-smi did not answer in {timeout:g} s)"
    except OSError as exc:
        return f"unknown (nvidia-smi could not run: {exc.strerror or exc})"
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else \
        f"unknown (nvidia-smi failed: {' '.join(out.stderr.split())[:80]})"
