"""The device a config's `train.device` names."""

import torch

from ocbench.errors import OcbenchError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first GPU when there is one, else the CPU; a named GPU that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OcbenchError(f"device {name!r} asked for, but no CUDA GPU is visible; use --set train.device=cpu")
    return torch.device(name)
