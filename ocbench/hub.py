"""Where pytorch-fid's Inception weights file lies, found without importing torch.

The Snakefile needs this path (rule fid_weights' output) while Snakemake parses the workflow, which
happens in Snakemake's own process and again in every SLURM job; importing torch and pytorch-fid
there costs seconds each time. So this module repeats torch.hub's two-line rule for its cache folder
(`torch.hub.get_dir()` unless `torch.hub.set_dir()` was called, which ocbench never does) and the
weights' file name; tests/test_workflow.py checks both against torch and pytorch-fid themselves.
ocbench/fid.py takes them from here, so the workflow and the FID agree on one path.
"""

from __future__ import annotations

import os
from pathlib import Path

# The last part of pytorch-fid's FID_WEIGHTS_URL (ocbench.fid.WEIGHTS_URL): torch.hub caches a
# download under its URL's file name, and pytorch-fid looks for it there.
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def hub_dir() -> Path:
    """torch.hub.get_dir(): $TORCH_HOME/hub, where TORCH_HOME defaults to $XDG_CACHE_HOME/torch and
    XDG_CACHE_HOME to ~/.cache."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def weights_path(weights_dir: str | None = None) -> Path:
    """Where the weights file must be: `weights_dir`, else torch.hub's cache as pytorch-fid uses it."""
    folder = Path(weights_dir) if weights_dir else hub_dir() / "checkpoints"
    return folder / WEIGHTS_NAME
