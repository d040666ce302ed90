import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
