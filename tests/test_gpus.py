"""GPU slots for concurrent jobs, with a pretend list of devices (no GPU needed)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("ocbench"))
REPORT = "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], time.time(), flush=True); " \
         "time.sleep(float(sys.argv[1])); print(time.time(), flush=True)"


def start(lock_dir, devices, seconds, runs_per_gpu=1):
    return subprocess.Popen(
        [EXE, "with-gpu", "--devices", devices, "--runs-per-gpu", str(runs_per_gpu), "--lock-dir",
         str(lock_dir), "--", sys.executable, "-c", REPORT, str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first, last = out.split("\n")[:2]
    device, began = first.split()
    return device, float(began), float(last), err


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    jobs = [start(tmp_path, "0,1,2", 3) for _ in range(3)]
    results = [finish(j) for j in jobs]
    assert sorted(r[0] for r in results) == ["0", "1", "2"]
    # They ran at the same time: each began before any ended.
    assert max(r[1] for r in results) < min(r[2] for r in results)


def test_more_jobs_than_slots_wait(tmp_path):
    first = start(tmp_path, "0", 2)
    time.sleep(1.0)
    second = start(tmp_path, "0", 0)
    a, b = finish(first), finish(second)
    assert a[0] == b[0] == "0"
    assert b[1] >= a[2]  # the second began only after the first had ended
    assert "slots busy; waiting" in b[3]


def test_several_runs_share_a_gpu_when_configured(tmp_path):
    jobs = [start(tmp_path, "0,1", 3, runs_per_gpu=2) for _ in range(4)]
    results = [finish(j) for j in jobs]
    assert sorted(r[0] for r in results) == ["0", "0", "1", "1"]  # spread before sharing
    assert max(r[1] for r in results) < min(r[2] for r in results)


def test_a_killed_jobs_slot_is_freed(tmp_path):
    victim = start(tmp_path, "0", 600)
    assert victim.stdout.readline().split()[0] == "0"  # it holds the only slot
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    t0 = time.time()
    device, began, _, err = finish(start(tmp_path, "0", 0))
    assert device == "0" and began - t0 < 5 and "waiting" not in err


def test_no_devices_runs_the_command_unchanged(tmp_path):
    proc = subprocess.run([EXE, "with-gpu", "--devices", "", "--lock-dir", str(tmp_path), "--",
                           sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if k != "CUDA_VISIBLE_DEVICES"})
    assert proc.returncode == 0 and proc.stdout.strip() == "None"


def test_inside_a_slurm_job_slurm_has_chosen_the_gpu(tmp_path):
    env = {**os.environ, "SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0"}
    holder = start(tmp_path, "0", 600)  # another job holds this machine's slot for "GPU 0"
    try:
        assert holder.stdout.readline().split()[0] == "0"
        proc = subprocess.run([EXE, "with-gpu", "--lock-dir", str(tmp_path), "--", sys.executable, "-c",
                               "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "0" and "waiting" not in proc.stderr
        assert "running on GPU 0 (chosen by SLURM)" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
