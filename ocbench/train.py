"""Train one run, `{gan}_{variant}_s{seed}`, from the config to per-epoch metrics.

Read it top to bottom: setup (device, data, networks, optimisers), resume, the epoch loop (one D
step on a real batch and on G(z) for a fresh z as two forward passes, then one G step with another
fresh z), and the per-epoch evaluation (FID and precision/recall on `metrics.fid_samples` samples,
a sample grid from a fixed z, generator snapshots, a metrics row).

Outputs under results/<config>/runs/<run id>/: metrics.csv (one row per epoch, rewritten whole),
samples/epoch_EEE.png, generator_epoch_EEE.pt, run.json (written last: the run is finished).
The resumable state lives in results/<config>/state/<run id>/, outside what Snakemake declares,
because Snakemake deletes the declared outputs of an unfinished job before rerunning it:
checkpoint.pt, the previous one beside it (checkpoint.prev.pt, the fallback when the newest cannot
be read), checkpoint.json (where the newest stands, for `ocbench status`, which loads no checkpoint),
and train.lock, which one `ocbench train` of the run holds while it runs. TensorBoard event files go
to results/<config>/tensorboard/<run id>/ (ocbench/tensorboard.py).

Every file is written whole to `<name>.tmp` and renamed (`atomic_write`): a kill or a full disk
leaves the previous version, and a failed write stops the run with one line; rerunning resumes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path

import torch

from ocbench import losses, schedules, tensorboard
from ocbench.config import Config
from ocbench.data import load_prepared
from ocbench.device import resolve_device
from ocbench.errors import OcbenchError
from ocbench.lock import holder, try_lock
from ocbench.metrics import latent_sampler, latents
from ocbench.nn import Discriminator, Generator
from ocbench.progress import progress

METRIC_COLUMNS = [
    "epoch", "iterations", "g_updates", "g_loss", "d_loss", "fid", "precision", "recall",
    "beta_h", "beta_l", "epoch_seconds", "images_per_s", "eval_seconds",
    "weights_sha256", "weights_official", "frechet", "status",
    # added later (older metrics.csv files lack them; aggregate reads those as empty): KID, FID-infinity
    # (snapshot epochs only) and what makes the numbers comparable (Evaluator.provenance)
    "kid", "kid_std", "fid_inf", "fid_samples", "reference_images", "reference_split", "pr_real_samples",
    "kid_real_samples", "eval_precision",
]
TIMING_COLUMNS = ("epoch_seconds", "images_per_s", "eval_seconds")  # the only non-reproducible ones
EVAL_SEED = 1_000_000  # the FID samples after epoch index e use seed EVAL_SEED + e (eval_seed)
CHECKPOINT, PREVIOUS_CHECKPOINT, LOCK = "checkpoint.pt", "checkpoint.prev.pt", "train.lock"
POSITION = "checkpoint.json"  # the newest checkpoint's position, small: what `ocbench status` reads
CHECKPOINT_KEYS = {"fingerprint", "run", "finished", "G", "D", "opt_g", "opt_d", "rng", "position", "rows"}


# --------------------------------------------------------------------------------------------------
# small helpers


def protocol_fingerprint(cfg: Config, run_id: str) -> str:
    """What a checkpoint must agree on to be resumed: the run and every number of its protocol."""
    gan, variant, _ = cfg.parse_run(run_id)
    t = cfg.train
    protocol = {
        "config": cfg.name, "run": run_id, "gan": cfg.raw["gans"][gan],
        "variant": cfg.raw["variants"][variant],
        "train": [t.epochs, t.batch_size, t.latent_dim, t.width, t.init],
        "data": cfg.data.prepared, "fid_samples": cfg.metrics.fid_samples,
    }
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16]


def load_images(path: str, device: torch.device, placement, runs_per_gpu: int = 1) -> torch.Tensor:
    """The prepared uint8 N x H x W x 3 array, whole on the GPU when it fits, else in ordinary RAM
    (batches reach the GPU through `batch_gatherer`'s pinned buffers; pinning the whole array would
    allocate a second, page-locked copy: 16 GiB beside the 10 GB array for CelebA)."""
    images = torch.from_numpy(load_prepared(path, mmap=False))  # read whole: batches are random gathers
    if device.type != "cuda":
        return images
    if placement == "auto":
        free, _ = torch.cuda.mem_get_info(device)
        placement = fits_on_device(images.numel(), free, runs_per_gpu)
    return images.to(device) if placement else images


def fits_on_device(nbytes: int, free_bytes: int, runs_per_gpu: int = 1) -> bool:
    """Whether an array of `nbytes` may go on a GPU with `free_bytes` free, shared by `runs_per_gpu`
    runs: each run budgets its share of the free memory and leaves 40% of it for the networks and
    Inception (a run that took all of it would starve the runs that start after it)."""
    return nbytes < 0.6 * free_bytes / max(runs_per_gpu, 1)


class PinnedGather:
    """Batches of a host array for a GPU: each batch is gathered into one of two pinned buffers and
    copied from there asynchronously, so the gather of the next batch overlaps the copy of this one.
    A buffer is refilled only once the copy out of it (two batches ago) is done. `event` makes the
    marker of a finished copy (a CUDA event; tests pass None on the CPU, where copies are synchronous)."""

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device, pin: bool = True,
                 event=torch.cuda.Event):
        shape = (batch_size, *images.shape[1:])
        self.buffers = [torch.empty(shape, dtype=images.dtype, pin_memory=pin) for _ in range(2)]
        self.copied = [None, None]  # per buffer: the event recorded after the copy out of it
        self.images, self.device, self.event, self.turn = images, device, event, 0

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        buffer, done = self.buffers[self.turn][: len(indices)], self.copied[self.turn]
        if done is not None:
            done.synchronize()
        torch.index_select(self.images, 0, indices, out=buffer)
        batch = buffer.to(self.device, non_blocking=True, copy=True)
        if self.event is not None:
            self.copied[self.turn] = self.event()
            self.copied[self.turn].record()
        self.turn ^= 1
        return batch


def batch_gatherer(images: torch.Tensor, device: torch.device, batch_size: int):
    """`gather(indices)` -> that batch of `images` (uint8) on `device`: a plain index where the array
    lives on the device (or everything is on the CPU), pinned double buffers from host RAM to a GPU."""
    if images.is_cuda or device.type != "cuda":
        return images.__getitem__
    return PinnedGather(images, batch_size, device)


def to_model_input(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], converted on the training device."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def configure_backends(tc, device: torch.device) -> None:
    """Deterministic algorithms when asked (bit-exact resume), else cuDNN's autotuner on a GPU; the
    run's GPU as the current device, so that streams, graphs and allocations are made on it."""
    if tc.deterministic:
        # cuBLAS reads this when it starts (the first matmul): without it, deterministic mode raises
        # on the generator's Linear with CUDA >= 10.2. Harmless on the CPU; a user's own value stays.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # algorithm choice only; precision stays the default
    if device.type == "cuda":
        torch.cuda.set_device(device)


def make_optimizer(params, opt, device: torch.device | None = None, capturable: bool = False) -> torch.optim.Optimizer:
    """The config's optimiser. On a GPU, Adam is the fused kernel (one launch for every parameter
    instead of several per tensor: the same update, summed in another order); `capturable` keeps its
    state on the device, as a CUDA graph needs."""
    if opt.name == "adam":
        fused = device is not None and device.type == "cuda"
        return torch.optim.Adam(params, lr=opt.lr, betas=tuple(opt.betas), fused=fused or None,
                                capturable=capturable)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=opt.lr, capturable=capturable)
    raise OcbenchError(f"unknown optimizer {opt.name!r}; allowed: adam, rmsprop")


OPTIMIZER_FLAGS = ("capturable", "fused", "foreach", "differentiable")


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict) -> None:
    """`opt.load_state_dict(saved)`, but the run's current settings win over the saved ones.

    torch restores `param_groups` as saved, flags included: a run started without CUDA graphs and
    resumed with them would keep `capturable=False` and fail at capture, and one started on the CPU
    would stay unfused on a GPU. The flags are put back to those `opt` was built with, and every
    state tensor follows its parameter: the same device and memory format (fused Adam rejects an
    `exp_avg` left contiguous beside a channels-last weight), and `step` where the flags want it
    (on the device for capturable or fused, else on the CPU)."""
    flags = [{k: group[k] for k in OPTIMIZER_FLAGS if k in group} for group in opt.param_groups]
    opt.load_state_dict(saved)
    for group, own in zip(opt.param_groups, flags):
        group.update(own)
        step_on_device = bool(group.get("capturable") or group.get("fused"))
        for p in group["params"]:
            state = opt.state.get(p, {})
            for name, value in state.items():
                if not torch.is_tensor(value):
                    continue
                if name == "step":
                    state[name] = value.to(p.device if step_on_device else "cpu")
                elif value.shape == p.shape:
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)  # p's device and strides


def atomic_write(path: Path, write, previous: Path | None = None) -> None:
    """`write(f)` into `<path>.tmp` (a binary file), on disk (fsync), then renamed over `path`: `path`
    is the old file or the whole new one, never a part. A failed write (a full disk) removes the
    temporary file and raises, leaving `path` as it was. With `previous`, the file being replaced is
    kept under that name (only once the new one is complete)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:  # a Python file: a failed write raises OSError with its errno
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metrics(path: Path, rows: list[dict]) -> None:
    """The whole file, rewritten atomically after every epoch (and on resume, from the rows kept in
    the checkpoint), so that a failed write leaves the rows written before. Not rewritten when it
    already holds exactly these rows."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    atomic_write(path, lambda f: f.write(data))


def load_checkpoint(state_dir: Path, run_id: str, log) -> dict | None:
    """The newest readable checkpoint of the run, or None when there is none.

    When checkpoint.pt cannot be read (cut short, corrupt, a disk error) it is set aside as
    checkpoint.pt.unreadable, one line says so, and the previous one is used; when no checkpoint
    can be read, one line names the files and the fix.
    """
    newest, previous = state_dir / CHECKPOINT, state_dir / PREVIOUS_CHECKPOINT
    problems = []
    for path in (newest, previous):
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= ckpt.keys():
                raise ValueError("not a training checkpoint of ocbench")
        except Exception as exc:  # whatever the damage, the file cannot be resumed from
            problems.append((path, " ".join(str(exc).split())[:120] or type(exc).__name__))
            continue
        if problems:
            bad, why = problems[0]
            os.replace(bad, bad.with_name(bad.name + ".unreadable"))  # never rotated into the fallback
            log(f"{run_id}: {bad} cannot be read ({why}); kept it as {bad.name}.unreadable and "
                f"resuming from {path}")
        elif path == previous:
            log(f"{run_id}: {newest} is missing; resuming from the previous checkpoint, {path}")
        return ckpt
    if problems:
        names = " and ".join(f"{p} ({why})" for p, why in problems)
        raise OcbenchError(f"no readable checkpoint of {run_id}: {names}; put back a good copy of "
                           f"{CHECKPOINT}, or delete {state_dir} to train {run_id} afresh")
    return None


@contextlib.contextmanager
def run_lock(state_dir: Path, cfg: Config, run_id: str):
    """One trainer per run: an exclusive flock on state/<run>/train.lock for the whole of `train`.
    The kernel releases it when the process ends, however it ends (SIGKILL included)."""
    path = state_dir / LOCK
    fd = try_lock(path)
    if fd is None:
        raise OcbenchError(f"run {run_id} of config {cfg.name} is being trained by process {holder(path)}, "
                           f"which holds {path}; wait for it to end (or stop it), then rerun to resume")
    try:
        yield
    finally:
        os.close(fd)


GRID_PADDING = 2  # pixels around every image of a sample grid (figures crop images back out)


def grid_columns(n_images: int) -> int:
    """Columns of a sample grid of `n_images`: 8 for the default 64."""
    return int(math.sqrt(n_images)) or 1


def save_grid(images: torch.Tensor, path: Path) -> None:
    """The epoch's samples as a square-ish PNG grid; [-1, 1] -> [0, 1], then torchvision's uint8
    rounding (`fid.to_uint8`'s). Written atomically."""
    from torchvision.utils import save_image

    atomic_write(Path(path), lambda f: save_image((images.float() + 1) / 2, f, format="png",
                                                  nrow=grid_columns(len(images)), padding=GRID_PADDING))


def beta_tensor(schedule: dict, device: torch.device) -> torch.Tensor | None:
    """The networks' beta: None when the schedule is (1, 1) throughout (OCT, LOW, the baseline: no
    weighting at all), else a 2-element device tensor that the loop updates in place every epoch,
    so that a compiled or captured step sees each epoch's values without recompiling."""
    if schedules.is_identity(schedule):
        return None
    return torch.ones(2, device=device)


def rng_state(noise_rng: torch.Generator, data_rng: torch.Generator, device: torch.device) -> dict:
    """Every random state a run draws from: the CPU's, the run's noise and shuffle generators, and
    the run's own GPU's (only that one: another process may see fewer GPUs when it resumes)."""
    state = {"torch": torch.get_rng_state(), "noise": noise_rng.get_state(), "data": data_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, noise_rng: torch.Generator, data_rng: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    noise_rng.set_state(state["noise"])
    data_rng.set_state(state["data"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # checkpoints before 2026-11-29 kept every visible GPU's state
        cuda = cuda[0] if cuda else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def training_state(G, D, opt_g, opt_d, noise_rng, data_rng, device: torch.device) -> dict:
    """What a checkpoint holds of the networks, their optimisers and every random stream (and the
    device type they were on); `restore_training_state` puts it back. Preflight round-trips it too."""
    return {"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": rng_state(noise_rng, data_rng, device), "device": device.type}


def restore_training_state(state: dict, G, D, opt_g, opt_d, noise_rng, data_rng, device: torch.device) -> None:
    G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
    load_optimizer_state(opt_g, state["opt_g"]), load_optimizer_state(opt_d, state["opt_d"])
    set_rng_state(state["rng"], noise_rng, data_rng, device)


def checkpoint_device_type(ckpt: dict) -> str:
    """The device type a checkpoint was trained on: recorded since 2026-11-29; before, read off the
    noise generator's state (a CPU generator's is 5,056 bytes, a CUDA generator's 16)."""
    if "device" in ckpt:
        return ckpt["device"]
    return "cpu" if ckpt["rng"]["noise"].numel() == torch.Generator().get_state().numel() else "cuda"


# --------------------------------------------------------------------------------------------------
# the run


def train(cfg: Config, run_id: str, *, evaluator=None, log=print) -> dict:
    """Train `run_id` to the end (or to divergence), resuming from its checkpoint if there is one.

    Returns the contents of run.json. `evaluator` (an ocbench.metrics.Evaluator) is built from the
    config when not given. A second `train` of the same run while this one runs refuses at once.
    """
    cfg.parse_run(run_id)
    state_dir = cfg.results_dir / "state" / run_id
    state_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(state_dir, cfg, run_id):
        return _train(cfg, run_id, state_dir, evaluator, log)


def _train(cfg: Config, run_id: str, state_dir: Path, evaluator, log) -> dict:
    gan_name, variant_name, seed = cfg.parse_run(run_id)
    gan, variant, tc = cfg.gans[gan_name], cfg.variants[variant_name], cfg.train
    run_dir = cfg.run_dir(run_id)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    checkpoint_path, metrics_path, run_json = state_dir / CHECKPOINT, run_dir / "metrics.csv", run_dir / "run.json"
    fingerprint = protocol_fingerprint(cfg, run_id)

    # ---- a checkpoint: refuse another run's, and stop here if this run is finished
    ckpt = load_checkpoint(state_dir, run_id, log)
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        raise OcbenchError(
            f"{checkpoint_path} belongs to another config or run (fingerprint {ckpt['fingerprint']}, "
            f"this run {fingerprint}); delete {state_dir} to start {run_id} afresh"
        )
    if ckpt is not None and ckpt["finished"] and run_json.exists():
        summary = json.loads(run_json.read_text())
        log(f"{run_id}: already finished ({summary['status']}); nothing to do")
        return summary

    # ---- setup
    device = resolve_device(tc.device)
    configure_backends(tc, device)
    images = load_images(cfg.data.prepared, device, tc.data_on_device, cfg.gpus.runs_per_gpu)
    n_images, batch_size = len(images), tc.batch_size
    gather = batch_gatherer(images, device, batch_size)
    n_batches = n_images // batch_size  # the last incomplete batch is dropped
    if n_batches == 0:
        raise OcbenchError(f"{n_images} prepared images make no batch of {batch_size}; lower train.batch_size")

    torch.manual_seed(seed)
    G, D = build_networks(variant.alpha, gan, tc, device)
    noise_rng = torch.Generator(device).manual_seed(seed)
    data_rng = torch.Generator().manual_seed(seed)  # shuffles on the CPU: the same order on any device
    grid_z = torch.randn(tc.grid_size, tc.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    beta_t = beta_tensor(variant.beta, device)  # None: the schedule is (1, 1) throughout, no weighting
    opt_g, opt_d, step, autocast = training_step(G, D, gan, tc, device, noise_rng)

    # ---- resume
    position = {"epoch": 0, "batch": 0, "iterations": 0, "g_updates": 0, "sums": [0.0, 0.0, 0, 0],
                "elapsed": 0.0, "perm": None}
    rows: list[dict] = []
    if ckpt is not None:
        if checkpoint_device_type(ckpt) != device.type:  # its noise generator cannot move between device types
            saved = checkpoint_device_type(ckpt)
            raise OcbenchError(
                f"{checkpoint_path} was trained on {saved} and this run is on {device.type}: a resumed run "
                f"continues its {saved} random streams; resume it on {saved} (--set train.device={saved}), "
                f"or delete {state_dir} to train {run_id} afresh on {device.type}")
        restore_training_state(ckpt, G, D, opt_g, opt_d, noise_rng, data_rng, device)
        position, rows = ckpt["position"], ckpt["rows"]
        log(f"{run_id}: resuming at epoch {position['epoch'] + 1}, batch {position['batch']}/{n_batches}")
    saved_at = {"epoch": position["epoch"], "batch": position["batch"]} if ckpt is not None else None
    tb = tensorboard.open_run_log(cfg, run_id, position if ckpt is not None else None)

    @contextlib.contextmanager
    def writing(path: Path):
        """A failed write (a full disk) ends the run with one line: what failed and where a rerun
        resumes. Every write is atomic, so the checkpoint and metrics.csv stay as they were."""
        try:
            yield
        except OSError as exc:
            resume = (f"resumes at epoch {saved_at['epoch'] + 1}, batch {saved_at['batch']}/{n_batches}"
                      if saved_at else "starts afresh")
            raise OcbenchError(f"cannot write {path}: {exc.strerror or exc}; the last checkpoint and "
                               f"metrics.csv are intact: free space and rerun, which {resume}") from None

    def save_checkpoint(finished: bool = False) -> None:
        nonlocal saved_at
        state = {
            "fingerprint": fingerprint, "run": run_id, "finished": finished,
            **training_state(G, D, opt_g, opt_d, noise_rng, data_rng, device), "position": position, "rows": rows,
        }
        tb.flush()  # every event up to this step on disk before the checkpoint: a resume misses none
        with writing(checkpoint_path):
            atomic_write(checkpoint_path, lambda f: torch.save(state, f), state_dir / PREVIOUS_CHECKPOINT)
            where = {"run": run_id, "finished": finished, "epochs": tc.epochs, "n_batches": n_batches,
                     "batch_size": batch_size, "time": time.time(),
                     **{k: position[k] for k in ("epoch", "batch", "iterations", "elapsed")}}
            atomic_write(state_dir / POSITION, lambda f: f.write(json.dumps(where).encode()))
        saved_at = {"epoch": position["epoch"], "batch": position["batch"]}

    with writing(metrics_path):
        write_metrics(metrics_path, rows)

    if evaluator is None:
        from ocbench.metrics import Evaluator

        evaluator = Evaluator.from_config(cfg, device)

    log(f"{run_id}: {gan_name} alpha={variant.alpha} on {device}, {n_images} images, "
        f"{n_batches} batches of {batch_size}, epochs {position['epoch'] + 1}..{tc.epochs}")
    status, last_save = "ok", time.monotonic()
    while position["epoch"] < tc.epochs and status == "ok":
        epoch = position["epoch"]
        beta = schedules.beta(variant.beta, epoch, tc.epochs)  # floats, for the record
        if beta_t is not None:
            beta_t.copy_(torch.tensor(beta))  # in place: compiled and captured steps read the new values
        if position["perm"] is None:  # a fresh epoch: a new shuffle
            position["perm"] = torch.randperm(n_images, generator=data_rng)
        perm = position["perm"].to(images.device)
        sums = position["sums"]  # g_loss sum, d_loss sum, G steps, D steps (this epoch)
        G.train(), D.train()
        started = time.monotonic() - position["elapsed"]
        bar = progress(range(position["batch"], n_batches), initial=position["batch"], total=n_batches,
                       desc=f"{run_id} epoch {epoch + 1}/{tc.epochs}", unit="it", leave=False, mininterval=0.5)
        for batch_index in bar:
            real = to_model_input(gather(perm[batch_index * batch_size:(batch_index + 1) * batch_size]),
                                  device, tc.channels_last)

            loss_d, loss_g = step(real, beta_t, gan.critic.g_turn(batch_index, position["g_updates"]))
            sums[1] += loss_d
            sums[3] += 1
            position["iterations"] += 1
            if loss_g is not None:
                sums[0] += loss_g
                sums[2] += 1
                position["g_updates"] += 1
            position["batch"] = batch_index + 1

            if batch_index % cfg.log.every == cfg.log.every - 1 or batch_index == n_batches - 1:
                g_mean, d_mean = float(sums[0]) / max(sums[2], 1), float(sums[1]) / max(sums[3], 1)
                bar.set_postfix(g=f"{g_mean:.3f}", d=f"{d_mean:.3f}", refresh=False)
                tb.losses(position["iterations"], g_mean, d_mean, sums[2], sums[3], beta)
                if not (math.isfinite(g_mean) and math.isfinite(d_mean)):
                    status = "diverged"
                    break
            if time.monotonic() - last_save > 60 * tc.checkpoint_minutes:
                position["elapsed"] = time.monotonic() - started
                position["sums"] = [float(s) if torch.is_tensor(s) else s for s in sums]
                sums = position["sums"]
                save_checkpoint()
                last_save = time.monotonic()
        bar.close()

        # ---- end of epoch: losses, evaluation, samples, snapshot, the metrics row
        train_seconds = time.monotonic() - started
        g_mean, d_mean = float(sums[0]) / max(sums[2], 1), float(sums[1]) / max(sums[3], 1)
        if not (math.isfinite(g_mean) and math.isfinite(d_mean)):
            status = "diverged"
        row = {
            "epoch": epoch + 1, "iterations": position["iterations"], "g_updates": position["g_updates"],
            "g_loss": g_mean, "d_loss": d_mean, "beta_h": beta[0], "beta_l": beta[1],
            "epoch_seconds": round(train_seconds, 3),
            "images_per_s": round(sums[3] * batch_size / max(train_seconds, 1e-9), 1), "status": status,
        }
        eval_started = time.monotonic()
        G.eval()
        if status == "ok":
            grid_path = run_dir / "samples" / f"epoch_{epoch + 1:03d}.png"
            with torch.no_grad(), autocast(), writing(grid_path):
                save_grid(G(grid_z, beta_t), grid_path)
            scores = evaluator.evaluate(eval_sampler(G, beta_t, tc.latent_dim, device, epoch,
                                                     cfg.metrics.fid_samples, autocast), cfg.metrics.fid_samples,
                                        fid_inf=epoch + 1 in tc.snapshot_epochs or epoch + 1 == tc.epochs)
            # plain Python types: the rows travel in the checkpoint, which loads with weights_only
            row.update(fid=float(scores["fid"]), precision=float(scores["precision"]),
                       recall=float(scores["recall"]), weights_sha256=str(scores["weights_sha256"]),
                       weights_official=bool(scores["weights_official"]), frechet=str(scores["frechet"]),
                       kid=float(scores["kid"]), kid_std=float(scores["kid_std"]), fid_inf=float(scores["fid_inf"]))
            if epoch + 1 in tc.snapshot_epochs or epoch + 1 == tc.epochs:
                snapshot = {"generator": G.state_dict(), "alpha": variant.alpha, "width": tc.width,
                            "latent_dim": tc.latent_dim, "beta": list(beta), "epoch": epoch + 1, "run": run_id,
                            # the latents this epoch's FID was computed on: `ocbench sample` redraws them
                            "evaluation": {"seed": eval_seed(epoch), "samples": cfg.metrics.fid_samples}}
                snapshot_path = run_dir / f"generator_epoch_{epoch + 1:03d}.pt"
                with writing(snapshot_path):
                    atomic_write(snapshot_path, lambda f: torch.save(snapshot, f))
        else:
            row.update(fid=float("nan"), precision=float("nan"), recall=float("nan"),
                       weights_sha256=evaluator.weights_sha256, weights_official=evaluator.weights_official,
                       frechet=evaluator.frechet, kid=float("nan"), kid_std=float("nan"), fid_inf=float("nan"))
        row.update(evaluator.provenance(cfg.metrics.fid_samples))
        row["eval_seconds"] = round(time.monotonic() - eval_started, 3)
        tb.epoch(position["iterations"], row, grid_path if status == "ok" else None)
        rows.append(row)
        with writing(metrics_path):
            write_metrics(metrics_path, rows)
        log(f"{run_id} epoch {epoch + 1}/{tc.epochs}: g_loss {g_mean:.4f} d_loss {d_mean:.4f} "
            f"fid {row['fid']:.2f} precision {row['precision']:.3f} recall {row['recall']:.3f} "
            f"beta ({beta[0]:.2f}, {beta[1]:.2f}) {row['images_per_s']:.0f} img/s "
            f"train {train_seconds:.1f}s eval {row['eval_seconds']:.1f}s" + ("  DIVERGED" if status != "ok" else ""))
        position.update(epoch=epoch + 1, batch=0, sums=[0.0, 0.0, 0, 0], elapsed=0.0, perm=None)
        save_checkpoint()
        last_save = time.monotonic()

    summary = {
        "run": run_id, "gan": gan_name, "variant": variant_name, "seed": seed, "alpha": variant.alpha,
        "status": status, "epochs": tc.epochs, "epochs_done": len(rows),
        "diverged_epoch": rows[-1]["epoch"] if status == "diverged" else None,
        "iterations": position["iterations"], "g_updates": position["g_updates"],
        "fingerprint": fingerprint, "device": str(device), "torch": torch.__version__,
        "weights_sha256": evaluator.weights_sha256, "weights_official": evaluator.weights_official,
        "train_seconds": round(sum(r["epoch_seconds"] for r in rows), 1),
        "eval_seconds": round(sum(r["eval_seconds"] for r in rows), 1),
    }
    save_checkpoint(finished=True)
    tb.close()
    with writing(run_json):
        atomic_write(run_json, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))
    return summary


def build_networks(alpha: float, gan, tc, device: torch.device) -> tuple[Generator, Discriminator]:
    """G and D of a run at `alpha`: D's normalisation and spectral norm as the GAN's config says."""
    G = Generator(alpha, tc.width, tc.latent_dim, init=tc.init).to(device)
    D = Discriminator(alpha, tc.width, init=tc.init, norm=gan.d_norm, spectral_norm=gan.spectral_norm).to(device)
    if tc.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def training_step(G, D, gan, tc, device: torch.device, noise_rng: torch.Generator):
    """(opt_g, opt_d, step, autocast) of a run, as the config's speed options ask; the benchmarks
    build theirs here too, so that they time what training runs."""
    opt_g = make_optimizer(G.parameters(), gan.optimizer, device, capturable=tc.cuda_graphs)
    opt_d = make_optimizer(D.parameters(), gan.optimizer, device, capturable=tc.cuda_graphs)
    # Compiled copies share parameters with G and D; checkpoints always hold the plain modules.
    G_fwd, D_fwd = (torch.compile(G), torch.compile(D)) if tc.compile else (G, D)
    # autocast's weight cache must be off inside a CUDA graph (the cache would be captured stale)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.bf16,  # noqa: E731
                                      cache_enabled=not tc.cuda_graphs)
    make = make_cuda_graph_step if tc.cuda_graphs else make_step  # the fast path is its own step function
    return opt_g, opt_d, make(G_fwd, D_fwd, opt_g, opt_d, gan, noise_rng, tc, device, autocast, D), autocast


def step_parts(G, D, opt_g, opt_d, gan, autocast, D_params=None):
    """The protocol's two halves as functions of their inputs; the caller draws the noise.

    d_step(real, z, beta, eps): D on a real batch and on G(z) as two separate forward passes
    (BatchNorm sees real and fake apart), plus lambda x the gradient penalty at interpolates with
    weights `eps` when the GAN has one, backward, optimiser step, then the WGAN clamp if any.
    g_step(z, beta): G through a frozen D, backward, optimiser step.
    Both return their loss as a detached tensor (D's includes the penalty): nothing here waits for
    the device. `D_params` is the plain module behind a compiled D, for the clamp, the penalty and
    for switching its gradients off.
    """
    D_params = D if D_params is None else D_params
    d_weights = list(D_params.parameters())

    def d_step(real: torch.Tensor, z: torch.Tensor, beta, eps: torch.Tensor | None) -> torch.Tensor:
        with autocast():
            with torch.no_grad():
                fake = G(z, beta)  # no graph through G: the same as G(z).detach()
            loss = losses.d_loss(gan.loss, D(real, beta).float(), D(fake, beta).float())
            if gan.gradient_penalty:  # the plain D: torch.compile does not support double backward
                loss = loss + gan.gradient_penalty * losses.gradient_penalty(D_params, real, fake, beta, eps)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        if gan.clamp is not None:
            losses.clamp_(d_weights, gan.clamp)
        return loss.detach()

    def g_step(z: torch.Tensor, beta) -> torch.Tensor:
        D_params.requires_grad_(False)  # D's weight gradients are not needed for G's step
        with autocast():
            loss = losses.g_loss(gan.loss, D(G(z, beta), beta).float())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        D_params.requires_grad_(True)
        return loss.detach()

    return d_step, g_step


def make_step(G, D, opt_g, opt_d, gan, noise_rng, tc, device, autocast, D_params=None):
    """One iteration of the protocol, eager: `step(real, beta, g_turn)` -> (loss_d, loss_g or None).

    A D step with a fresh z, then (when `g_turn`) a G step with another fresh z, both drawn from the
    run's noise generator. The losses stay on the device: the loop reads them only now and then.
    """
    d_step, g_step = step_parts(G, D, opt_g, opt_d, gan, autocast, D_params)
    shape = (tc.batch_size, tc.latent_dim)

    def step(real: torch.Tensor, beta, g_turn: bool):
        z = torch.randn(shape, device=device, generator=noise_rng)
        eps = losses.interpolation_weights(tc.batch_size, device, noise_rng) if gan.gradient_penalty else None
        loss_d = d_step(real, z, beta, eps)
        if not g_turn:
            return loss_d, None
        return loss_d, g_step(torch.randn(shape, device=device, generator=noise_rng), beta)

    return step


class CudaGraphs:
    """The device side of `make_cuda_graph_step`: eager calls on a side stream (as capture requires
    of the calls before it: cuDNN's autotuning, the optimisers' lazily made state, torch.compile),
    and capture into a graph that replays. Tests on the CPU pass a stand-in with the same methods."""

    def __init__(self, device: torch.device):
        self.device, self.side = device, torch.cuda.Stream(device)

    def eager(self, fn, *inputs):
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            out = fn(*inputs)
        current.wait_stream(self.side)
        return out

    def capture(self, fn, *inputs):
        """`fn(*inputs)` captured once; returns `replay()`, which runs it again and returns a copy of
        its output (the graph's output buffer is overwritten by the next replay). Captured on the
        current device, which `configure_backends` set to the run's."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*inputs)

        def replay():
            graph.replay()
            return out.clone()

        return replay


def make_cuda_graph_step(G, D, opt_g, opt_d, gan, noise_rng, tc, device, autocast, D_params=None,
                         warmup: int = 3, graphs=None):
    """The same iteration as `make_step`, with the D step and the G step each captured once as a
    CUDA graph and then replayed: one launch per half instead of hundreds of small kernels.

    Inputs reach the graphs through static buffers: the real batch is copied in and each z is drawn
    into its buffer from the run's noise generator, the same draws in the same order as the eager
    step makes. beta must be the same tensor (or None) on every call: train updates it in place.
    Each half runs eagerly `warmup` times before it is captured, counted apart: with several critic
    steps per G step (and after a resume in the middle of that schedule) the first G step may come
    many iterations after the first D step. Those eager calls are ordinary training iterations.
    `graphs`: the device side (`CudaGraphs(device)` unless a test passes a stand-in).
    """
    if graphs is None:
        if device.type != "cuda":
            raise OcbenchError(f"train.cuda_graphs needs a CUDA device, not {device}; set train.cuda_graphs=false")
        graphs = CudaGraphs(device)
    d_step, g_step = step_parts(G, D, opt_g, opt_d, gan, autocast, D_params)
    shape = (tc.batch_size, tc.latent_dim)
    z_d, z_g = torch.empty(shape, device=device), torch.empty(shape, device=device)
    eps = torch.empty(tc.batch_size, 1, 1, 1, device=device) if gan.gradient_penalty else None
    static: dict = {}  # "real", "beta": the inputs every call shares
    eager_calls = {d_step: 0, g_step: 0}
    replays: dict = {}  # half -> its replay(), once captured

    def run(half, *inputs):
        if half in replays:
            return replays[half]()
        if eager_calls[half] < warmup:
            eager_calls[half] += 1
            return graphs.eager(half, *inputs)
        replays[half] = graphs.capture(half, *inputs)  # capture records without running:
        return replays[half]()  # the first replay is this iteration's step

    def step(real: torch.Tensor, beta, g_turn: bool):
        if "real" not in static:
            static["real"], static["beta"] = torch.empty_like(real), beta
        if beta is not static["beta"]:
            raise ValueError("a CUDA-graph step needs the same beta tensor on every call (update it in place)")
        static["real"].copy_(real)
        z_d.normal_(generator=noise_rng)
        if eps is not None:
            eps.uniform_(generator=noise_rng)  # what interpolation_weights draws, into the static buffer
        loss_d = run(d_step, static["real"], z_d, beta, eps)
        if not g_turn:
            return loss_d, None
        z_g.normal_(generator=noise_rng)
        return loss_d, run(g_step, z_g, beta)

    return step


def eval_sampler(G, beta, latent_dim, device, epoch, n, autocast):
    """`sample(start, count)` for the evaluator: G in eval mode on the epoch's n latents, drawn from
    `eval_seed(epoch)` (the generator snapshot records it, so `ocbench sample` redraws them)."""
    return latent_sampler(G, beta, latents(n, latent_dim, eval_seed(epoch)), device, autocast)


def eval_seed(epoch: int) -> int:
    """The seed of the latents scored after epoch index `epoch` (0-based), the same for every run."""
    return EVAL_SEED + epoch
