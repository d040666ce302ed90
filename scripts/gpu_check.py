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

Each step runs in a process group of its own under its limit in PLAN, and every limit is cut from
one overall deadline (DEADLINE_S, under the 600 s one command may run on a lent GPU machine): a
hang costs that step, not the budget, and the results of the steps done reach $OUT whatever stops
the run. $OUT/gpu-check.json and $OUT/gpu-check.md (rows for BENCHMARKS.md) are rewritten as each
step starts and ends; a SIGTERM, SIGINT or SIGHUP kills the running step's whole group and writes
them once more. `--cpu` (`make gpu-check-cpu`, run by the test suite) executes the same steps at
smoke size on a CPU, so the script never ships unrun: there the "GPU" tests skip, the fast preflight
and protocol use channels_last (compile takes minutes on a CPU, CUDA graphs need a GPU) and one GAN
trains.

    python3 scripts/gpu_check.py --out $OUT          # on the GPU machine (make gpu-check)
    python3 scripts/gpu_check.py --out DIR --cpu     # the dry run here (make gpu-check-cpu)
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's ocbench, installed or not
from ocbench.formats import atomic_write  # noqa: E402  (standard library only, as this script must be)

WHEELS = REPO / ".whl"
NEEDED_MODULES = ("pytorch_fid", "jsonschema", "pytest")  # what a GPU image with torch may lack

# Per step, in the order `main` runs them on a GPU (a step that runs several times is listed once
# a run), its limit in seconds on one H100/H200: guesses until a GPU has run them (BENCHMARKS.md gets
# the measured seconds). They add up to at most DEADLINE_S (tests/test_gpu_check.py sums them), and
# every step also stops at that deadline. The dry run proves the steps, not the speed: its limits
# and deadline are CPU_SCALE times longer, for a shared 2-core machine.
DEADLINE_S = 540
GANS = ["dcgan", "lsgan", "wgan"]
PLAN = {"environment": 15, "install": 30,
        "data: data synth": 25, "data: data prepare": 25, "data: fid weights": 15, "data: fid stats": 25,
        "preflight": 75, "preflight fast": 90, "gpu tests": 40,
        **{f"train: {gan}_baseline_s0": 35 for gan in GANS},
        "protocol: eager": 45, "protocol: fastest": 45}
CPU_SCALE = 4
# The speed options compile per network: two GANs' baseline and OCT show them within their limits.
FAST_CASES = ["--set", "run.gans=[dcgan, wgan]", "--set", "run.variants=[baseline, oct]"]
# The protocol's per-epoch evaluation at 2,048 samples: its time per image is what the projection
# scales to metrics.fid_samples; 10,000 samples for 15 cases would not fit the step.
PROTOCOL_FID_SAMPLES = ["--set", "metrics.fid_samples=2048"]

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
        self.started = time.monotonic()
        self.deadline = self.started + DEADLINE_S * (CPU_SCALE if cpu else 1)
        self.running: subprocess.Popen | None = None  # the process whose group a signal kills
        self.interrupted = ""  # the signal that stopped the run

    # steps ----------------------------------------------------------------------------------------
    def begin(self, name: str, command: str) -> Step | None:
        """A new step `name` with its limit (PLAN's, cut to what is left before the deadline), or
        None when no time is left (then it is recorded as skipped)."""
        limit = max(0.0, min(PLAN[name] * (CPU_SCALE if self.cpu else 1), self.deadline - time.monotonic()))
        step = Step(name, command, round(limit, 1))
        self.steps.append(step)
        if limit <= 0:
            step.status, step.tail = "skipped", f"no time left before the {self.deadline - self.started:.0f} s deadline"
        self.write_report()
        return step if limit > 0 else None

    def end(self, step: Step, started: float) -> Step:
        step.seconds = round(time.monotonic() - started, 1)
        self.write_report()
        print(f"[gpu-check] {step.name}: {step.status} in {step.seconds:.1f} s (limit {step.limit_s:g} s)", flush=True)
        return step

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """`argv` in a process group of its own (killed whole: ocbench starts workers)."""
        self.running = subprocess.Popen(argv, cwd=REPO, env=self.env, start_new_session=True, **kw)
        return self.running

    def execute(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """(exit code, None when killed at `timeout` s; output) of `argv`."""
        proc = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            return proc.returncode, output
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return None, proc.communicate()[0]
        finally:
            self.running = None

    def run(self, name: str, argv: list[str]) -> Step:
        """`argv` as the step `name`: ok, failed, or timed out at its limit."""
        started = time.monotonic()
        step = self.begin(name, " ".join(shlex.quote(a) for a in argv))
        if step is None:
            return self.steps[-1]
        code, output = self.execute(argv, step.limit_s)
        step.status = "timed out" if code is None else "ok" if code == 0 else "failed"
        step.tail = output[-3000:]
        return self.end(step, started)

    def ocbench(self, name: str, *args: str) -> Step:
        return self.run(name, [sys.executable, "-m", "ocbench", *args])

    def handle_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.stop)

    def stop(self, signum: int, frame=None) -> None:
        """SIGTERM, SIGINT, SIGHUP: the running step's group killed, the report written, exit 128 + n."""
        self.interrupted = signal.Signals(signum).name
        if self.running is not None:
            kill_group(self.running)
        for step in self.steps:
            if step.status == "not run":
                step.status, step.tail = "interrupted", f"[gpu-check] stopped by {self.interrupted}"
        self.write_report()
        print(f"[gpu-check] stopped by {self.interrupted}; what ran is in {self.out / 'gpu-check.json'}", flush=True)
        os._exit(128 + signum)  # not SystemExit: it could be caught inside a step's wait

    # the steps --------------------------------------------------------------------------------------
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
        wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
        if missing and wheels:
            self.run("install", [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                                 "--target", str(self.site), *wheels])
            return
        step = self.begin("install", "")
        if step is not None:
            step.status, step.tail = ("skipped", "nothing to install: " + ", ".join(NEEDED_MODULES) + " import here") \
                if not missing else ("failed", f"missing {', '.join(missing)} and no wheels in {WHEELS}: run "
                                               "`make gpu-wheels` where PyPI is reachable and carry .whl")
            self.end(step, time.monotonic())

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
        every iteration), then rerun as the workflow reruns it; both within the step's limit."""
        one_epoch = ["--set", "train.epochs=1"] + ([] if self.cpu else ["--set", "metrics.fid_samples=2048"])
        for gan in GANS[:1] if self.cpu else GANS:
            run_id = f"{gan}_baseline_s0"
            argv = [sys.executable, "-m", "ocbench", "train", *config, *one_epoch, "--run", run_id]
            started = time.monotonic()
            step = self.begin(f"train: {run_id}", " ".join(shlex.quote(a) for a in argv))
            if step is None:
                continue
            checkpoint = self.work / "results" / "gpu-check" / "state" / run_id / "checkpoint.pt"
            killed = self.kill_after_checkpoint([*argv, "--set", "train.checkpoint_minutes=1.0e-9"], checkpoint,
                                                step.limit_s / 2)
            code, output = self.execute(argv, step.limit_s - (time.monotonic() - started))
            step.status, step.tail = "timed out" if code is None else "ok" if code == 0 else "failed", output[-3000:]
            step.result = {"killed_after_checkpoint": killed, "resumed": "resuming at epoch" in output}
            if step.status == "ok" and not (killed and step.result["resumed"]):
                step.status = "failed"
                step.tail += f"\n[gpu-check] expected a kill after the first checkpoint and a resume: {step.result}"
            self.end(step, started)

    def kill_after_checkpoint(self, argv: list[str], checkpoint: Path, limit_s: float) -> bool:
        """Whether `argv` wrote `checkpoint` within `limit_s` s, then its group SIGKILLed."""
        proc = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + limit_s
        while proc.poll() is None and not checkpoint.exists() and time.monotonic() < end:
            time.sleep(0.05)
        found = checkpoint.exists() and proc.poll() is None
        kill_group(proc)
        proc.wait()
        self.running = None
        return found

    def protocol(self, config: list[str]) -> None:
        short = ["--no-authors", "--projected-images", "202599"] + (
            ["--iterations", "2", "--warmup", "1", "--set", "run.variants=[baseline]"] if self.cpu
            else ["--iterations", "30", "--warmup", "10", *PROTOCOL_FID_SAMPLES])
        fastest = ["--set", "train.channels_last=true"] if self.cpu else [
            "--set", "train.compile=true", "--set", "train.cuda_graphs=true", *FAST_CASES]
        for name, extra in (("protocol: eager", []), ("protocol: fastest", fastest)):
            path = self.out / f"protocol_{name.split(': ')[1]}.json"
            step = self.ocbench(name, "bench", "protocol", *config, *short, *extra, "--json", str(path))
            if path.exists():
                step.result = json.loads(path.read_text())
                self.write_report()

    # ----------------------------------------------------------------------------------------------
    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def report(self) -> dict:
        done = all(s.status != "not run" for s in self.steps) and len(self.steps) == len(self.plan())
        environment = next((s.result for s in self.steps if s.name == "environment"), {})
        return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": "cpu dry run" if self.cpu else "gpu",
                "ok": done and all(s.status in ("ok", "skipped") for s in self.steps) and not self.interrupted,
                "complete": done and not self.interrupted, "interrupted": self.interrupted or None,
                "seconds": round(time.monotonic() - self.started, 1), "deadline_s": round(self.deadline - self.started),
                "environment": environment, "steps": [asdict(s) for s in self.steps]}

    def plan(self) -> list[str]:
        """The steps this mode runs (the dry run trains one GAN)."""
        return [n for n in PLAN if not (self.cpu and n.startswith("train: ") and not n.startswith("train: dcgan"))]

    def write_report(self) -> None:
        """gpu-check.json and gpu-check.md as things stand, each replaced whole (atomic_write)."""
        report = self.report()
        atomic_write(self.out / "gpu-check.json", json.dumps(report, indent=2) + "\n")
        atomic_write(self.out / "gpu-check.md", markdown(report))

    def main(self) -> bool:
        self.out.mkdir(parents=True, exist_ok=True)
        self.handle_signals()
        self.environment()
        self.install()
        config = self.config_args()
        self.data(config)
        self.preflight(config)
        self.gpu_tests()
        self.train(config)
        self.protocol(config)
        report = self.report()
        self.write_report()
        print(f"[gpu-check] {'all steps passed' if report['ok'] else 'FAILED'} in {report['seconds']:.0f} s; "
              f"{self.out / 'gpu-check.json'}, {self.out / 'gpu-check.md'}")
        return report["ok"]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to `proc`'s whole process group (it leads one: start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def markdown(report: dict) -> str:
    """The rows BENCHMARKS.md takes: the machine, then one row per step with its headline number."""
    env = report["environment"]
    state = "" if report["complete"] else (f", stopped by {report['interrupted']}" if report["interrupted"]
                                           else ", still running or cut off")
    lines = [f"gpu-check ({report['mode']}), {report['date']}: {env.get('gpu', 'no GPU')}, driver "
             f"{env.get('driver')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; "
             f"{report['seconds']:.0f} s of the {report['deadline_s']} s deadline{state}", "",
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
