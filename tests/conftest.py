import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# `make test` runs three pytest-xdist workers on two cores, and the ocbench processes the tests start
# each run torch's OpenMP pool: a thread that spins while it waits for work steals the core another
# worker computes on. Passive waits, as the workflow gives its CPU jobs (common.smk); they change no
# number, only how an idle thread waits (measured there, BENCHMARKS.md). Set before any test module
# imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

# glibc's malloc maps every block over 32 MB (its largest mmap threshold) afresh and unmaps it on
# free: Inception's first block holds 170 MB of activations for 32 images, so each batch of every
# evaluation paid for new zeroed pages in the kernel. Every block from the heap, and freed memory kept
# there: less kernel time for more resident memory. Allocation only: no number changes (measured in
# BENCHMARKS.md, "glibc's heap for the tests' processes").
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**32))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(2**32))


def worker_cores() -> int:
    """The cores of one pytest-xdist worker: the machine's (what this process may use, as the
    workflow counts them) shared out among the workers; all of them without xdist."""
    from ocbench.data import default_workers  # torch-free

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, default_workers() // workers)


# Torch's threads (and those of the ocbench processes a test starts) at the worker's share of the
# cores, at least one, not every core: with two workers on two cores, two threads each made every
# computation wait on a thread another worker's work had displaced. Two smoke training runs side by
# side took 24.5 s with two threads each and 18.2 s with one (BENCHMARKS.md, "#29: one thread a
# worker, three workers"). Snakemake sets a job's OMP_NUM_THREADS from its threads, so the workflow tests give
# --cores WORKER_CORES.
# Every comparison a test makes (a resumed run against an uninterrupted one) is at one thread count.
# (Only in a worker: xdist's controller imports this file too, and its environment is the workers'.)
WORKER_CORES = worker_cores()
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(WORKER_CORES))


@pytest.fixture(autouse=True)
def deterministic_mode_restored():
    """Each test gets torch's deterministic-algorithms mode as it found it: an in-process training run
    with train.deterministic turns the mode on for the whole process, and a later test in the same
    xdist worker would run under it (GPU-noise tests silently without their noise: the mode switches
    it off, as deterministic kernels would on a GPU)."""
    torch = sys.modules.get("torch")
    before = torch.are_deterministic_algorithms_enabled() if torch else False
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.are_deterministic_algorithms_enabled() != before:
        torch.use_deterministic_algorithms(before)


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


# What the order below knows of each test's cost: its wall seconds in `make test` on the 2-core VM
# (three workers, 2026-12-08; docs/testing.md), rounded. Only the order uses them; nothing asserts a
# duration. A key is a test's node id without its parameters, or a module (then the cost of the
# module's tests together); a test not named here counts LIGHT seconds.
COST = {
    "tests/test_workflow.py::test_smoke_dag_killed_during_training_resumes_and_finishes": 570,
    "tests/test_train.py": 380,
    "tests/test_metrics.py": 245,
    "tests/test_learning.py": 230,  # the DCGAN check and the ResNet SN-GAN's, one fixture
    "tests/test_slurm.py::test_smoke_dag_through_slurm": 160,
    "tests/test_step.py::test_compiled_step_matches_eager_and_a_new_beta_does_not_recompile": 130,
    "tests/test_sngan_resnet.py::test_the_presets_dag_runs_end_to_end_at_tiny_widths": 100,
    "tests/test_gpu_check.py::test_the_gpu_check_runs_every_step_at_smoke_size": 80,
    "tests/test_bench.py": 75,
    "tests/test_figures.py": 60,
    "tests/test_preflight.py": 45,
    "tests/test_data.py": 40,
    "tests/test_preflight_noise.py::test_the_stabilisers_and_the_resnet_pass_under_gpu_noise": 32,
    "tests/test_frechet.py::test_well_conditioned_2048_equals_pytorch_fid": 31,
    "tests/test_labs.py": 28,
    "tests/test_preflight_noise.py::test_every_case_of_the_papers_protocol_passes_under_gpu_noise": 26,
}
LIGHT = 2


def shares_a_fixture(item) -> bool:
    """Whether the test uses a module- or session-scoped fixture of its own module: the module's
    tests then go to one worker together, which builds the fixture once."""
    module = item.nodeid.split("::")[0]
    return any(fd.scope in ("module", "session") and fd.baseid == module
               for defs in item._fixtureinfo.name2fixturedefs.values() for fd in defs)


def pytest_collection_modifyitems(config, items):
    """The order `make test`'s `--dist worksteal` splits between its workers. Worksteal hands the
    first of n workers the first len(items) // n tests, the next its share of the rest, and so on; a
    worker with nothing left takes the back half of another's remaining queue. So the long tests go
    at the heads of the shares, spread over them longest first (each to the share with the least so
    far): the smoke DAG killed and resumed starts at once on one worker, the SLURM DAG (mostly
    waiting on status polls) and test_train on the others, and none starts last with the other workers
    idle. A module whose tests share a fixture (test_train's trained reference, test_metrics'
    statistics) stays in one share, before the short tests that end each share and are the ones
    taken by a worker with nothing left; so its fixture is built once, not once per worker. Without
    xdist this only changes the order."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    units = {}  # a module sharing fixtures, or a single test -> its tests, in collection order
    for item in items:
        module = item.nodeid.split("::")[0]
        units.setdefault(module if shares_a_fixture(item) else item.nodeid, []).append(item)

    def cost(key):
        return COST.get(key) or sum(COST.get(item.nodeid.split("[")[0], LIGHT) for item in units[key])

    ranked = sorted(units, key=cost, reverse=True)  # stable: ties keep the collection order
    heavy = [key for key in ranked if cost(key) > 10 * LIGHT]
    light = [item for key in ranked if key not in heavy for item in units[key]]
    sizes, left = [], len(items)
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    shares, load = [[] for _ in sizes], [0] * workers
    for key in heavy:  # longest first, each to the share with the least so far that has room
        fits = [i for i in range(workers) if len(shares[i]) + len(units[key]) <= sizes[i]] or range(workers)
        i = min(fits, key=lambda i: load[i])
        shares[i] += units[key]
        load[i] += cost(key)
    for share, size in zip(shares, sizes):  # then the short tests, filling each share to its size
        room = max(0, size - len(share))
        share += light[:room]
        light = light[room:]
    items[:] = [item for share in shares for item in share] + light
