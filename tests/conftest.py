import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# `make test` runs two pytest-xdist workers on two cores, and the ocbench processes the tests start
# each run torch's OpenMP pool: a thread that spins while it waits for work steals the core the
# other worker computes on. Passive waits, as the workflow gives its CPU jobs (common.smk); they
# change no number, only how an idle thread waits (measured there, BENCHMARKS.md). Set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def checkout_env(env=None) -> dict:
    """The environment for a process that must import the package of this checkout (PYTHONPATH),
    not the one the virtualenv was installed from: a venv shared by several checkouts would
    otherwise test another copy's code."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}


def run_cli(*args, cwd=None, env=None, check=False, timeout=900):
    """Run the installed `ocbench` console script as a user would (this checkout's package, see
    checkout_env); returns the CompletedProcess."""
    exe = Path(sys.executable).with_name("ocbench")
    proc = subprocess.run(
        [str(exe), *map(str, args)], cwd=cwd, env=checkout_env(env), capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ocbench {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


def pytest_collection_modifyitems(items):
    """The end-to-end DAG runs (marked slow, minutes each) each at the head of one half of the
    collection: `make test`'s `--dist worksteal` hands each of its two workers one half, and a worker
    with nothing left takes tests from the end of the other's queue. So the smoke DAG killed and
    resumed (the longest test, computing) starts at once on one worker and the smoke DAG through
    SLURM (mostly waiting on the executor's status polls) at once on the other; neither starts last
    with the other worker idle. Without xdist this only changes the order."""
    slow = sorted((item for item in items if item.get_closest_marker("slow")),
                  key=lambda item: "slurm" in item.nodeid)  # the smoke DAG first, then SLURM
    rest = [item for item in items if not item.get_closest_marker("slow")]
    head = len(items) // 2 - 1  # worksteal's first worker gets len(items) // 2 tests
    items[:] = slow[:1] + rest[:head] + slow[1:] + rest[head:]
