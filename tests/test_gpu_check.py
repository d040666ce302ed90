"""`make gpu-check`'s script, run here as its CPU dry run (`make gpu-check-cpu`): every step it will
take on a lent GPU executes at smoke size, so the script never reaches a GPU unrun. And what keeps it
inside one call of a lent machine: one deadline its steps' limits add up to, a step killed with its
children at its limit or at a signal, and the report on disk after every step."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, checkout_env

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402  (scripts/gpu_check.py, an operations script outside the package)


def test_the_gpu_check_runs_every_step_at_smoke_size(tmp_path):
    out = tmp_path / "gpu-check"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu", "--out", str(out)],
                          cwd=REPO, env=checkout_env(), capture_output=True, text=True, timeout=1800)
    report = json.loads((out / "gpu-check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    failed = {n: s["tail"][-800:] for n, s in steps.items() if s["status"] not in ("ok", "skipped")}
    assert proc.returncode == 0 and report["ok"] and report["complete"] and not failed, (proc.stdout, failed)
    assert list(steps) == ["environment", "install", "data: data synth", "data: data prepare", "data: fid weights",
                           "data: fid stats", "preflight", "preflight fast", "gpu tests", "train: dcgan_baseline_s0",
                           "protocol: eager", "protocol: fastest"]
    assert steps["preflight"]["result"]["ok"] and steps["preflight fast"]["result"]["ok"]
    assert steps["train: dcgan_baseline_s0"]["result"] == {"killed_after_checkpoint": True, "resumed": True}
    assert "skipped" in steps["gpu tests"]["tail"]  # the CUDA-graph test, which needs a GPU
    assert steps["protocol: fastest"]["result"]["speed_options"]["channels_last"] is True
    rows = (out / "gpu-check.md").read_text()
    assert rows.count("\n| ") == len(steps) + 1 and "| preflight | ok |" in rows  # the header and a row a step


def test_the_gpu_steps_fit_one_call_of_a_lent_machine():
    """A lent GPU machine runs one command for at most 600 s: every step the GPU mode runs (each data
    command, each GAN's training, both protocols) has its limit in PLAN, and they add up to at most
    the deadline, itself under 540 s."""
    check = gpu_check.GpuCheck(REPO / "gpu-check-never-written", cpu=False, site=REPO)
    plan = check.plan()
    assert plan == list(gpu_check.PLAN)
    assert [n for n in plan if n.startswith("data: ")] == ["data: data synth", "data: data prepare",
                                                          "data: fid weights", "data: fid stats"]
    assert [n for n in plan if n.startswith("train: ")] == [f"train: {g}_baseline_s0" for g in ("dcgan", "lsgan", "wgan")]
    assert sum(gpu_check.PLAN.values()) <= gpu_check.DEADLINE_S <= 540


# A step that starts a child of its own and sleeps: both must be gone when the step is stopped.
SLEEPER = ("import subprocess, sys, time; child = subprocess.Popen(['sleep', '60']); "
           "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(60)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie awaiting its (killed) parent's reaper is gone in all but name
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_step_past_its_limit_is_killed_with_its_children_and_the_report_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "PLAN", {"sleeper": 1, "next": 5})
    check = gpu_check.GpuCheck(tmp_path, cpu=False, site=tmp_path)
    step = check.run("sleeper", [sys.executable, "-c", SLEEPER, str(tmp_path / "child")])
    child = int((tmp_path / "child").read_text())
    assert step.status == "timed out" and step.seconds < 10
    assert not alive(child)
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["timed out"] and not report["complete"]
    check.deadline = time.monotonic()  # the overall deadline passed: later steps do not start
    assert check.run("next", [sys.executable, "-c", "print(1)"]).status == "skipped"


def test_a_signal_kills_the_running_step_with_its_children_and_keeps_the_report(tmp_path):
    script = (f"import sys; from pathlib import Path; sys.path.insert(0, {str(REPO / 'scripts')!r}); "
              "import gpu_check as g; "
              "g.PLAN = {'first': 30, 'sleeper': 60}; out = Path(sys.argv[1]); "
              "c = g.GpuCheck(out, cpu=False, site=out); c.handle_signals(); "
              f"c.run('first', [sys.executable, '-c', 'print(1)']); "
              f"c.run('sleeper', [sys.executable, '-c', {SLEEPER!r}, str(out / 'child')])")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=checkout_env())
    report = tmp_path / "gpu-check.json"
    deadline = time.monotonic() + 60
    child = tmp_path / "child"
    while time.monotonic() < deadline and not (child.exists() and child.read_text()):  # the child's pid in it
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    report = json.loads(report.read_text())
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("first", "ok"), ("sleeper", "interrupted")]
    assert report["interrupted"] == "SIGTERM" and not report["complete"]
    assert not alive(int(child.read_text()))
