"""The smoke DAG through SLURM, for real: a one-node cluster on localhost (munged, slurmctld and
slurmd as root, Debian's slurm-wlm, a config written here) and `snakemake` with
workflow/profiles/slurm, scaled down to this node. Every job is an sbatch job; the GPU rules ask
SLURM for a GPU (`gres`), served by two pretend GPUs (/dev/null, /dev/zero) so that SLURM sets
CUDA_VISIBLE_DEVICES for `ocbench with-gpu` as it would on a GPU node, and the CPU build of torch
trains on the CPU.

Needs root and `apt-get install slurm-wlm munge` (`make cluster-deps`) and the `cluster` extra
(snakemake-executor-plugin-slurm); skipped without them."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO

BIN = Path(sys.executable).parent
SMOKE = REPO / "workflow" / "config" / "smoke.yaml"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
INSTALL = "make cluster-deps (apt-get install slurm-wlm munge; pip install -e '.[cluster]')"
# The smoke DAG cut to two runs so the test stays near a minute: the SLURM path, not the science.
RUNS = ["dcgan_baseline_s0", "dcgan_oct_s0"]
RUN_CONFIG = "run={gans: [dcgan], variants: [baseline, oct], seeds: [0]}"
EPOCHS = 3  # smoke.yaml's train.epochs


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "the one-node SLURM cluster runs its daemons as root"
    for exe in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"):
        if not shutil.which(exe, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"):
            return f"{exe} is not installed; {INSTALL}"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return f"snakemake-executor-plugin-slurm is not installed; {INSTALL}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sbin(exe: str) -> str:
    return shutil.which(exe, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node cluster; yields the environment its clients (and jobs) need."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))  # dd if=/dev/urandom bs=1024 count=1
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"

    host = socket.gethostname().split(".")[0]  # hostname -s: slurmd finds its NodeName by it
    with open("/proc/meminfo") as f:
        mem_mb = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) // 1024
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=ocbench-test
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# finished jobs stay in squeue this long: the plugin's status command is squeue (no accounting)
MinJobAge=600
SchedulerParameters=sched_interval=2
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={int(mem_mb * 0.8)} Gres=gpu:2 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    # Two pretend GPUs: SLURM hands them out and sets CUDA_VISIBLE_DEVICES; nothing opens them.
    (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null\n"
                                    f"NodeName={host} Name=gpu File=/dev/zero\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    # Inside a job, the jobstep plugin (snakemake-executor-plugin-slurm-jobstep 0.6) drops every
    # SLURM_* variable but the job's ids before it calls srun, SLURM_CONF included; a real
    # cluster's srun finds /etc/slurm/slurm.conf, this one's is pointed at the test's config.
    wrappers = root / "bin"
    wrappers.mkdir()
    (wrappers / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    (wrappers / "srun").chmod(0o755)

    daemons = []

    def start(*cmd):
        log = open(root / "log" / f"{Path(cmd[0]).name}.out", "w")
        daemons.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True))
        log.close()

    def stop():
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        if jobs.returncode == 0 and jobs.stdout.split():
            subprocess.run(["scancel", *jobs.stdout.split()], env=env, capture_output=True)
        for proc in reversed(daemons):  # slurmd, slurmctld, munged: each by its own pid
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    try:
        # All in the foreground (-F, -D): each Popen's pid is the daemon's own.
        start(sbin("munged"), "-F", "--force", f"--key-file={key}", f"--socket={munge_socket}",
              f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
              f"--seed-file={root}/munge/munged.seed")
        deadline = time.monotonic() + 30
        while not munge_socket.exists():
            assert daemons[0].poll() is None and time.monotonic() < deadline, \
                "munged did not start:\n" + tail(root / "log" / "munged.log") + tail(root / "log" / "munged.out")
            time.sleep(0.1)
        start(sbin("slurmctld"), "-D", "-i", "-f", str(conf))
        start(sbin("slurmd"), "-D", "-f", str(conf))
        deadline, state = time.monotonic() + 60, ""
        while state != "idle":
            for proc in daemons:
                assert proc.poll() is None, f"{proc.args[0]} exited:\n" + "".join(
                    tail(p) for p in sorted((root / "log").iterdir()))
            assert time.monotonic() < deadline, f"node is {state!r}, not idle:\n" + "".join(
                tail(p) for p in sorted((root / "log").iterdir()))
            time.sleep(0.5)
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            state = out.stdout.strip()
        print(f"\nSLURM cluster up in {time.monotonic() - started:.1f} s", flush=True)
        yield {"env": env, "root": root, "host": host, "path": f"{wrappers}:{BIN}:{os.environ['PATH']}"}
    finally:
        stop()


def test_profile_asks_slurm_for_one_gpu_per_training_job():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    for rule in ("train", "fid_stats", "preflight"):
        res = profile["set-resources"][rule]
        # SLURM's GPU request is `gres`; the local `gpu` counter is zeroed so a `gpu=1` limit
        # (workflow/profiles/default) cannot hold SLURM to one GPU job at a time.
        assert res["gres"] == "gpu:1" and res["gpu"] == 0
        assert res["runtime"] > 0 and res["mem_mb"] > 0
    assert profile["set-resources"]["train"]["runtime"] >= 60  # hours, not minutes


def test_profile_dry_run_submits_every_training_run_as_its_own_job(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason=f"the cluster extra is not installed; {INSTALL}")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--profile", str(PROFILE.parent), "-n"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("rule train:") == 15
    train_resources = [line for line in proc.stdout.splitlines() if "gres=gpu:1" in line]
    assert len(train_resources) == 17 and all("gpu=0" in line for line in train_resources)  # + fid_stats, preflight


def slurm_profile_for_this_node(dest: Path) -> Path:
    """workflow/profiles/slurm, cut to a 2-CPU node without accounting; GPU requests kept."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile.update({
        "jobs": 4,
        "cores": 2,
        "latency-wait": 5,
        "retries": 0,
        "slurm-status-command": "squeue",   # no accounting, so no sacct
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 2,
        "slurm-keep-successful-logs": True,
    })
    profile["set-threads"] = {rule: 1 for rule in profile.get("set-threads", {})}
    profile["default-resources"]["mem_mb"] = 1000
    for res in profile["set-resources"].values():
        res["mem_mb"] = 1000
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


@pytest.mark.slow
def test_smoke_dag_through_slurm(slurm, tmp_path):
    """The (two-run) smoke DAG submitted job by job to SLURM finishes with what a local run
    makes: runs x epochs metrics rows, every figure, the summary."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    profile = slurm_profile_for_this_node(tmp_path / "profile")
    # sbatch exports this environment to the jobs (--export=ALL): the venv on PATH, TORCH_HOME,
    # SLURM_CONF, and a TMPDIR of the test's own for ocbench with-gpu's slot locks.
    (tmp_path / "tmp").mkdir()
    env = {**slurm["env"], "PATH": slurm["path"], "TORCH_HOME": str(workdir / "torch"),
           "TMPDIR": str(tmp_path / "tmp")}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--profile", str(profile), "--configfile", str(SMOKE), "--config", RUN_CONFIG]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    print(f"\nsmoke DAG through SLURM: {time.monotonic() - started:.1f} s", flush=True)
    assert proc.returncode == 0, proc.stderr[-5000:] + tail(slurm["root"] / "log" / "slurmctld.log")

    # Every job but `all` went through sbatch and completed there.
    queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%k|%T|%b"], env=env, capture_output=True,
                           text=True)
    jobs = {line.split("|")[0]: line.split("|")[1:] for line in queue.stdout.splitlines()}
    expected = {"rule_synth", "rule_fid_weights", "rule_preflight", "rule_prepare", "rule_fid_stats", "rule_aggregate",
                "rule_figures", "rule_summary", "rule_claims"} | {f"rule_train_wildcards_{run}" for run in RUNS}
    assert set(jobs) == expected, queue.stdout + queue.stderr
    assert all(state == "COMPLETED" for state, _ in jobs.values()), queue.stdout
    for name in ("rule_fid_stats", "rule_preflight", *(f"rule_train_wildcards_{run}" for run in RUNS)):
        assert "gpu:1" in jobs[name][1], queue.stdout  # the GPU request reached SLURM
    for run in RUNS:  # ... and SLURM's CUDA_VISIBLE_DEVICES reached ocbench with-gpu
        log = (workdir / f"results/smoke/logs/train/{run}.log").read_text()
        assert "ocbench: running on GPU" in log, log

    # The same outputs as a local run of this DAG: the local executor finds nothing to do ...
    local = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                            str(workdir), "--cores", "1", "--configfile", str(SMOKE), "--config", RUN_CONFIG,
                            "-n"], env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0 and "Nothing to be done" in local.stdout + local.stderr, local.stdout
    # ... and what a user checks is there: runs x epochs of metrics, every figure, the summary.
    with open(workdir / "results/smoke/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(RUNS) * EPOCHS and {r["run"] for r in rows} == set(RUNS)
    for run in RUNS:
        assert sorted(int(r["epoch"]) for r in rows if r["run"] == run) == list(range(1, EPOCHS + 1))
    from pypdf import PdfReader

    for n in range(2, 8):
        with Image.open(workdir / f"figures/smoke/fig{n}.png") as im:
            im.verify()
        assert len(PdfReader(workdir / f"figures/smoke/fig{n}.pdf").pages) >= 1
    summary = (workdir / "results/smoke/summary.md").read_text()
    assert all(run in summary for run in RUNS), summary
    claims = (workdir / "results/smoke/claims.md").read_text()
    assert "DCGAN_OCT" in claims and "one seed" in claims, claims
