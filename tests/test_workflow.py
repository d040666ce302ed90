"""The Snakemake DAG: dry runs, validation, lint, and the whole smoke DAG end to end, killed during
training and resumed, as CI runs it."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, WORKER_CORES, run_cli
from ocbench.claims import CLAIMS
from ocbench.formats import POSITION, TIMING_COLUMNS

BIN = Path(sys.executable).parent
SMOKE = REPO / "workflow" / "config" / "smoke.yaml"


def snakemake(*args, workdir, timeout=1200, env=None, **kwargs):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TORCH_HOME": str(workdir / "torch"), **(env or {})}
    return subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(workdir), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def tensorboard_events(log_dir: Path):
    """A run's TensorBoard events as TensorBoard reads them (purged steps hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a dry run: rule -> count."""
    lines = output[output.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_lists_the_paper_protocol(tmp_path):
    proc = snakemake("-n", "--cores", "1", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout) == {
        "fetch_images": 1, "fetch_partition": 1, "prepare": 1, "fid_weights": 1, "fid_stats": 1, "preflight": 1,
        "train": 15, "aggregate": 1, "figures": 1, "summary": 1, "claims": 1, "all": 1, "total": 26}
    assert not (tmp_path / "results").exists()  # results/paper/config.yaml is written when jobs run


PARSE_ONLY = """
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(sys.argv[1]),
                            config_settings=ConfigSettings(configfiles=[Path(sys.argv[2])]), workdir=Path(sys.argv[3]))
    assert workflow._workflow.get_rule("train").shellcmd
print(*sys.modules)
"""


def test_parsing_the_workflow_imports_no_torch(tmp_path):
    """Snakemake parses the workflow for every dry run and again in every SLURM job: no torch or
    pytorch-fid there (seconds each), and no CUDA started in Snakemake's own process."""
    proc = subprocess.run([sys.executable, "-c", PARSE_ONLY, REPO / "Snakefile", SMOKE, tmp_path],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    modules = proc.stdout.split()
    assert "ocbench.config" in modules and not {"torch", "pytorch_fid", "torchvision"} & set(modules)
    assert not (tmp_path / "results").exists()


def test_a_snakemake_without_torch_stops_before_any_job(tmp_path):
    """The parse imports no torch, but a Snakemake whose Python lacks it (pipx, a system package)
    still stops at once, not in every job's log."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys; sys.modules['torch'] = None  # no torch\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", SMOKE, workdir=tmp_path,
                     env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode != 0
    assert "has no torch: run the Snakemake of ocbench's environment" in proc.stdout + proc.stderr


def test_the_workflow_finds_the_fid_weights_where_torch_hub_and_pytorch_fid_do(tmp_path, monkeypatch):
    """ocbench.hub repeats torch.hub's cache folder rule and pytorch-fid's file name, without torch."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    from ocbench import fid, hub

    assert hub.WEIGHTS_NAME == FID_WEIGHTS_URL.rsplit("/", 1)[1] == fid.WEIGHTS_URL.rsplit("/", 1)[1]
    for env in ({}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {"TORCH_HOME": "~/th"},
                {"TORCH_HOME": str(tmp_path / "th"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}):
        for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert hub.hub_dir() == Path(torch.hub.get_dir()), env
        assert fid.weights_path() == Path(torch.hub.get_dir()) / "checkpoints" / hub.WEIGHTS_NAME
    assert fid.weights_path(str(tmp_path)) == tmp_path / hub.WEIGHTS_NAME


def test_network_jobs_are_planned_for_the_gpu_nvidia_smi_lists(tmp_path):
    """train.device auto, decided without torch (ocbench.gpus.any_gpu): where nvidia-smi lists a GPU
    the network jobs get no CPU OpenMP settings; where it fails, they are planned for the CPU, and
    one line says why."""
    from test_gpus import fake_nvidia_smi

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    for gpus, on_gpu in (([[]], True), (None, False)):
        fake_nvidia_smi(tmp_path / "bin", gpus)
        proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                               str(tmp_path), "-n", "--cores", "1"], capture_output=True, text=True, timeout=300,
                              env={**env, "PATH": f"{tmp_path / 'bin'}:{BIN}:{env['PATH']}"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count(" with-gpu ") == 17  # train x 15, fid_stats, preflight
        assert ("OMP_WAIT_POLICY" in proc.stdout) is not on_gpu
        assert ("nvidia-smi -L failed (exit 9)" in proc.stderr) is not on_gpu


def test_claims_preset_trains_three_seeds_of_every_run_and_judges_the_claims(tmp_path):
    proc = snakemake("-n", "--cores", "1", "--configfile", REPO / "workflow/config/claims.yaml", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["train"] == 45 and counts["claims"] == 1
    for seed in (0, 1, 2):
        assert f"results/claims/runs/wgan_combi_s{seed}/metrics.csv" in proc.stdout
    assert "results/claims/claims.md" in proc.stdout and "figures/claims/claims.pdf" in proc.stdout


def test_more_seeds_one_gan_or_the_official_wgan_without_editing_files(tmp_path):
    proc = snakemake("-n", "--cores", "1", "--config", "run={gans: [lsgan], variants: [baseline, oct], "
                     "seeds: [0, 1, 2]}", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout)["train"] == 6
    assert "lsgan_oct_s2" in proc.stdout and "dcgan" not in proc.stdout.replace("dcgan_", "")
    proc = snakemake("-n", "--cores", "1", "--configfile", REPO / "workflow/config/official-wgan.yaml",
                     workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout)["train"] == 5 and "results/official-wgan/runs/wgan_ramp_s0" in proc.stdout


def test_stabilizers_overlay_adds_figure_8(tmp_path):
    proc = snakemake("-n", "--cores", "1", "--configfile", REPO / "workflow/config/stabilizers.yaml", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout)["train"] == 18 and "results/stabilizers/runs/wgan_gp_oct_s2" in proc.stdout
    assert "figures/stabilizers/fig8.pdf" in proc.stdout and "figures/stabilizers/fig8.png" in proc.stdout


@pytest.mark.parametrize("override, said", [
    ("variants={oct: {alpha: 1.5}}", "variants.oct.alpha: 1.5 is greater than the maximum of 1"),
    ("run={gans: [began], variants: [oct], seeds: [0]}", "run.gans: unknown GAN 'began'; allowed: dcgan,"),
    ("train={epoch: 10}", "train.epoch: no such setting; did you mean train.epochs?"),
])
def test_a_bad_config_fails_at_validation_before_any_job(tmp_path, override, said):
    """In ocbench's one line naming the key and the fix (exit 2, as `ocbench config --set` says it),
    not Snakemake's validate(), which prints the whole schema around it."""
    proc = snakemake("--cores", "1", "--config", override, workdir=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"ocbench: error: config error at {said}"), proc.stderr
    assert "Traceback" not in proc.stderr and "schema" not in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results" / "paper" / "runs").exists()


def test_lint_reports_nothing(tmp_path):
    proc = snakemake("--lint", workdir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_the_jobs_run_snakemakes_python_from_a_shell_without_the_environment(tmp_path):
    """`.venv/bin/snakemake ...` from a shell where the virtual environment is not activated: PATH
    holds no Python with torch (here none named `python` at all), and the first jobs still run."""
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TORCH_HOME": str(tmp_path / "torch")}
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "2", "--configfile", str(SMOKE), "--until", "prepare"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert np.load(tmp_path / "data/smoke/celeba128.npy", mmap_mode="r").shape == (200, 128, 128, 3)
    # The merged config the jobs read, written by the workflow's onstart before the first job.
    assert yaml.safe_load((tmp_path / "results/smoke/config.yaml").read_text())["data"]["synthetic"]["n"] == 200


def test_the_jobs_python_is_snakemakes_unless_conda_deploys_one(tmp_path):
    """The rules' commands as Snakemake parses them, without and with --sdm conda (no conda here to
    run them: the test reads the parsed rules' commands through Snakemake's API). Every field of
    every command is quoted ({field:q}), so a path with a space or a $ reaches the job as one word."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DeploymentSettings, OutputSettings, ResourceSettings
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    def commands(*methods):
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(configfiles=[SMOKE]),
                deployment_settings=DeploymentSettings(deployment_method=frozenset(methods)),
                snakefile=REPO / "Snakefile", workdir=tmp_path)
            return {rule.name: rule.shellcmd for rule in workflow._workflow.rules if rule.shellcmd}

    ours = commands()
    assert ours["train"].count(f"{sys.executable} -m ocbench") == 2  # with-gpu and train
    fields = {rule: re.findall(r"(?<!{){([^{}]+)}(?!})", command) for rule, command in ours.items()}  # not {{...}}
    assert "{wildcards.run:q}" in ours["train"] and "{output:q}" in ours["preflight"], ours
    assert all(field.endswith(":q") for found in fields.values() for field in found), fields
    with_conda = commands(DeploymentMethod.CONDA)["train"]
    assert with_conda.count(" python -m ocbench") == 2 and sys.executable not in with_conda


def test_paths_with_spaces_and_shell_syntax_reach_the_jobs_as_one_word(tmp_path):
    """A checkout under ~/My Projects/ and paths.results "my results $(touch pwned)": a real job (the
    synthetic CelebA of 4 images) runs, its log lands at the configured path, and nothing the paths
    spell is run (today: `bash: Projects/ocbench: No such file`, a stray ./my, a `touch`)."""
    import shutil

    checkout = tmp_path / "My Projects" / "ocbench"
    checkout.mkdir(parents=True)
    for part in ("Snakefile", "environment.yml", "workflow", "profiles", "ocbench"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, checkout / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                              if (REPO / part).is_dir() else {}))
    work = tmp_path / "work"
    work.mkdir()
    results = "my results $(touch pwned)"
    (work / "overlay.yaml").write_text(yaml.safe_dump({
        "name": "t", "paths": {"results": results, "figures": "figures"},
        "data": {"images": "data/img_align_celeba.zip", "partition": "data/list_eval_partition.txt",
                 "prepared": "data/celeba128.npy", "subset": True, "synthetic": {"n": 4, "seed": 0}}}))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(checkout / "Snakefile"), "--directory",
                           str(work), "data/img_align_celeba.zip", "--cores", "1", "--configfile",
                           str(work / "overlay.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "data/img_align_celeba.zip").is_file()
    assert "wrote data/img_align_celeba.zip" in (work / results / "t/logs/synth.log").read_text()
    assert sorted(p.name for p in work.iterdir()) == [".snakemake", "data", results, "overlay.yaml"]


def test_jobs_on_the_cpu_get_the_cores_they_are_given(tmp_path):
    """On a machine without a GPU, train and fid_stats run with every thread --cores allows
    (Snakemake then sets OMP_NUM_THREADS for them), and no rule needs --cores to parse."""
    for cores in (1, 2):
        proc = snakemake("-n", "--cores", cores, "--configfile", SMOKE, workdir=tmp_path)
        assert proc.returncode == 0, proc.stderr
        threads = {}
        for block in proc.stdout.split("\nrule ")[1:]:
            found = re.search(r"^\s+threads: (\d+)$", block, re.M)
            threads.setdefault(block.split(":", 1)[0], set()).add(int(found.group(1)) if found else 1)
        expected = min(cores, len(os.sched_getaffinity(0)))
        assert threads["train"] == threads["fid_stats"] == threads["prepare"] == {expected}, threads


def test_a_stale_snakemake_lock_goes_only_when_no_snakemake_of_the_workflow_is_alive(tmp_path):
    """The lock a killed Snakemake leaves stays while another Snakemake of the workflow lives in the
    directory (it is named), and goes once that one is dead (SIGKILL: the kernel's word)."""
    stale = tmp_path / ".snakemake/locks/0.output.lock"
    stale.parent.mkdir(parents=True)
    stale.write_text(str(tmp_path / "results/smoke/metrics.csv") + "\n")
    # A live one: a process registered as a Snakemake of the workflow here, as the Snakefile does.
    code = "import sys, time; from ocbench.workflow_lock import register; register(); print('in', flush=True); time.sleep(600)"
    alive = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert alive.stdout.readline() == "in\n"
        proc = snakemake("-n", "--cores", "1", "--configfile", SMOKE, workdir=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"another snakemake of this workflow is running in {tmp_path}: PID {alive.pid}" in proc.stderr
        assert stale.exists()
        status = run_cli("status", "--config", SMOKE, cwd=tmp_path, check=True).stdout
        assert f"snakemake: running here (PID {alive.pid})" in status, status
    finally:
        alive.kill()
        alive.wait()
    status = run_cli("status", "--config", SMOKE, cwd=tmp_path, check=True).stdout
    assert "stale lock" in status and "removes it" in status, status
    proc = snakemake("-n", "--cores", "1", "--configfile", SMOKE, workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stale.exists()  # a dry run removes nothing
    proc = snakemake("data/smoke/img_align_celeba.zip", "--cores", "1", "--configfile", SMOKE, workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "removed the lock a killed snakemake left" in proc.stderr and not stale.exists()


TOY = """
import sys
sys.path.insert(0, {repo!r})
from ocbench.workflow_lock import claim_for_snakemake
from snakemake_interface_executor_plugins.settings import ExecMode

if workflow.exec_mode == ExecMode.DEFAULT:  # as the Snakefile does
    said = claim_for_snakemake()
    if said:
        print(said, file=sys.stderr)

rule slow:
    output: "done.txt"
    shell: "echo $$ >> starts.txt; if [ ! -e fast ]; then sleep 600; fi; touch {{output}}"
"""


def test_the_lock_stays_while_a_job_of_a_killed_snakemake_still_runs(tmp_path):
    """kill -9 of Snakemake alone (the OOM killer; a closed terminal with nohup jobs) leaves its job
    running: neither a dry run nor the next run removes the lock, so no second copy of the job starts
    (today: a dry run removed it, and two copies ran). Once the job is gone too, the same command resumes."""
    (tmp_path / "Snakefile").write_text(TOY.format(repo=str(REPO)))
    starts = tmp_path / "starts.txt"

    def toy(*args):
        return subprocess.run([str(BIN / "snakemake"), "--cores", "1", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    first = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1"], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # the job's shell creates starts.txt, then writes its PID: wait for the PID, not the file
        while not (starts.exists() and starts.read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.05)
        job = int(starts.read_text().split()[0])
        os.kill(first.pid, signal.SIGKILL)  # Snakemake alone; its job lives on
        first.wait()
        locks = sorted((tmp_path / ".snakemake/locks").iterdir())
        assert locks and toy("-n").returncode == 0 and sorted((tmp_path / ".snakemake/locks").iterdir()) == locks
        proc = toy()
        assert proc.returncode != 0 and starts.read_text().split() == [str(job)]  # no second copy
        assert f"job process(es) of a killed snakemake still run: PID {job} " in proc.stderr, proc.stderr
        status = run_cli("status", "--config", SMOKE, cwd=tmp_path, check=True).stdout
        assert "stale lock" in status and f"still run: PID {job} " in status, status
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the whole group: the job too
    while os.path.exists(f"/proc/{job}"):
        time.sleep(0.05)
    (tmp_path / "fast").touch()
    proc = toy()
    assert proc.returncode == 0, proc.stderr
    assert "removed the lock a killed snakemake left" in proc.stderr and (tmp_path / "done.txt").exists()


def test_the_lock_stays_for_a_cluster_snakemake_and_on_a_filesystem_with_local_locks(tmp_path):
    from ocbench import workflow_lock

    stale = tmp_path / ".snakemake/locks/0.output.lock"
    stale.parent.mkdir(parents=True)
    stale.write_text("done.txt\n")
    dead = tmp_path / workflow_lock.INSTANCES / "123.lock"
    dead.parent.mkdir(parents=True)
    dead.write_text("123\nsnakemake --executor slurm\nlogin1\ncluster\n")  # nobody holds it: dead
    said = workflow_lock.claim(tmp_path, dry_run=False, local=True)
    assert "stays: the killed snakemake (PID 123) submitted its jobs to a cluster" in said and stale.exists()
    said = workflow_lock.claim(tmp_path, dry_run=False, local=False)
    assert "this snakemake submits its jobs to a cluster" in said and stale.exists()
    # A Snakemake that ends by exiting (a finished run, a dry run on a cluster) leaves no record to block on.
    child = subprocess.run([sys.executable, "-c", "import os; from pathlib import Path; from ocbench.workflow_lock "
                            "import register; register(Path('.'), local=False); print(os.getpid())"], cwd=tmp_path,
                           check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert not (dead.parent / f"{child.stdout.strip()}.lock").exists() and dead.exists()
    mounts = f"server:/export {tmp_path.parent} nfs4 rw,vers=4.2,local_lock=flock 0 0\n"
    assert "nfs4 mounted with local_lock=flock" in workflow_lock.incoherent_flock(tmp_path, mounts)
    mounts = f"10.0.0.1@o2ib:/scratch {tmp_path.parent} lustre rw,localflock 0 0\n"
    assert "Lustre mounted without the flock option" in workflow_lock.incoherent_flock(tmp_path, mounts)
    mounts = f"10.0.0.1@o2ib:/scratch {tmp_path.parent} lustre rw,flock 0 0\n"
    assert workflow_lock.incoherent_flock(tmp_path, mounts) is None


@pytest.mark.slow
def test_smoke_dag_killed_during_training_resumes_and_finishes(tmp_path):
    """`snakemake --configfile smoke.yaml` as CI runs it, killed (SIGKILL, the whole process
    group: a power loss) while a run is half trained, then the same command again, with no
    --unlock: the stale lock goes, the run resumes from its checkpoint with the numbers of an
    uninterrupted run, and everything a user looks at is there, TensorBoard's event files too."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch")}
    # --cores: the README's 2 where one pytest has the two cores (no xdist), 1 where `make test`'s
    # workers share them (conftest.WORKER_CORES); the DAG is the same.
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", str(WORKER_CORES), "--resources", "gpu=1", "--configfile", str(SMOKE)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state, runs = tmp_path / "results/smoke/state", tmp_path / "results/smoke/runs"
    victim = None
    deadline = time.monotonic() + 900
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        # checkpoint.json, written after checkpoint.pt: a kill between the two (seen once with three
        # xdist workers on two cores) leaves `ocbench status` only metrics.csv to go by.
        for where in state.glob(f"*/{POSITION}") if state.exists() else []:
            if (runs / where.parent.name / "run.json").exists():
                continue
            try:
                position = json.loads(where.read_text())
            except (OSError, ValueError):
                continue
            if position["epoch"] >= 1:  # at least one epoch done, not finished
                os.killpg(proc.pid, signal.SIGKILL)
                victim = where.parent.name
                break
        time.sleep(0.2)
    proc.wait()
    assert victim is not None, "the DAG finished or stalled before a run could be killed mid-training"
    assert not (runs / victim / "run.json").exists()

    assert list((tmp_path / ".snakemake/locks").glob("*.lock")), "the killed snakemake left no lock"
    status = run_cli("status", "--config", SMOKE, cwd=tmp_path, check=True).stdout
    assert re.search(rf"^{victim}\s+failed\s+[23]/3", status, re.M), status
    assert "stale lock" in status and "removes it and resumes" in status, status

    # The README's command again, as it was: no --unlock, no extra flag.
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "removed the lock a killed snakemake left" in rerun.stderr, rerun.stderr[-3000:]
    log = (tmp_path / f"results/smoke/logs/train/{victim}.log").read_text()
    assert "resuming at epoch" in log, log
    status = run_cli("status", "--config", SMOKE, cwd=tmp_path, check=True).stdout
    assert status.count(" finished ") == 15 and "not running here, no lock" in status, status

    # The killed run's numbers are an uninterrupted run's: the same run trained alone, in one go.
    # Bit-equal although smoke.yaml leaves train.deterministic false: on the CPU, deterministic mode
    # swaps kernels only for indexing backward, index_put/put_ with accumulate and index_copy
    # (torch.use_deterministic_algorithms' list), none of which training runs; convolutions, batch
    # norm and Adam on the CPU give the same bits for the same thread count: the train job's
    # (Snakemake's OMP_NUM_THREADS, from --cores), given here too.
    alone = tmp_path / "uninterrupted"
    run_cli("train", "--config", tmp_path / "results/smoke/config.yaml", "--set", f"paths.results={alone}",
            "--run", victim, cwd=tmp_path, env={"OMP_NUM_THREADS": str(WORKER_CORES)}, check=True)
    ours, ref = tmp_path / f"results/smoke/runs/{victim}", alone / f"smoke/runs/{victim}"
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]  # noqa: E731
    with open(ours / "metrics.csv") as f, open(ref / "metrics.csv") as g:
        assert drop(list(csv.DictReader(f))) == drop(list(csv.DictReader(g)))
    for epoch in (1, 2, 3):
        name = f"samples/epoch_{epoch:03d}.png"
        assert (ours / name).read_bytes() == (ref / name).read_bytes(), name
    for epoch in (2, 3):
        a = torch.load(ours / f"generator_epoch_{epoch:03d}.pt", weights_only=True)["generator"]
        b = torch.load(ref / f"generator_epoch_{epoch:03d}.pt", weights_only=True)["generator"]
        assert all(torch.equal(a[k], b[k]) for k in b), f"generator of epoch {epoch} differs"

    # TensorBoard: every run has the tags, at its iterations (12 a epoch), each step once, the
    # killed one too (what the killed attempt wrote past its checkpoint is purged).
    for run in {victim, "dcgan_oct_s0"}:
        events = tensorboard_events(tmp_path / f"results/smoke/tensorboard/{run}")
        assert {"loss/d", "loss/g", "beta/h", "beta/l", "fid", "precision", "recall",
                "speed/images_per_s", "epoch"} <= set(events.Tags()["scalars"]), run
        for tag in ("loss/d", "fid"):
            assert [e.step for e in events.Scalars(tag)] == [12, 24, 36], (run, tag)
        assert [e.step for e in events.Images("samples")] == [12, 24, 36], run

    # What a user checks: 15 runs x 3 epochs of metrics, every figure, the summary, the report.
    with open(tmp_path / "results/smoke/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 * 3 and len({r["run"] for r in rows}) == 15
    assert sorted(int(r["epoch"]) for r in rows if r["run"] == victim) == [1, 2, 3]
    # KID every epoch, FID-infinity at the snapshot epochs (2, 3), and what every number compares under
    assert all(np.isfinite(float(r["kid"])) for r in rows)
    assert {int(r["epoch"]) for r in rows if r["fid_inf"]} == {2, 3}
    assert {(r["fid_samples"], r["reference_images"], r["reference_split"], r["eval_precision"]) for r in rows} == {
        ("32", "200", "all", "fp32")}
    for n in range(2, 8):
        png, pdf = tmp_path / f"figures/smoke/fig{n}.png", tmp_path / f"figures/smoke/fig{n}.pdf"
        with Image.open(png) as im:
            im.verify()
        from pypdf import PdfReader

        assert len(PdfReader(pdf).pages) >= 1
    summary = (tmp_path / "results/smoke/summary.md").read_text()
    claims = (tmp_path / "results/smoke/claims.md").read_text()
    assert "no interval possible with one seed" in claims and "quality" in claims  # smoke: one seed
    with open(tmp_path / "results/smoke/claims.csv") as f:
        verdicts = {(r["claim"], r["gan"], r["measure"]): r["verdict"] for r in csv.DictReader(f)}
    assert verdicts[("1", "wgan", "final_fid")] == "no interval possible with one seed"
    assert len(verdicts) == sum(len(c.gans) * len(c.measures) for c in CLAIMS)
    with Image.open(tmp_path / "figures/smoke/claims.png") as im:
        im.verify()
    for gan in ("dcgan", "lsgan", "wgan"):
        for variant in ("baseline", "oct", "low", "ramp", "combi"):
            assert f"{gan}_{variant}_s0" in summary
    # The README's command, with no --cores (the smoke run's, so with its --configfile).
    report = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--report", "report.html", "--configfile", str(SMOKE)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "fig2" in html and "fig7" in html and "claims.pdf" in html

    # One protocol: the config Snakemake merged and wrote, smoke.yaml as `ocbench` loads it, and what
    # every run recorded have one fingerprint per run (so `ocbench train --config smoke.yaml` resumes).
    from ocbench import config as config_mod

    ours, written = config_mod.load([SMOKE]), config_mod.load([tmp_path / "results/smoke/config.yaml"])
    for run in ours.run_ids():
        recorded = json.loads((runs / run / "run.json").read_text())["fingerprint"]
        assert config_mod.protocol_fingerprint(ours, run) == config_mod.protocol_fingerprint(written, run) == recorded

    # Reruns follow the config's content (dry runs, on the finished tree): a variant's alpha reruns its
    # runs and everything after them, a figure setting the figures alone, a comment nothing.
    def planned(*args, configfile=SMOKE):
        proc = subprocess.run([*cmd[:-1], str(configfile), "-n", *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts = job_counts(proc.stdout) if "Job stats:" in proc.stdout else {}
        return counts, sorted(set(re.findall(r"^\s+wildcards: run=(\S+)$", proc.stdout, re.M)))

    assert planned("--config", "variants={oct: {alpha: 0.25}}") == (
        {"train": 3, "aggregate": 1, "figures": 1, "summary": 1, "claims": 1, "all": 1, "total": 8},
        ["dcgan_oct_s0", "lsgan_oct_s0", "wgan_oct_s0"])
    assert planned("--config", "figures={grid_epochs: [1, 3]}") == ({"figures": 1, "all": 1, "total": 2}, [])
    commented = tmp_path / "smoke-commented.yaml"
    commented.write_text("# a comment, and a default spelt out\n" + SMOKE.read_text() + "log: {tensorboard: true}\n")
    assert planned(configfile=commented) == ({}, [])

    # Logs hold progress as lines, not a terminal's carriage-return redraws.
    stats_log = (tmp_path / "results/smoke/logs/fid_stats.log").read_bytes()  # bytes: text mode hides \r
    train_log = (tmp_path / f"results/smoke/logs/train/{victim}.log").read_bytes()
    assert b"\r" not in stats_log and b"inception: 200/200 (100%)" in stats_log, stats_log[-2000:]
    assert b"\r" not in train_log and re.search(rb"^\S+ epoch 3/3: 12/12 \(100%\)", train_log, re.M), train_log[-2000:]
