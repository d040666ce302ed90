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
    training     per configured (GAN, variant), on random images: a few iterations eagerly; the
                 same with the config's speed options (compile, cuda_graphs, channels_last, bf16),
                 equal to eager within a stated tolerance; a checkpoint written, read back and
                 continued, equal to the uninterrupted iterations (bit for bit when deterministic)
    evaluation   the FID of a few hundred generated images on the device and on the CPU, equal to
                 1e-4 relative (Inception runs in full fp32 everywhere)
    projection   the protocol's time from the measured rates (`bench protocol`'s arithmetic); on a
                 machine without a GPU, a config that did not ask for the CPU is stopped here

On the CPU (the smoke and mini presets) it runs reduced: one iteration per half of the check, and
no device-vs-CPU FID (they are the same device).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ocbench import fid
from ocbench.bench import sync
from ocbench.bench.protocol import Case, Timing, cpu_name, evaluations, first_epoch_beta, iteration_counts, project
from ocbench.config import Config
from ocbench.data import CELEBA_COUNTS, CELEBA_PARTITION, CELEBA_ZIP, file_md5, load_prepared
from ocbench.device import resolve_device
from ocbench.errors import OcbenchError
from ocbench.formats import atomic_write
from ocbench.sample import latent_sampler, latents
from ocbench.train import (CudaGraphStep, build_networks, build_step, configure_backends, epochs_for_g_steps,
                           restore_training_state, to_model_input, training_state)

PASS, FAIL, SKIP = "✔", "✘", "–"
SPEED_OPTIONS = ("compile", "cuda_graphs", "channels_last", "bf16")
# A fast path against eager, per iteration's losses: other kernels sum in other orders, and Adam
# turns last-bit differences of near-zero gradients into lr-sized steps (see tests/test_step.py);
# bf16 rounds every product to 8 bits of mantissa.
FP32_TOLERANCE = {"rel": 1e-3, "abs": 2e-5}
BF16_TOLERANCE = {"rel": 5e-2, "abs": 1e-2}
RESUME_WEIGHT_ATOL = 1e-3  # resumed vs uninterrupted weights when not deterministic (a few lr)
FID_RTOL = 1e-4


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
    rates = check_training(cfg, device, iterations or (3 if on_gpu else 1), report)
    seconds_per_image = check_evaluation(cfg, device, fid_images or (256 if on_gpu else 8), report)
    if rates and seconds_per_image is not None:
        check_projection(cfg, device, rates, seconds_per_image, report)
    return report


# --------------------------------------------------------------------------------------------------
# environment


def nvidia_driver(timeout: float = 30) -> str:
    """The driver version nvidia-smi reports, or why there is none."""
    if not shutil.which("nvidia-smi"):
        return "unknown (no nvidia-smi on PATH)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"unknown (nvidia-smi did not answer in {timeout:g} s)"
    except OSError as exc:
        return f"unknown (nvidia-smi could not run: {exc.strerror or exc})"
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else \
        f"unknown (nvidia-smi failed: {' '.join(out.stderr.split())[:80]})"


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
            snapshots = len({e for e in train_cfg.snapshot_epochs if e <= train_cfg.epochs} | {train_cfg.epochs})
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
    except OcbenchError as exc:
        report.add_error("environment", "device", exc)
        return None
    configure_backends(train_cfg, device)
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


def random_batches(n: int, batch_size: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """uint8 N x H x W x 3 batches, as the prepared array holds them: the step's arithmetic, not the
    images, is what these iterations check."""
    rng = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8, generator=rng) for _ in range(n)]


class Trainer:
    """One run's networks, optimisers and step as `train` builds them (seed 0), on given batches."""

    def __init__(self, cfg: Config, gan_name: str, variant_name: str, train_cfg, device: torch.device,
                 graphs=None):
        self.gan, self.train_cfg, self.device = cfg.gans[gan_name], train_cfg, device
        variant = cfg.variants[variant_name]
        torch.manual_seed(0)
        self.G, self.D = build_networks(variant.alpha, self.gan, train_cfg, device)
        self.noise_rng, self.data_rng = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
        self.step = build_step(self.G, self.D, self.gan, train_cfg, device, self.noise_rng,
                               graphs=graphs() if graphs else None)
        self.opt_g, self.opt_d = self.step.opt_g, self.step.opt_d
        self.beta = first_epoch_beta(variant.beta, train_cfg.epochs, device)
        self.g_updates = 0

    def run(self, batches, start: int = 0) -> tuple[list[tuple[float, float | None]], float]:
        """The losses of each iteration, and the mean seconds of those that run as training's later
        iterations will: after the first (cuDNN's autotuning), and with CUDA graphs only replays
        (not the eager warm-ups and the captures). `self.timed`: how many were timed."""
        losses, started, self.timed = [], None, 0
        for i, batch in enumerate(batches, start):
            if started is None and i > start and self.steady():
                sync(self.device)
                started = time.perf_counter()
            self.timed += started is not None
            g_turn = self.gan.critic.g_turn(i, self.g_updates)
            real = to_model_input(batch, self.device, self.train_cfg.channels_last)
            loss_d, loss_g = self.step(real, self.beta, g_turn)
            self.g_updates += loss_g is not None
            losses.append((float(loss_d), None if loss_g is None else float(loss_g)))
        sync(self.device)
        seconds = time.perf_counter() - started if started is not None else float("nan")
        return losses, seconds / max(self.timed, 1)

    def steady(self) -> bool:
        return not isinstance(self.step, CudaGraphStep) or self.step.replaying

    def state(self) -> dict:
        buffer = io.BytesIO()
        torch.save(training_state(self.G, self.D, self.opt_g, self.opt_d, self.noise_rng, self.data_rng,
                                  self.device), buffer)
        buffer.seek(0)
        return torch.load(buffer, map_location="cpu", weights_only=True)  # as train reads a checkpoint

    def restore(self, state: dict, g_updates: int) -> None:
        restore_training_state(state, self.G, self.D, self.opt_g, self.opt_d, self.noise_rng, self.data_rng,
                               self.device)
        self.g_updates = g_updates


def losses_close(a, b, tol: dict) -> tuple[bool, float]:
    """Whether two loss sequences agree within `tol`, and their largest relative difference."""
    worst, ok = 0.0, len(a) == len(b)
    for pair_a, pair_b in zip(a, b):
        for x, y in zip(pair_a, pair_b):
            if (x is None) != (y is None):
                return False, float("inf")
            if x is None:
                continue
            ok &= bool(np.isfinite(y)) and abs(x - y) <= tol["abs"] + tol["rel"] * abs(x)
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    return ok, worst


def weights_equal(a: torch.nn.Module, b: torch.nn.Module, exact: bool) -> tuple[bool, float]:
    worst, ok = 0.0, True
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        if not x.is_floating_point():
            ok &= torch.equal(x, y)
            continue
        diff = (x.float() - y.float()).abs().max().item() if x.numel() else 0.0
        worst = max(worst, diff)
        ok &= diff == 0.0 if exact else diff <= RESUME_WEIGHT_ATOL
    return ok, worst


def training_cases(cfg: Config, device: torch.device) -> list[tuple[str, str]]:
    """Every configured (GAN, variant) on a GPU. On the CPU (the smoke and mini presets) one variant
    per GAN, an octave one when configured: the step's code is the same for every variant of a GAN,
    only alpha changes the networks, and the smoke DAG must not grow by more than a few seconds."""
    if device.type == "cuda":
        return [(g, v) for g in cfg.run.gans for v in cfg.run.variants]
    octave = [v for v in cfg.run.variants if cfg.variants[v].alpha > 0] or cfg.run.variants
    return [(g, octave[0]) for g in cfg.run.gans]


def iterations_per_half(critic, k: int, warmup: int | None) -> int:
    """Iterations in each half of the resume check (before and after the checkpoint): `k`, or with
    CUDA graphs (`warmup`: a half's eager calls before its capture) as many as make each half of
    the check warm up, capture and replay both halves of the step, the G step included: with
    several critic steps per G step (WGAN-GP's 5, the authors' wgan.sh 20 at first), G steps are rare."""
    if warmup is None:
        return k
    needed = warmup + 2  # the eager calls, the capture, one replay

    def g_steps(start: int, stop: int, g_updates: int) -> int:
        made = 0
        for i in range(start, stop):
            made += critic.g_turn(i, g_updates + made)
        return made

    k = max(k, needed)
    while g_steps(0, k, 0) < needed or g_steps(k, 2 * k, g_steps(0, k, 0)) < needed:
        k += 1
    return k


def check_training(cfg: Config, device: torch.device, k: int, report: Report, graphs=None) -> dict:
    """Per (GAN, variant): eager, the speed options against eager, a checkpoint round trip.
    Returns the measured seconds per iteration of each case, as training will run it. `graphs`:
    makes a CUDA-graph step's device side (tests pass a stand-in on the CPU)."""
    train_cfg = cfg.train
    eager_tc = dataclasses.replace(train_cfg, **{option: False for option in SPEED_OPTIONS})
    fast = [option for option in SPEED_OPTIONS if getattr(train_cfg, option)]
    tol = BF16_TOLERANCE if train_cfg.bf16 else FP32_TOLERANCE
    warmup = CudaGraphStep.WARMUP if train_cfg.cuda_graphs else None
    rates = {}
    for gan_name, variant_name in training_cases(cfg, device):
        case = f"{gan_name}/{variant_name}"
        k_gan = iterations_per_half(cfg.gans[gan_name].critic, k, warmup)
        batches = random_batches(2 * k_gan, train_cfg.batch_size, cfg.data.image_size)
        try:
            eager_run = Trainer(cfg, gan_name, variant_name, eager_tc, device)
            eager, seconds = eager_run.run(batches)
            finite = all(np.isfinite(x) for pair in eager for x in pair if x is not None)
            report.add("training", f"{case} eager", finite, f"{2 * k_gan} iterations, losses finite: {finite}",
                       "a loss is NaN or infinite from the first iterations: report it with this table")
            uninterrupted = eager_run  # as training runs it, when no speed option is on
            if fast:
                uninterrupted = Trainer(cfg, gan_name, variant_name, train_cfg, device, graphs)
                got, seconds = uninterrupted.run(batches)
                ok, worst = losses_close(eager, got, tol)
                report.add("training", f"{case} {'+'.join(fast)}", ok,
                           f"losses within rel {tol['rel']:g} + abs {tol['abs']:g} of eager (worst rel {worst:.1e})",
                           f"turn off {', '.join('train.' + o for o in fast)} and report it")
            rates[(gan_name, variant_name)] = seconds
            resumed_ok, detail = check_resume(cfg, gan_name, variant_name, train_cfg, device, batches, k_gan,
                                              uninterrupted, graphs)
            report.add("training", f"{case} resume", resumed_ok, detail,
                       "resumed training would not continue the run: report it with this table")
        except Exception as exc:  # whatever breaks here would break the run: say so, go on
            report.add("training", case, False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}",
                       "training this case fails on this machine: report it with this table")
    return rates


def check_resume(cfg, gan_name, variant_name, train_cfg, device, batches, k, uninterrupted,
                 graphs=None) -> tuple[bool, str]:
    """k iterations, a checkpoint through bytes as train writes and reads it, a new trainer that
    loads it and runs k more: equal to 2k uninterrupted iterations. With CUDA graphs, each trainer
    must have captured and replayed both halves of the step (before and after the reload)."""
    first = Trainer(cfg, gan_name, variant_name, train_cfg, device, graphs)
    first.run(batches[:k])
    resumed = Trainer(cfg, gan_name, variant_name, train_cfg, device, graphs)
    resumed.restore(first.state(), first.g_updates)
    resumed.run(batches[k:], start=k)
    exact = train_cfg.deterministic
    ok_g, worst_g = weights_equal(uninterrupted.G, resumed.G, exact)
    ok_d, worst_d = weights_equal(uninterrupted.D, resumed.D, exact)
    replayed = all(t.steady() for t in (first, resumed))
    how = "bit for bit (deterministic)" if exact else f"within {RESUME_WEIGHT_ATOL:g}"
    graphs_note = "" if not train_cfg.cuda_graphs else (
        "; both halves captured and replayed before and after the reload" if replayed
        else "; a CUDA graph was not captured and replayed on both sides of the reload")
    return ok_g and ok_d and replayed, (f"checkpoint after {k}, {k} more: G and D equal to {2 * k} uninterrupted "
                                        f"{how} (largest difference {max(worst_g, worst_d):.1e}){graphs_note}")


# --------------------------------------------------------------------------------------------------
# evaluation


def check_evaluation(cfg: Config, device: torch.device, m: int, report: Report) -> float | None:
    """FID of m generated images split in two halves (one against the other) through Inception on
    the device and on the CPU; returns the device's seconds per image."""
    try:
        weights = fid.locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
    except OcbenchError:
        report.add("evaluation", "fid", None, "no Inception weights (see data/inception)")
        return None
    train_cfg = cfg.train
    torch.manual_seed(0)
    G, _ = build_networks(cfg.variants[cfg.run.variants[0]].alpha, cfg.gans[cfg.run.gans[0]], train_cfg, device)
    G.eval()
    sample = latent_sampler(G, None, latents(m, train_cfg.latent_dim, seed=0), device)
    images = torch.cat([fid.to_uint8(sample(i, min(64, m - i))).cpu() for i in range(0, m, 64)])

    def inception_features(net) -> torch.Tensor:
        return torch.cat([fid.features(net, images[i:i + 64]) for i in range(0, m, 64)])

    net = fid.load_inception(weights, device, cfg.metrics.dims)
    sync(device)
    started = time.perf_counter()
    feats = inception_features(net)
    sync(device)
    seconds_per_image = (time.perf_counter() - started) / m
    if device.type != "cuda":
        report.add("evaluation", "fid", None, f"Inception {1 / seconds_per_image:.1f} images/s; device = CPU, "
                   "no device-vs-CPU comparison")
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
               f"(relative {rel:.1e}, limit {FID_RTOL:g}); Inception {1 / seconds_per_image:.0f} images/s",
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
            needed = epochs_for_g_steps(train_cfg.g_steps, batches_per_epoch, cfg.gans[gan_name].critic)
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
            with_g, without_g = iteration_counts(cfg.gans[gan_name].critic, batches_per_epoch, train_cfg.epochs,
                                                 train_cfg.g_steps)
            case = Case(gan_name, variant_name, len(cfg.run.seeds), with_g, without_g,
                        Timing(seconds, seconds, evaluation), None, 1)
            hours += project(case, evaluations(cfg))["ours_device_h"]
            runs += len(cfg.run.seeds)
    report.projection = {"runs": runs, "epochs": train_cfg.epochs, "images": n_images, "device_hours": hours,
                         "evaluation_s_per_epoch": evaluation,
                         "seconds_per_iteration": {f"{g}/{v}": s for (g, v), s in rates.items()}}
    detail = (f"{runs} runs x {train_cfg.epochs} epochs of {batches_per_epoch:,} iterations: about {hours:.1f} "
              f"{device.type.upper()}-hours ({hours / max(runs, 1) * 60:.0f} min a run, of which evaluation "
              f"{evaluation * train_cfg.epochs / 60:.0f} min)")
    if device.type == "cpu" and train_cfg.device != "cpu":
        report.add("projection", "time", False, detail + " on this CPU: no GPU was found",
                   "run on a GPU machine, or a CPU preset: `make mini` (faces in ~10 min) or `make smoke`; "
                   "--set train.device=cpu trains on the CPU on purpose")
    else:
        report.add("projection", "time", True, detail)


def write_json(report: Report, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
