"""`make gpu-check`: everything a GPU must show, as one command with a time limit per step.

A lent GPU machine has a few minutes, no internet and maybe not our packages, so this runs from the
repository root with the standard library and the machine's torch, and spends the minutes in order
of value:

    environment   torch, CUDA, cuDNN, the GPU, the driver
    install       what the machine lacks (pytorch-fid, jsonschema, pytest) from the wheels that
                  `make gpu-wheels` carried in .whl/, into a folder of $OUT's parent (no internet)
    data          the synthetic CelebA of bench-gpu.yaml, prepared; placeholder Inception; statistics
    preflight     `ocbench preflight`, eagerly, then with the speed options (compile + cuda_graphs)
    gpu tests     the test modules whose GPU tests are skipped on a CPU (the CUDA-graph step)
    train         per GAN, one epoch of `ocbench train` on the default path (`train.device: auto`),
                  SIGKILLed after its first checkpoint and rerun: it must resume and finish
    protocol      a short `bench protocol`, eager and with the fastest option

Each step runs in a process of its own under its own time limit (a hang costs that step, not the
budget), and the results go to $OUT/gpu-check.json and $OUT/gpu-check.md (rows for BENCHMARKS.md).
`--cpu` (`make gpu-check-cpu`, run by the test suite) executes the same steps at smoke size on a
CPU, so the script never ships unrun: there the "GPU" tests skip, the fast preflight and protocol
use channels_last (compile takes minutes on a CPU, CUDA graphs need a GPU) and one GAN trains.

    python -m ocbench.bench.gpu_check --out $OUT          # on the GPU machine (make gpu-check)
    python -m ocbench.bench.gpu_check --out DIR --cpu     # the dry run here (make gpu-check-cpu)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".whl"
NEEDED_MODULES = ("pytorch_fid", "jsonschema", "pytest")  # what a GPU image with torch may lack

# Per step, seconds: on one H100/H200 these add up to 9 minutes (a guess until a GPU has run it:
# BENCHMARKS.md gets the measured seconds). The dry run proves the steps, not the speed: its limits
# are CPU_SCALE times longer, for a shared 2-core machine.
LIMITS = {"environment": 20, "install": 30, "data": 45, "preflight": 75, "preflight fast": 90,
          "gpu tests": 45, "train": 35, "protocol": 65}
CPU_SCALE = 4
# The speed options compile per network: two GANs' baseline and OCT show them within their limits.
FAST_CASES = ["--set", "run.gans=[dcgan, wgan]", "--set", "run.variants=[baseline, oct]"]

ENVIRONMENT = """
import json, shutil, subprocess, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if torch.backends.cudnn.is_available():
    info["cudnn"] = torch.backends.cudnn.version()
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
if shutil.which("nvidia-smi"):
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10)
    info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
print(json.dumps(info))
"""


@dataclass
class Step:
    name: str
    command: str
    limit_s: float
    seconds: float = 0.0
    status: str = "not run"  # ok | failed | timed out | skipped
    tail: str = ""
    result: dict = field(default_factory=dict)


class GpuCheck:
    def __init__(self, out: Path, cpu: bool, site: Path):
        self.out, self.cpu, self.site = out, cpu, site
        sys.path.insert(0, str(site))  # wheels a previous run installed count as installed
        self.work = out / "work"
        self.steps: list[Step] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), str(site), os.environ.get("PYTHONPATH")]))}

    def run(self, name: str, argv: list[str], limit_s: float | None = None, **kw) -> Step:
        """`argv` in a new process group, killed whole at the step's limit."""
        step = Step(name, " ".join(shlex.quote(a) for a in argv), limit_s or self.limit(name.split(":")[0]))
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, **kw)
        try:
            output, _ = proc.communicate(timeout=step.limit_s)
            step.status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            step.status = "timed out"
        step.seconds, step.tail = round(time.monotonic() - started, 1), output[-3000:]
        self.steps.append(step)
        print(f"[gpu-check] {step.name}: {step.status} in {step.seconds:.1f} s (limit {step.limit_s:g} s)", flush=True)
        return step

    def limit(self, name: str) -> float:
        return LIMITS[name] * (CPU_SCALE if self.cpu else 1)

    def ocbench(self, name: str, *args: str, limit_s: float | None = None) -> Step:
        return self.run(name, [sys.executable, "-m", "ocbench", *args], limit_s)

    # ----------------------------------------------------------------------------------------------
    def config_args(self) -> list[str]:
        """bench-gpu.yaml (paper.yaml's networks and sizes on 5,000 synthetic images) on a GPU; the
        smoke preset on the CPU; either way every file goes under $OUT/work."""
        preset = "smoke.yaml" if self.cpu else "bench-gpu.yaml"
        w = self.work
        overlay = {"name": "gpu-check",
                   "paths": {"results": str(w / "results"), "figures": str(w / "figures")},
                   "data": {"images": str(w / "data" / "img_align_celeba.zip"),
                            "partition": str(w / "data" / "list_eval_partition.txt"),
                            "prepared": str(w / "data" / "celeba128.npy")},
                   "metrics": {"stats": str(w / "data" / "fid_stats.npz"), "weights_dir": str(w / "weights")}}
        if self.cpu:  # one GAN shows every step's code; the others only change numbers
            overlay["run"] = {"gans": ["dcgan"], "variants": ["baseline", "oct"]}
        self.work.mkdir(parents=True, exist_ok=True)
        (w / "overlay.json").write_text(json.dumps(overlay))  # JSON is YAML
        return ["--config", str(REPO / "workflow" / "config" / preset), "--config", str(w / "overlay.json")]

    def environment(self) -> None:
        step = self.run("environment", [sys.executable, "-c", ENVIRONMENT])
        if step.status == "ok":
            step.result = json.loads(step.tail.strip().splitlines()[-1])

    def install(self) -> None:
        missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
        if not missing:
            self.steps.append(Step("install", "", LIMITS["install"], status="skipped",
                                   tail="nothing to install: " + ", ".join(NEEDED_MODULES) + " import here"))
            return
        wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
        if not wheels:
            self.steps.append(Step("install", "", LIMITS["install"], status="failed",
                                   tail=f"missing {', '.join(missing)} and no wheels in {WHEELS}: run `make gpu-wheels` "
                                        f"where PyPI is reachable and carry .whl"))
            return
        self.run("install", [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                             "--target", str(self.site), *wheels])

    def data(self, config: list[str]) -> None:
        for command in (["data", "synth"], ["data", "prepare"], ["fid", "weights"], ["fid", "stats"]):
            if self.ocbench(f"data: {' '.join(command)}", *command, *config).status != "ok":
                return

    def preflight(self, config: list[str]) -> None:
        self.ocbench("preflight", "preflight", *config, "--json", str(self.out / "preflight.json"))
        fast = ["--set", "train.channels_last=true"] if self.cpu else [
            "--set", "train.compile=true", "--set", "train.cuda_graphs=true", *FAST_CASES]
        self.ocbench("preflight fast", "preflight", *config, *fast, "--json", str(self.out / "preflight_fast.json"))
        for name, path in (("preflight", "preflight.json"), ("preflight fast", "preflight_fast.json")):
            if (self.out / path).exists():
                self.step(name).result = json.loads((self.out / path).read_text())

    def gpu_tests(self) -> None:
        self.run("gpu tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_step.py", "-k", "cuda_graph", "-rs"])

    def train(self, config: list[str]) -> None:
        """Per GAN: one epoch, SIGKILLed once its first checkpoint is on disk (a checkpoint after
        every iteration), then rerun as the workflow reruns it."""
        gans = ["dcgan"] if self.cpu else ["dcgan", "lsgan", "wgan"]
        one_epoch = ["--set", "train.epochs=1"] + ([] if self.cpu else ["--set", "metrics.fid_samples=2048"])
        for gan in gans:
            run_id = f"{gan}_baseline_s0"
            argv = [sys.executable, "-m", "ocbench", "train", *config, *one_epoch, "--run", run_id]
            checkpoint = self.work / "results" / "gpu-check" / "state" / run_id / "checkpoint.pt"
            started = time.monotonic()
            killed = self.kill_after_checkpoint([*argv, "--set", "train.checkpoint_minutes=1.0e-9"], checkpoint,
                                                self.limit("train") / 2)
            step = self.run(f"train: {run_id}", argv, self.limit("train") - (time.monotonic() - started))
            resumed = "resuming at epoch" in step.tail
            step.result = {"killed_after_checkpoint": killed, "resumed": resumed}
            if step.status == "ok" and not (killed and resumed):
                step.status = "failed"
                step.tail += f"\n[gpu-check] expected a kill after the first checkpoint and a resume: {step.result}"

    def kill_after_checkpoint(self, argv: list[str], checkpoint: Path, limit_s: float) -> bool:
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + limit_s
        while proc.poll() is None and not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = checkpoint.exists() and proc.poll() is None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return found

    def protocol(self, config: list[str]) -> None:
        short = ["--no-authors", "--projected-images", "202599"] + (
            ["--iterations", "2", "--warmup", "1", "--set", "run.variants=[baseline]"] if self.cpu else ["--iterations", "30", "--warmup", "10"])
        fastest = ["--set", "train.channels_last=true"] if self.cpu else [
            "--set", "train.compile=true", "--set", "train.cuda_graphs=true", *FAST_CASES]
        for name, extra in (("protocol: eager", []), ("protocol: fastest", fastest)):
            path = self.out / f"protocol_{name.split(': ')[1]}.json"
            step = self.ocbench(name, "bench", "protocol", *config, *short, *extra, "--json", str(path))
            if path.exists():
                step.result = json.loads(path.read_text())

    # ----------------------------------------------------------------------------------------------
    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def main(self) -> bool:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.environment()
        self.install()
        config = self.config_args()
        self.data(config)
        self.preflight(config)
        self.gpu_tests()
        self.train(config)
        self.protocol(config)
        ok = all(s.status in ("ok", "skipped") for s in self.steps)
        report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": "cpu dry run" if self.cpu else "gpu",
                  "ok": ok, "seconds": round(time.monotonic() - started, 1),
                  "environment": self.step("environment").result, "steps": [asdict(s) for s in self.steps]}
        (self.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.out / "gpu-check.md").write_text(markdown(report))
        print(f"[gpu-check] {'all steps passed' if ok else 'FAILED'} in {report['seconds']:.0f} s; "
              f"{self.out / 'gpu-check.json'}, {self.out / 'gpu-check.md'}")
        return ok


def markdown(report: dict) -> str:
    """The rows BENCHMARKS.md takes: the machine, then one row per step with its headline number."""
    env = report["environment"]
    lines = [f"gpu-check ({report['mode']}), {report['date']}: {env.get('gpu', 'no GPU')}, driver "
             f"{env.get('driver')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; "
             f"{report['seconds']:.0f} s in all", "",
             "| step | status | s (limit) | what it showed |", "|---|---|---:|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} ({s['limit_s']:g}) | {headline(s)} |")
    return "\n".join(lines) + "\n"


def headline(step: dict) -> str:
    r = step["result"]
    if "checks" in r:  # a preflight report
        failed = [c["name"] for c in r["checks"] if c["status"] == "✘"]
        hours = r.get("projection", {}).get("device_hours")
        return (f"{len(r['checks']) - len(failed)}/{len(r['checks'])} checks passed"
                + (f", failed: {', '.join(failed)}" if failed else "")
                + (f"; protocol {hours:.2f} device-hours" if hours is not None else ""))
    if "killed_after_checkpoint" in r:
        return f"killed after its first checkpoint: {r['killed_after_checkpoint']}, resumed: {r['resumed']}"
    if "total" in r:  # bench protocol's JSON
        return f"protocol {r['total'].get('ours_device_h', float('nan')):.2f} device-hours projected"
    last = step["tail"].strip().splitlines()[-1:] or [""]
    return last[0][:160].replace("|", "/")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for gpu-check.json, gpu-check.md and the work")
    p.add_argument("--cpu", action="store_true", help="the dry run at smoke size on a CPU")
    p.add_argument("--site", type=Path, default=None, help="where to install missing wheels (default: OUT/../site)")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    out = args.out.resolve()
    sys.exit(0 if GpuCheck(out, args.cpu, (args.site or out.parent / "gpu-check-site").resolve()).main() else 1)
