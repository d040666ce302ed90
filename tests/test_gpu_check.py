"""`make gpu-check`'s script, run here as its CPU dry run (`make gpu-check-cpu`): every step it will
take on a lent GPU executes at smoke size, so the script never reaches a GPU unrun."""

import json
import subprocess
import sys

from conftest import REPO, checkout_env


def test_the_gpu_check_runs_every_step_at_smoke_size(tmp_path):
    out = tmp_path / "gpu-check"
    proc = subprocess.run([sys.executable, "-m", "ocbench.bench.gpu_check", "--cpu", "--out", str(out)],
                          cwd=REPO, env=checkout_env(), capture_output=True, text=True, timeout=1800)
    report = json.loads((out / "gpu-check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    failed = {n: s["tail"][-800:] for n, s in steps.items() if s["status"] not in ("ok", "skipped")}
    assert proc.returncode == 0 and report["ok"] and not failed, (proc.stdout, failed)
    assert list(steps) == ["environment", "install", "data: data synth", "data: data prepare", "data: fid weights",
                           "data: fid stats", "preflight", "preflight fast", "gpu tests", "train: dcgan_baseline_s0",
                           "protocol: eager", "protocol: fastest"]
    assert steps["preflight"]["result"]["ok"] and steps["preflight fast"]["result"]["ok"]
    assert steps["train: dcgan_baseline_s0"]["result"] == {"killed_after_checkpoint": True, "resumed": True}
    assert "skipped" in steps["gpu tests"]["tail"]  # the CUDA-graph test, which needs a GPU
    assert steps["protocol: fastest"]["result"]["speed_options"]["channels_last"] is True
    rows = (out / "gpu-check.md").read_text()
    assert rows.count("\n| ") == len(steps) + 1 and "| preflight | ok |" in rows  # the header and a row a step
