"""The device a config's `train.device` names, and why a GPU job has none.

A job that was given a GPU (CUDA_VISIBLE_DEVICES names one: `ocbench with-gpu` or SLURM set it)
must train on it. When CUDA cannot start there (a driver older than the torch build, a CPU-only
torch), `auto` does not quietly fall back to the CPU, where the paper's protocol would run for weeks:
it stops with one line saying why.
"""

from __future__ import annotations

import os

import torch

from ocbench.errors import OcbenchError


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
        return " ".join(str(exc).split())[:200] or type(exc).__name__
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
    against the GPUs this process sees."""
    if torch.cuda.is_available():
        if name.startswith("cuda:"):
            check_ordinal(name, torch.cuda.device_count())
        return torch.device("cuda" if name == "auto" else name)
    if name.startswith("cuda"):
        raise OcbenchError(f"train.device is {name} but CUDA cannot start here: {cuda_failure()}; fix the "
                           f"driver or the torch build (ocbench preflight checks it), or use --set train.device=cpu")
    if name == "auto" and assigned_gpus():
        raise OcbenchError(
            f"this job was given GPU {','.join(assigned_gpus())} (CUDA_VISIBLE_DEVICES) but CUDA cannot start: "
            f"{cuda_failure()}; fix the driver or the torch build (ocbench preflight checks it), or train on "
            f"the CPU on purpose with --set train.device=cpu")
    return torch.device(name if name != "auto" else "cpu")
