"""`ocbench preflight`: a few minutes on the user's machine that prove the next hours will work.

A reproduction is a day of GPU time; a bug on the GPU path, a driver that CUDA cannot use or a
truncated array would cost that day. Preflight runs what training will run, briefly, and prints one
table of checks, each ✔ (passed), ✘ (failed: with the fix) or – (not checked yet, e.g. data the
workflow has still to download), then the projected time of the configured protocol. The workflow
runs it before any training job (rule `preflight`), so the DAG stops in minutes with the reason.

    environment  torch, CUDA, cuDNN, the driver, the GPU and its memory, the precision in force,
                 free disk for the protocol's outputs
    data         CelebA's files with their checksums, the prepared array's shape and count,
                 the Inception weights (official or placeholder)
    training     per configured (GAN, variant), on random images, with training's own code (its
                 run, epoch loop and checkpoint format): an epoch of k batches (with CUDA graphs,
                 until both halves replay), losses finite; the speed options (compile, cuda_graphs,
                 channels_last, bf16) against eager; the checkpoint at the epoch's end resumed
    evaluation   the FID of a few hundred generated images on the device and on the CPU, equal to
                 1e-4 relative (Inception runs in full fp32 everywhere)
    projection   the protocol's time from the measured rates (`bench protocol`'s arithmetic); on a
                 machine without a GPU, a config that did not ask for the CPU is stopped here

How the training checks compare. On a GPU, two runs of the same step differ in their last bits:
cuDNN's autotuner, its atomics and CUDA's bilinear-upsampling backward sum in an order that changes
from call to call, and compile, CUDA graphs and channels_last run other kernels. GAN training
amplifies such a difference: Adam turns a last-bit change of a near-zero gradient into a step of
up to lr, and G and D feed each other, so after six chained iterations weights differ by ~1e-3 on a
working machine. So every comparison here is of ONE iteration from ONE state:

    resume         the uninterrupted run takes the iteration after its checkpoint; a new trainer
                   loads the checkpoint (through bytes, as train writes and reads it) and takes it too
    speed options  eager and the fast trainer each warm up; eager's state is copied into the fast
                   trainer in place (its CUDA graphs keep their tensors) and both take the iteration

and compares what it left: bit for bit, what no arithmetic may change (where the run stands, its
random streams, beta, BatchNorm's counters); within a tolerance, the losses (|a - b| <= rel |a| +
abs) and, for each group of tensors (G's and D's weights, and their BatchNorm statistics), how far
the two updates differ against the size of the update (||a - b|| / ||a - before||).

    fp32   losses rel 1e-3 + abs 1e-6, updates 0.1 of their size. Measured under a GPU's noise on the
           CPU (tests/gpu_noise.py; every GAN and variant of paper.yaml and stabilizers.yaml at width
           4): losses differ by up to 9e-4 (WGAN's, whose two terms nearly cancel), updates by up to
           1.3e-2. The ResNet at width 16, whose hinge losses nearly cancel too, differs by up to
           1e-2 and 6e-2 from its own noise, which the widening below covers. A defect is of
           another order: a resume without Adam's state moves updates by more than their size, a
           lost statistics update by exactly its size, another z, batch or beta moves the losses by
           1e-2 and more.
    bf16   losses rel 5e-2 + abs 1e-2, updates 0.6 of their size: bf16 keeps 8 bits of each
           gradient, so Adam's step of a small gradient can turn (measured: losses 6e-2 apart where
           WGAN's nearly cancel, updates 0.3).
    deterministic (train.deterministic): resume bit for bit.

Each tolerance is widened to NOISE_MULTIPLE times the noise this machine shows when it takes the
same iteration twice from the same state (rewound in place between, not through the checkpoint
code under test), so a GPU noisier than the harness still passes what is noise; the table prints
both. The speed options are compared with TF32 off on both sides (`strict_fp32`): TF32 rounds each
product to 10 bits in whichever kernel runs, a precision choice applied alike to every path, not
part of what the check proves. Training and its timing keep the precision in force.

On the CPU (the smoke and mini presets) it runs reduced: one variant per GAN, epochs of two batches,
no device-vs-CPU FID (they are the same device).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ocbench import fid
from ocbench.config import Config, TrainConfig, run_id
from ocbench.data import CELEBA_COUNTS, CELEBA_PARTITION, CELEBA_ZIP, file_md5
from ocbench.device import cpu_name, nvidia_driver, resolve_device, sync
from ocbench.errors import OcbenchError, one_line
from ocbench.batches import batch_gatherer, load_prepared
from ocbench.formats import atomic_write, to_uint8
from ocbench.projection import Case, Timing, evaluations, project
from ocbench.sample import latent_sampler, latents
from ocbench.tensorboard import NoLog
from ocbench.train import (CudaGraphStep, Position, build_networks, build_run, checkpoint_state,
                           configure_backends, restore, run_epoch)

PASS, FAIL, SKIP = "✔", "✘", "–"
SPEED_OPTIONS = ("compile", "cuda_graphs", "channels_last", "bf16")
FID_RTOL = 1e-4
NOISE_MULTIPLE = 10  # a tolerance is at least this many times the machine's own noise (module docstring)
# Timing: at least TIMED_SECONDS of iterations, within (at least, at most) iterations on a CPU and a GPU.
TIMED_SECONDS = 1.0
TIMED_ITERATIONS = {False: (3, 50), True: (20, 200)}


@dataclass
class Check:
    section: str
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    fix: str = ""


@dataclass
class Report:
    config: str
    device: str = "none"
    checks: list[Check] = field(default_factory=list)
    projection: dict = field(default_factory=dict)

    def add(self, section: str, name: str, ok: bool | None, detail: str, fix: str = "") -> None:
        status = SKIP if ok is None else PASS if ok else FAIL
        self.checks.append(Check(section, name, status, detail, "" if ok else fix))

    def add_error(self, section: str, name: str, exc: OcbenchError) -> None:
        """A failed check from ocbench's own error, whose one line reads "problem; fix"."""
        problem, _, fix = str(exc).partition("; ")
        self.add(section, name, False, problem, fix or problem)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"ocbench preflight: config {self.config} on {self.device}"]
        for c in self.checks:
            lines.append(f"  {c.status} {c.section:<11} {c.name:<{width}}  {c.detail}"
                         + (f"\n      fix: {c.fix}" if c.fix else ""))
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} not checked")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"config": self.config, "device": self.device, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "ok": not self.failed, "checks": [dataclasses.asdict(c) for c in self.checks],
                "projection": self.projection}


def preflight(cfg: Config, iterations: int | None = None, fid_images: int | None = None) -> Report:
    """Every check of the module docstring, in order; a check that cannot run says why."""
    report = Report(cfg.name)
    device = check_environment(cfg, report)
    check_data(cfg, report)
    if device is None:
        return report
    on_gpu = device.type == "cuda"
    rates = check_training(cfg, device, iterations or (3 if on_gpu else 2), report)
    seconds_per_image = check_evaluation(cfg, device, fid_images or (256 if on_gpu else 8), report)
    if rates:
        check_projection(cfg, device, rates, seconds_per_image, report)
    return report


# --------------------------------------------------------------------------------------------------
# environment


def output_bytes(cfg: Config) -> int:
    """Disk the protocol's runs will write: per run two checkpoints (G, D and Adam's two moments
    each) and the generator snapshots, a sample grid per epoch; plus the prepared array when it is
    not there yet (the zip is counted by fetch)."""
    from ocbench.nn import discriminator, generator

    train_cfg, total = cfg.train, 0
    for gan_name in cfg.run.gans:
        for variant_name in cfg.run.variants:
            alpha = cfg.variants[variant_name].alpha
            with torch.device("meta"):  # shapes only: no memory, no init
                g = sum(p.numel() for p in generator(train_cfg.arch, alpha, train_cfg.g_width,
                                                     train_cfg.latent_dim).parameters()) * 4
                d = sum(p.numel() for p in discriminator(train_cfg.arch, alpha, train_cfg.d_width).parameters()) * 4
            snapshots = len(train_cfg.snapshot_kept)
            total += len(cfg.run.seeds) * (2 * 3 * (g + d) + snapshots * g + train_cfg.epochs * 200_000)
    if not Path(cfg.data.prepared).exists():
        total += expected_images(cfg) * cfg.data.image_size ** 2 * 3
    return total


def free_bytes(path: Path) -> int:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_environment(cfg: Config, report: Report) -> torch.device | None:
    train_cfg = cfg.train
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    cudnn = f", cuDNN {v // 10000}.{v // 100 % 100}.{v % 100}" if v else ""
    report.add("environment", "torch", True, f"{torch.__version__}, {cuda}{cudnn}")
    try:
        device = resolve_device(train_cfg.device)
        configure_backends(train_cfg, device)
    except OcbenchError as exc:
        report.add_error("environment", "device", exc)
        return None
    report.device = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report.device = f"{device} ({props.name})"
        report.add("environment", "device", True, f"{device}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                   f"driver {nvidia_driver()}")
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        report.add("environment", "precision", True,
                   f"training: {'bf16 autocast' if train_cfg.bf16 else 'fp32'} with cuDNN TF32 {tf32} for convolutions "
                   f"(torch's default), matmul TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}; "
                   f"Inception: full {fid.EVAL_PRECISION}")
    else:
        cpu = cpu_name()
        report.device = f"cpu ({cpu})"
        report.add("environment", "device", True, f"cpu: {cpu}, {torch.get_num_threads()} threads"
                   + ("" if train_cfg.device == "cpu" else "; no GPU found (see the projection)"))
        report.add("environment", "precision", True, f"training and Inception in {fid.EVAL_PRECISION}")
    need, free = output_bytes(cfg), free_bytes(cfg.results_dir)
    report.add("environment", "disk", free > need,
               f"{free / 1e9:.1f} GB free for {cfg.results_dir}, the protocol writes about {need / 1e9:.1f} GB",
               f"free {(need - free) / 1e9:.1f} GB more, or point paths.results (and data.prepared) elsewhere")
    return device


# --------------------------------------------------------------------------------------------------
# data


def expected_images(cfg: Config) -> int:
    """How many images the prepared array should hold (synthetic configs: what synth writes)."""
    if cfg.data.synthetic:
        return int(cfg.data.synthetic["n"])
    return CELEBA_COUNTS[cfg.data.split]


def check_file(report: Report, name: str, path: Path, md5: str, made_by: str) -> None:
    if not path.exists():
        report.add("data", name, None, f"{path} not there yet ({made_by} makes it)")
    elif path.is_dir():
        report.add("data", name, None, f"{path} is an extracted folder (checked by prepare)")
    else:
        got = file_md5(path)
        report.add("data", name, got == md5, f"{path}, md5 {got}",
                   f"expected md5 {md5}: delete {path} and rerun `ocbench data fetch`")


def check_data(cfg: Config, report: Report) -> None:
    d = cfg.data
    if d.synthetic:
        report.add("data", "images", True, f"synthetic CelebA ({d.synthetic['n']} images, seed {d.synthetic['seed']})")
    else:
        check_file(report, "images", Path(d.images), CELEBA_ZIP.md5, "`ocbench data fetch`")
        check_file(report, "partition", Path(d.partition), CELEBA_PARTITION.md5, "`ocbench data fetch`")
    prepared = Path(d.prepared)
    if not prepared.exists():
        report.add("data", "prepared", None, f"{prepared} not there yet (`ocbench data prepare` makes it)")
    else:
        try:
            array = load_prepared(prepared)
            want = (d.image_size, d.image_size, 3)
            count_ok = d.subset or len(array) == expected_images(cfg)
            ok = array.dtype == np.uint8 and array.shape[1:] == want and count_ok
            report.add("data", "prepared", ok, f"{prepared}: {array.shape[0]:,} x {array.shape[1:]} {array.dtype}"
                       + ("" if count_ok else f", not the {expected_images(cfg):,} of data.split={d.split}"),
                       "rebuild it with `ocbench data prepare` (or set data.subset: true for fewer images)")
        except OcbenchError as exc:
            report.add_error("data", "prepared", exc)
    try:
        weights = fid.locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
        kind = "official" if weights.official else "placeholder (FIDs not comparable with published ones)"
        report.add("data", "inception", True, f"{weights.path.name}, {kind}, sha256 {weights.sha256[:16]}...")
    except OcbenchError as exc:
        report.add_error("data", "inception", exc)


# --------------------------------------------------------------------------------------------------
# training


def random_images(n: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """n uint8 images N x H x W x 3, as the prepared array holds them, on the device as the default
    path places CelebA: the step's arithmetic, not the images, is what the checks look at."""
    rng = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=rng).to(device)


class NoCheckpoints:
    """Preflight's runs save nothing in the middle of an epoch (`run_epoch` asks `due()`)."""

    def due(self) -> bool:
        return False


class Trainer:
    """One run of a (GAN, variant), seed 0, as training builds it (`build_run`) on random images, and
    trained by training's own epoch loop (`run_epoch`: beta from the epoch, the shuffle from the data
    generator, the critic schedule, the data path), checkpointed and resumed in training's own
    format (`checkpoint_state`, `restore`). Epochs have `len(images) // batch_size` batches."""

    def __init__(self, cfg: Config, gan_name: str, variant_name: str, train_cfg: TrainConfig,
                 device: torch.device, images: torch.Tensor, graphs=None):
        run_cfg = dataclasses.replace(cfg, train=train_cfg)
        self.run = build_run(run_cfg, run_id(gan_name, variant_name, 0), device, images,
                             graphs() if graphs else None)
        self.position = Position()

    def epoch(self) -> tuple[float, float]:
        """The rest of the current epoch, then on to the next; returns its (G, D) mean losses."""
        run_epoch(self.run, self.position, NoLog(), NoCheckpoints(), show_progress=False)
        means = self.position.totals.means()
        self.position.next_epoch()
        return means

    def step(self) -> Step:
        """One iteration, the current epoch's next batch (its first after a checkpoint at an epoch's
        end: a G step whatever the critic schedule), and what it left behind."""
        before = self.position.batch
        run_epoch(dataclasses.replace(self.run, n_batches=before + 1), self.position, NoLog(), NoCheckpoints(),
                  show_progress=False)
        totals = self.position.totals
        return Step((float(totals.d_loss), float(totals.g_loss) if totals.g_steps else None), self.state_now(),
                    self.exact_state())

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Every floating tensor of G and D (weights, BatchNorm's statistics, spectral norm's vectors)."""
        return [(f"{net}.{name}", t) for net, module in (("G", self.run.G), ("D", self.run.D))
                for name, t in module.state_dict(keep_vars=True).items() if t.is_floating_point()]

    def exact_state(self) -> dict:
        """What must come back bit for bit after a checkpoint, whatever the device's arithmetic:
        where the run stands, its random streams, beta, BatchNorm's counters."""
        run, p = self.run, self.position
        counters = [t for module in (run.G, run.D) for t in module.state_dict().values() if not t.is_floating_point()]
        return {"position": (p.epoch, p.batch, p.iterations, p.g_updates, p.totals.g_steps, p.totals.d_steps),
                "perm": None if p.perm is None else p.perm.tolist(),
                "noise stream": run.noise_rng.get_state().tolist(), "data stream": run.data_rng.get_state().tolist(),
                "beta": None if run.beta is None else run.beta.tolist(), "counters": [t.tolist() for t in counters]}

    def steady(self) -> bool:
        """Whether every iteration now runs as training's later ones will (CUDA graphs: replays)."""
        return not isinstance(self.run.step, CudaGraphStep) or self.run.step.replaying

    def warm_up(self) -> list[tuple[float, float]]:
        """Whole epochs until the step is steady, at least one (cuDNN's autotuning, Adam's state,
        CUDA graphs' eager calls and captures), leaving an epoch after them; their mean losses."""
        means = [self.epoch()]
        while not self.steady() and self.position.epoch < self.run.cfg.train.epochs - 1:
            means.append(self.epoch())
        return means

    def state_now(self) -> dict[str, torch.Tensor]:
        """A copy of every floating tensor of G and D, on the CPU (`compare_steps`' `before`)."""
        return {name: t.detach().float().cpu().clone() for name, t in self.tensors()}

    def checkpoint(self) -> dict:
        """The state a checkpoint holds, through bytes as train writes and reads it."""
        buffer = io.BytesIO()
        torch.save(checkpoint_state(self.run, self.position), buffer)
        buffer.seek(0)
        return torch.load(buffer, map_location="cpu", weights_only=True)

    def resume(self, ckpt: dict) -> None:
        self.position = restore(self.run, ckpt)

    def snapshot(self) -> dict:
        """Everything an iteration changes, copied in memory (see `rewind`)."""
        opts = (self.run.step.opt_g, self.run.step.opt_d)
        live = [t for net in (self.run.G, self.run.D) for t in net.state_dict(keep_vars=True).values()]
        live += [v for opt in opts for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
        return {"live": live, "saved": [t.detach().clone() for t in live], "position": copy.deepcopy(self.position),
                "rng": (torch.get_rng_state(), self.run.noise_rng.get_state(), self.run.data_rng.get_state())}

    def rewind(self, snapshot: dict) -> None:
        """Back to `snapshot`, in place: a captured CUDA graph keeps reading the same tensors. Not
        training's restore, so that the machine's noise is measured apart from the code under test."""
        with torch.no_grad():
            for t, saved in zip(snapshot["live"], snapshot["saved"]):
                t.copy_(saved)
        self.position = copy.deepcopy(snapshot["position"])
        torch.set_rng_state(snapshot["rng"][0])
        self.run.noise_rng.set_state(snapshot["rng"][1]), self.run.data_rng.set_state(snapshot["rng"][2])

    def copy_from(self, other: Trainer) -> None:
        """`other`'s state into this trainer, in place (see `rewind`); the same networks and optimisers."""
        snapshot = other.snapshot()
        mine = self.snapshot()
        if [t.shape for t in mine["live"]] != [t.shape for t in snapshot["saved"]]:
            raise RuntimeError("the two trainers' states differ in shape")  # e.g. an optimiser without state yet
        self.rewind({**snapshot, "live": mine["live"]})

    def seconds_per_iteration(self, iterations: int, images: torch.Tensor) -> float:
        """Mean seconds of `iterations` iterations as training runs them: one epoch of that many
        batches of `images` (the critic schedule's mix of D-only and G iterations), the losses read
        once at its end (training reads them every `log.every`), no other wait for the device."""
        run = dataclasses.replace(self.run, images=images, n_batches=iterations,
                                  gather=batch_gatherer(images, self.run.device, self.run.cfg.train.batch_size))
        position = Position(epoch=self.position.epoch, iterations=self.position.iterations,
                            g_updates=self.position.g_updates)
        sync(self.run.device)
        return run_epoch(run, position, NoLog(), NoCheckpoints(), show_progress=False).seconds / iterations


@dataclass
class Step:
    """What one iteration left: its losses (D, G or None), every floating tensor of G and D after it
    (on the CPU), and what must be bit-equal (`Trainer.exact_state`)."""

    losses: tuple[float, float | None]
    tensors: dict[str, torch.Tensor]
    exact: dict


@dataclass(frozen=True)
class Tolerance:
    """How far two iterations from the same state may differ (module docstring): the losses
    (|a - b| <= rel |a| + abs) and, per group of tensors (G's and D's weights, and their statistics),
    the difference of what the iteration made against the size of the change it made."""

    loss_rel: float
    loss_abs: float
    update_rel: float

    def widened(self, noise: dict, multiple: float) -> Tolerance:
        """At least `multiple` times the machine's own noise (`compare_steps` of the reference twice)."""
        return Tolerance(max(self.loss_rel, multiple * noise["loss"]), self.loss_abs,
                         max(self.update_rel, multiple * noise["update"]))


EXACT = Tolerance(0.0, 0.0, 0.0)
FP32_TOLERANCE = Tolerance(loss_rel=1e-3, loss_abs=1e-6, update_rel=0.1)
BF16_TOLERANCE = Tolerance(loss_rel=5e-2, loss_abs=1e-2, update_rel=0.6)


def tensor_groups(names) -> dict[str, list[str]]:
    """G's and D's tensors in four groups: the weights (parameters) and the statistics (buffers)."""
    groups = {"G weights": [], "G statistics": [], "D weights": [], "D statistics": []}
    for name in names:
        kind = "statistics" if name.rsplit(".", 1)[-1] in BUFFER_NAMES or "._" in name else "weights"
        groups[f"{name[0]} {kind}"].append(name)
    return {k: v for k, v in groups.items() if v}


BUFFER_NAMES = {"running_mean", "running_var"}  # spectral norm's u and v are `..._u`, `..._v`


def compare_steps(ref: Step, got: Step, before: dict[str, torch.Tensor], tol: Tolerance) -> tuple[bool, dict, str]:
    """Whether `got` is the same iteration as `ref`, both from the state `before`; the measured
    differences (largest relative loss difference, largest update difference per group) and, when
    they disagree, what first."""
    differs = [key for key in ref.exact if ref.exact[key] != got.exact[key]]
    worst_loss = 0.0
    for a, b in zip(ref.losses, got.losses):
        if (a is None) != (b is None) or (b is not None and not np.isfinite(b)):
            return False, {"loss": float("inf"), "update": float("inf")}, "losses missing or not finite"
        if a is not None:
            worst_loss = max(worst_loss, abs(a - b) / max(abs(a), 1e-12))
            if abs(a - b) > tol.loss_rel * abs(a) + tol.loss_abs:
                differs.append("losses")
    worst_update, worst_group = 0.0, ""
    for group, names in tensor_groups(ref.tensors).items():
        gap = math.sqrt(sum(float((ref.tensors[n] - got.tensors[n]).square().sum()) for n in names))
        change = math.sqrt(sum(float((ref.tensors[n] - before[n]).square().sum()) for n in names))
        ratio = gap / change if change > 0 else (0.0 if gap == 0 else float("inf"))
        if ratio > worst_update:
            worst_update, worst_group = ratio, group
        if not ratio <= tol.update_rel:
            differs.append(group)
    return not differs, {"loss": worst_loss, "update": worst_update, "group": worst_group}, ", ".join(dict.fromkeys(differs))


def training_cases(cfg: Config, device: torch.device) -> list[tuple[str, str]]:
    """Every configured (GAN, variant) on a GPU. On the CPU (the smoke and mini presets) one variant
    per GAN, an octave one when configured: the step's code is the same for every variant of a GAN,
    only alpha changes the networks, and the smoke DAG must not grow by more than a few seconds."""
    if device.type == "cuda":
        return [(g, v) for g in cfg.run.gans for v in cfg.run.variants]
    octave = [v for v in cfg.run.variants if cfg.variants[v].alpha > 0] or cfg.run.variants
    return [(g, octave[0]) for g in cfg.run.gans]


@contextlib.contextmanager
def strict_fp32():
    """No TF32 while the speed options are compared with eager (module docstring)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                        benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def check_training(cfg: Config, device: torch.device, k: int, report: Report, graphs=None,
                   cases: list[tuple[str, str]] | None = None) -> dict:
    """Per (GAN, variant) (`training_cases` unless `cases`): training's first epoch of `k` batches,
    then from its checkpoint the resume check and the speed options against eager, each one
    iteration from one state (module docstring). Returns the measured seconds per iteration of each
    case, as training will run it. `graphs`: makes a CUDA-graph step's device side (tests pass a
    stand-in on the CPU)."""
    train_cfg = cfg.train
    fast = [option for option in SPEED_OPTIONS if getattr(train_cfg, option)]
    rates = {}
    for gan_name, variant_name in cases or training_cases(cfg, device):
        case = f"{gan_name}/{variant_name}"
        try:
            rates[(gan_name, variant_name)] = check_case(cfg, gan_name, variant_name, device, k, fast, graphs, report)
        except Exception as exc:  # whatever breaks here would break the run: say so, go on
            report.add("training", case, False, f"{type(exc).__name__}: {one_line(exc, 160)}",
                       "training this case fails on this machine: report it with this table")
    return rates


def check_case(cfg: Config, gan_name: str, variant_name: str, device: torch.device, k: int, fast: list[str],
               graphs, report: Report) -> float:
    """The checks of one case (module docstring), added to `report`; returns the seconds per
    iteration of training as it will run."""
    case = f"{gan_name}/{variant_name}"
    train_cfg = dataclasses.replace(cfg.train, epochs=max(cfg.train.epochs, 2))  # an epoch after the checkpoint
    images = random_images(max(k, 2) * train_cfg.batch_size, cfg.data.image_size, device)

    # Training as it will run, up to the checkpoint at the end of its first epoch (with CUDA graphs,
    # of the first epoch after which both halves replay). From there the uninterrupted run takes
    # one more iteration twice (rewound in between): the second time differs from the first only by
    # the machine's own noise.
    run = Trainer(cfg, gan_name, variant_name, train_cfg, device, images, graphs)
    started = time.perf_counter()
    epoch_means = run.warm_up()
    rough_seconds = (time.perf_counter() - started) / run.position.iterations
    if not fast:
        add_finite(report, case, run, epoch_means)
    ckpt, before, snapshot = run.checkpoint(), run.state_now(), run.snapshot()
    reference = run.step()
    run.rewind(snapshot)
    _, noise, _ = compare_steps(reference, run.step(), before, EXACT)

    if fast:
        check_speed_options(cfg, gan_name, variant_name, train_cfg, device, images, graphs, fast, report)

    # Resume: a new trainer loads the checkpoint and takes that iteration.
    resumed = Trainer(cfg, gan_name, variant_name, train_cfg, device, images, graphs)
    resumed.resume(ckpt)
    tol = EXACT if train_cfg.deterministic else precision_tolerance(train_cfg).widened(noise, NOISE_MULTIPLE)
    ok, got, what = compare_steps(reference, resumed.step(), before, tol)
    detail = (f"checkpoint after epoch {ckpt['position']['epoch']} ({run.position.iterations - 1} iterations), "
              f"one more iteration from it equal to the uninterrupted run's "
              + ("bit for bit (deterministic)" if tol == EXACT else f"within {describe(tol)}")
              + f" ({describe_measured(got)}; this machine's own noise {describe_measured(noise)}); "
              "position, random streams and beta equal" + ("" if ok else f"; differs: {what}"))
    if train_cfg.cuda_graphs:
        resumed.warm_up()
        replayed = run.steady() and resumed.steady()
        ok &= replayed
        detail += ("; both halves captured and replayed before and after the reload" if replayed
                   else "; a CUDA graph was not captured and replayed on both sides of the reload")
    report.add("training", f"{case} resume", ok, detail,
               "resumed training would not continue the run: report it with this table")

    iterations = timed_iterations(device, rough_seconds)
    timing_images = random_images(iterations * train_cfg.batch_size, cfg.data.image_size, device, seed=1)
    return run.seconds_per_iteration(iterations, timing_images)


def check_speed_options(cfg, gan_name, variant_name, train_cfg, device, images, graphs, fast, report) -> None:
    """Eager training and training with the speed options, each warmed up, then one iteration of each
    from eager's state (copied into the fast trainer in place, so that its CUDA graphs stay valid),
    in strict fp32 (module docstring)."""
    case = f"{gan_name}/{variant_name}"
    eager_cfg = dataclasses.replace(train_cfg, **{option: False for option in SPEED_OPTIONS})
    with strict_fp32():
        eager = Trainer(cfg, gan_name, variant_name, eager_cfg, device, images)
        add_finite(report, case, eager, eager.warm_up())
        quick = Trainer(cfg, gan_name, variant_name, train_cfg, device, images, graphs)
        quick.warm_up()
        quick.copy_from(eager)
        before, snapshot = eager.state_now(), eager.snapshot()
        reference = eager.step()
        eager.rewind(snapshot)
        _, noise, _ = compare_steps(reference, eager.step(), before, EXACT)
        tol = precision_tolerance(train_cfg).widened(noise, NOISE_MULTIPLE)
        ok, got, what = compare_steps(reference, quick.step(), before, tol)
    report.add("training", f"{case} {'+'.join(fast)}", ok,
               f"one iteration from eager's state within {describe(tol)} of eager's ({describe_measured(got)}; "
               f"eager's own noise {describe_measured(noise)})" + ("" if ok else f"; differs: {what}"),
               f"turn off {', '.join('train.' + o for o in fast)} and report it")


def add_finite(report: Report, case: str, trainer: Trainer, epoch_means: list[tuple[float, float]]) -> None:
    finite = all(np.isfinite(x) for pair in epoch_means for x in pair)
    report.add("training", f"{case} eager", finite,
               f"{trainer.position.iterations} iterations ({len(epoch_means)} epoch(s) of {trainer.run.n_batches} "
               f"batches), losses finite: {finite}",
               "a loss is NaN or infinite from the first iterations: report it with this table")


def precision_tolerance(train_cfg: TrainConfig) -> Tolerance:
    return BF16_TOLERANCE if train_cfg.bf16 else FP32_TOLERANCE


def timed_iterations(device: torch.device, rough_seconds: float) -> int:
    """Iterations enough for a stable rate: at least TIMED_SECONDS of them (from the warm-up's rough
    rate), within TIMED_ITERATIONS' bounds for the device."""
    low, high = TIMED_ITERATIONS[device.type == "cuda"]
    return int(min(max(math.ceil(TIMED_SECONDS / max(rough_seconds, 1e-6)), low), high))


def describe(tol: Tolerance) -> str:
    return f"losses rel {tol.loss_rel:.0e}, updates {tol.update_rel:.0e} of their size"


def describe_measured(measured: dict) -> str:
    return f"losses {measured['loss']:.1e}, updates {measured['update']:.1e}"


# --------------------------------------------------------------------------------------------------
# evaluation


def check_evaluation(cfg: Config, device: torch.device, m: int, report: Report) -> float:
    """FID of m generated images split in two halves (one against the other) through Inception on
    the device and on the CPU; returns the device's seconds per image. Without the configured
    weights (not downloaded yet), seeded placeholder weights stand in: the arithmetic and the time
    are the network's, whatever its weights, so the comparison and the projection still hold."""
    with tempfile.TemporaryDirectory(prefix="ocbench-preflight-") as tmp:
        try:
            weights, stand_in = fid.locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights), ""
        except OcbenchError:
            weights = fid.Weights(fid.write_placeholder_weights(Path(tmp) / "inception.pth"), "")
            stand_in = " (placeholder weights stand in: the configured ones are not there yet)"
        return evaluate_on_device(cfg, device, m, weights, stand_in, report)


def evaluate_on_device(cfg: Config, device: torch.device, m: int, weights, stand_in: str, report: Report) -> float:
    train_cfg = cfg.train
    torch.manual_seed(0)
    G, _ = build_networks(cfg.variants[cfg.run.variants[0]].alpha, cfg.gans[cfg.run.gans[0]], train_cfg, device)
    G.eval()
    sample = latent_sampler(G, None, latents(m, train_cfg.latent_dim, seed=0), device)
    images = torch.cat([to_uint8(sample(i, min(64, m - i))).cpu() for i in range(0, m, 64)])

    def inception_features(net) -> torch.Tensor:
        return torch.cat([fid.features(net, images[i:i + 64]) for i in range(0, m, 64)])

    net = fid.load_inception(weights, device, cfg.metrics.dims)
    fid.features(net, images[:1])  # kernel selection and first-call costs, out of the timing
    sync(device)
    started = time.perf_counter()
    feats = inception_features(net)
    sync(device)
    seconds_per_image = (time.perf_counter() - started) / m
    if device.type != "cuda":
        report.add("evaluation", "fid", None, f"Inception {1 / seconds_per_image:.1f} images/s{stand_in}; "
                   "device = CPU, no device-vs-CPU comparison")
        return seconds_per_image
    cpu_net = fid.load_inception(weights, "cpu", cfg.metrics.dims)
    cpu_feats = inception_features(cpu_net)

    def half_vs_half(f: torch.Tensor) -> float:
        (mu1, s1), (mu2, s2) = fid.statistics(f[: m // 2].cpu()), fid.statistics(f[m // 2:].cpu())
        return fid.frechet_distance_eigh(mu1, s1, mu2, s2)

    on_device, on_cpu = half_vs_half(feats), half_vs_half(cpu_feats)
    rel = abs(on_device - on_cpu) / max(abs(on_cpu), 1e-12)
    report.add("evaluation", "fid", rel <= FID_RTOL,
               f"FID of {m // 2} vs {m // 2} generated images: {on_device:.6f} on {device}, {on_cpu:.6f} on the CPU "
               f"(relative {rel:.1e}, limit {FID_RTOL:g}); Inception {1 / seconds_per_image:.0f} images/s{stand_in}",
               "FIDs on this GPU would not be the CPU's: report it with this table (torch, cuDNN, GPU)")
    return seconds_per_image


# --------------------------------------------------------------------------------------------------
# projection


def check_projection(cfg: Config, device: torch.device, rates: dict, seconds_per_image: float,
                     report: Report) -> None:
    """Device-hours of the configured protocol from the measured rates, as `bench protocol` projects
    (every iteration at the rate with a G step: an upper bound for critic schedules); on a CPU that
    the config did not ask for, a failed check with the presets that fit."""
    train_cfg = cfg.train
    n_images = len(load_prepared(cfg.data.prepared)) if Path(cfg.data.prepared).exists() else expected_images(cfg)
    batches_per_epoch = n_images // train_cfg.batch_size
    if train_cfg.g_steps is not None:  # what each train job's set_up refuses, said before any job starts
        for gan_name in cfg.run.gans:
            needed = cfg.gans[gan_name].critic.epochs_for(train_cfg.g_steps, batches_per_epoch)
            report.add("projection", f"g_steps {gan_name}", needed == train_cfg.epochs,
                       f"train.g_steps {train_cfg.g_steps:,} ends in epoch {needed} of {batches_per_epoch:,} batches "
                       f"({n_images:,} images); train.epochs is {train_cfg.epochs}",
                       f"set train.epochs: {needed}")
    evaluation = seconds_per_image * cfg.metrics.fid_samples
    measured_per_gan = {g: seconds for (g, _), seconds in rates.items()}
    hours, runs = 0.0, 0
    for gan_name in cfg.run.gans:
        for variant_name in cfg.run.variants:
            # a case not timed here (the CPU's reduced check) at its GAN's measured rate
            seconds = rates.get((gan_name, variant_name), measured_per_gan.get(gan_name))
            if seconds is None:
                continue
            with_g, without_g = cfg.gans[gan_name].critic.iterations(batches_per_epoch, train_cfg.epochs,
                                                                     train_cfg.g_steps)
            case = Case(gan_name, variant_name, len(cfg.run.seeds), with_g, without_g,
                        Timing(seconds, seconds, evaluation), None, 1)
            hours += project(case, evaluations(cfg))["ours_device_h"]
            runs += len(cfg.run.seeds)
    report.projection = {"runs": runs, "epochs": train_cfg.epochs, "images": n_images, "device_hours": hours,
                         "evaluation_s_per_epoch": evaluation,
                         "seconds_per_iteration": {f"{g}/{v}": s for (g, v), s in rates.items()}}
    detail = (f"{runs} runs x {train_cfg.epochs} epochs of {batches_per_epoch:,} iterations: about {hours:.1f} "
              f"{device.type.upper()}-hours ({duration(hours / max(runs, 1) * 3600)} a run, of which evaluation "
              f"{duration(evaluation * train_cfg.epochs)})")
    if device.type == "cpu" and train_cfg.device != "cpu":
        report.add("projection", "time", False, detail + " on this CPU: no GPU was found",
                   "run on a GPU machine, or a CPU preset: `make mini` (faces in ~10 min) or `make smoke`; "
                   "--set train.device=cpu trains on the CPU on purpose")
    else:
        report.add("projection", "time", True, detail)


def duration(seconds: float) -> str:
    """A duration as a reader takes it in: seconds, minutes, hours or days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.0f} days"


def write_json(report: Report, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
