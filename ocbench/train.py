"""Train one run, `{gan}_{variant}_s{seed}`, from the config to per-epoch metrics.

Read it top to bottom. `train` is the run's outline in one screen: refuse or skip on its checkpoint,
`set_up` (device, data, networks, optimisers, the step), `resume`, then per epoch `run_epoch` (every
batch: one D step on a real batch and on G(z) for a fresh z as two forward passes, then one G step
with another fresh z when the GAN's critic schedule says so) and `end_of_epoch` (FID and
precision/recall on `metrics.fid_samples` samples, a sample grid from a fixed z, a generator
snapshot, the metrics row), and a checkpoint; with `train.g_steps` the last epoch stops at that G step,
and with `metrics.final_samples` a final evaluation follows (run.json's "final"). One iteration is
`TrainingStep.__call__`; the CUDA-graph step is a variant that changes only how the halves are run.
Helpers follow in the order the outline uses them: the step, the data path, the device and
optimisers, the checkpoint's contents.

Outputs under results/<config>/runs/<run id>/: metrics.csv (one row per epoch, rewritten whole),
samples/epoch_EEE.png, generator_epoch_EEE.pt, run.json (written last: the run is finished).
The resumable state lives in results/<config>/state/<run id>/, outside what Snakemake declares,
because Snakemake deletes the declared outputs of an unfinished job before rerunning it:
checkpoint.pt, the previous one beside it (checkpoint.prev.pt, the fallback when the newest cannot
be read), checkpoint.json (where the newest stands and its protocol, for `ocbench status` and
`ocbench aggregate`, which load no checkpoint),
and train.lock, which one `ocbench train` of the run holds while it runs (names: ocbench/formats.py).
TensorBoard event files go to results/<config>/tensorboard/<run id>/ (ocbench/tensorboard.py).

Every file is written whole and renamed (`formats.atomic_write`): a kill or a full disk leaves the
previous version, and a failed write stops the run with one line; rerunning resumes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ocbench import losses, schedules, tensorboard
from ocbench.config import (Config, GanConfig, TrainConfig, VariantConfig, digest, protocol_changes, run_protocol,
                             set_options)
from ocbench.device import resolve_device, runs_sharing_gpu
from ocbench.errors import OcbenchError, one_line
from ocbench.batches import batch_gatherer, load_images, to_model_input
from ocbench.formats import CHECKPOINT, CHECKPOINT_FORMAT, RunFiles, atomic_write, write_metrics
from ocbench.lock import run_lock
from ocbench.nn import discriminator, generator
from ocbench.progress import progress
from ocbench.sample import latent_sampler, latents, save_grid

CHECKPOINT_KEYS = {"format_version", "fingerprint", "run", "finished", "G", "D", "opt_g", "opt_d", "rng", "device",
                   "position", "rows"}


# --------------------------------------------------------------------------------------------------
# the run's state between iterations: what a checkpoint keeps of where the run stands


@dataclass
class EpochTotals:
    """The epoch's running loss sums and step counts. The sums stay tensors on the device while the
    epoch runs (adding a loss does not wait for the device); they are read every `log.every`
    iterations and at the end of the epoch."""

    g_loss: float | torch.Tensor = 0.0
    d_loss: float | torch.Tensor = 0.0
    g_steps: int = 0
    d_steps: int = 0

    def add(self, loss_d: torch.Tensor, loss_g: torch.Tensor | None) -> None:
        self.d_loss += loss_d
        self.d_steps += 1
        if loss_g is not None:
            self.g_loss += loss_g
            self.g_steps += 1

    def means(self) -> tuple[float, float]:
        """(mean G loss, mean D loss) of the epoch so far."""
        return float(self.g_loss) / max(self.g_steps, 1), float(self.d_loss) / max(self.d_steps, 1)

    def as_list(self) -> list:
        """As a checkpoint keeps them: [G loss sum, D loss sum, G steps, D steps], plain numbers."""
        return [float(s) if torch.is_tensor(s) else s for s in (self.g_loss, self.d_loss, self.g_steps, self.d_steps)]


@dataclass
class Position:
    """Where the run stands, the resume cursor: after `iterations` D steps (`g_updates` G steps) in
    all, at batch `batch` of epoch index `epoch` in the epoch's shuffle `perm`."""

    epoch: int = 0
    batch: int = 0
    iterations: int = 0
    g_updates: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    elapsed: float = 0.0  # training seconds of this epoch before the checkpoint (a resumed epoch's time)
    perm: torch.Tensor | None = None  # this epoch's shuffle of the images; None: not drawn yet

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.totals, self.elapsed, self.perm = self.epoch + 1, 0, EpochTotals(), 0.0, None

    def as_dict(self) -> dict:
        """The checkpoint's "position" (its keys and their order as checkpoints have always had them)."""
        return {"epoch": self.epoch, "batch": self.batch, "iterations": self.iterations, "g_updates": self.g_updates,
                "sums": self.totals.as_list(), "elapsed": self.elapsed, "perm": self.perm}

    @classmethod
    def from_dict(cls, saved: dict) -> Position:
        return cls(saved["epoch"], saved["batch"], saved["iterations"], saved["g_updates"],
                   EpochTotals(*saved["sums"]), saved["elapsed"], saved["perm"])


# --------------------------------------------------------------------------------------------------
# the run


def train(cfg: Config, run_id: str, *, evaluator=None, log=print) -> dict:
    """Train `run_id` to the end (or to divergence), resuming from its checkpoint if there is one.

    Returns the contents of run.json. `evaluator` (an ocbench.metrics.Evaluator) is built from the
    config when not given. A second `train` of the same run while this one runs refuses at once.
    """
    cfg.parse_run(run_id)
    state_dir = cfg.results_dir / "state" / run_id
    with run_lock(state_dir, run_id, cfg.name):
        return _train(cfg, run_id, RunFiles(cfg.run_dir(run_id), state_dir), evaluator, log)


def _train(cfg: Config, run_id: str, files: RunFiles, evaluator, log) -> dict:
    train_cfg = cfg.train
    (files.run_dir / "samples").mkdir(parents=True, exist_ok=True)
    protocol = run_protocol(cfg, run_id)
    fingerprint = digest(protocol)

    # A checkpoint of another protocol is never resumed; a finished run has nothing left to do.
    ckpt = load_checkpoint(files, run_id, log)
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        ckpt = give_way(ckpt, files, run_id, protocol, log)
    if ckpt is not None and ckpt["finished"] and files.summary.exists():
        summary = json.loads(files.summary.read_text())
        log(f"{run_id}: already finished ({summary['status']}); nothing to do")
        return summary

    # Set up the device, the data, the networks, their optimisers and the step that trains them;
    # then put back what the checkpoint kept: weights, optimiser moments, random streams, position.
    run = set_up(cfg, run_id)
    position, rows = resume(run, ckpt, files, log)
    tb = tensorboard.open_run_log(cfg, run_id, position.iterations if ckpt is not None else None)
    checkpoints = Checkpoints(run, files, protocol, tb, rows, position if ckpt is not None else None)
    with checkpoints.writing(files.metrics):
        write_metrics(files.metrics, rows)
    if evaluator is None:
        from ocbench.metrics import Evaluator

        evaluator = Evaluator.from_config(cfg, run.device)

    log(f"{run_id}: {run.gan_name} alpha={run.variant.alpha} on {run.device}, {len(run.images)} images, "
        f"{run.n_batches} batches of {train_cfg.batch_size}, epochs {position.epoch + 1}..{train_cfg.epochs}")
    status = "ok"
    while position.epoch < train_cfg.epochs and status == "ok":
        # Train on every batch of the epoch (checkpointing every `train.checkpoint_minutes`) ...
        epoch = run_epoch(run, position, tb, checkpoints)
        # ... then evaluate, record the epoch's row, and checkpoint at the start of the next epoch.
        row = end_of_epoch(run, position, epoch, evaluator, files, checkpoints)
        status = row["status"]
        tb.epoch(position.iterations, row, files.grid(position.epoch + 1) if status == "ok" else None)
        rows.append(row)
        with checkpoints.writing(files.metrics):
            write_metrics(files.metrics, rows)
        log(epoch_line(run, row, epoch))
        position.next_epoch()
        checkpoints.save(position)

    summary = run_summary(run, status, position, rows, protocol, evaluator)
    if status == "ok" and cfg.metrics.final_samples:
        summary["final"] = final_evaluation(run, evaluator, log)
    checkpoints.save(position, finished=True)
    tb.close()
    with checkpoints.writing(files.summary):
        atomic_write(files.summary, json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class Run:
    """What a run's epochs work with, built once by `set_up`."""

    cfg: Config
    id: str
    gan_name: str
    gan_cfg: GanConfig
    variant_name: str
    variant: VariantConfig
    seed: int
    device: torch.device
    images: torch.Tensor  # the prepared uint8 N x H x W x 3 array, on the device when it fits
    gather: object  # gather(indices) -> that batch of `images` on the device (`batch_gatherer`)
    n_batches: int
    G: torch.nn.Module  # ocbench.nn's generator of train.arch
    D: torch.nn.Module
    step: TrainingStep
    noise_rng: torch.Generator  # z and WGAN-GP's interpolation weights, on the device
    data_rng: torch.Generator  # the shuffles, on the CPU: the same order on any device
    beta: torch.Tensor | None  # the networks' beta, updated in place every epoch; None: no weighting
    grid_z: torch.Tensor  # the fixed latents of every epoch's sample grid


def set_up(cfg: Config, run_id: str) -> Run:
    """The run's device, data, networks, random streams and step, seeded by the run's seed. The
    order of the draws (networks' init, then the noise, shuffle and grid generators) is the protocol's."""
    gan_name, _, _ = cfg.parse_run(run_id)
    gan_cfg, train_cfg = cfg.gans[gan_name], cfg.train
    device = resolve_device(train_cfg.device)
    configure_backends(train_cfg, device)
    images = load_images(cfg.data.prepared, device, train_cfg.data_on_device, runs_sharing_gpu(cfg.gpus.runs_per_gpu))
    n_batches = len(images) // train_cfg.batch_size  # the last incomplete batch is dropped
    if n_batches == 0:
        raise OcbenchError(f"{len(images)} prepared images make no batch of {train_cfg.batch_size}; "
                           f"lower train.batch_size")
    if train_cfg.g_steps is not None:
        needed = gan_cfg.critic.epochs_for(train_cfg.g_steps, n_batches)
        if needed != train_cfg.epochs:
            raise OcbenchError(
                f"train.g_steps {train_cfg.g_steps} takes {needed} epochs of {n_batches} batches of "
                f"{train_cfg.batch_size} (with {gan_name}'s critic schedule), not train.epochs {train_cfg.epochs}; "
                f"set train.epochs: {needed}")

    return build_run(cfg, run_id, device, images)


def build_run(cfg: Config, run_id: str, device: torch.device, images: torch.Tensor, graphs=None) -> Run:
    """The run's networks, random streams and step on `images`, seeded by the run's seed: what
    `set_up` trains, and what preflight checks on random images. The order of the draws (networks'
    init, then the noise, shuffle and grid generators) is the protocol's. `graphs`: a CUDA-graph
    step's device side (tests pass a stand-in on the CPU, see `CudaGraphStep`)."""
    gan_name, variant_name, seed = cfg.parse_run(run_id)
    gan_cfg, variant, train_cfg = cfg.gans[gan_name], cfg.variants[variant_name], cfg.train
    torch.manual_seed(seed)
    G, D = build_networks(variant.alpha, gan_cfg, train_cfg, device)
    noise_rng = torch.Generator(device).manual_seed(seed)
    data_rng = torch.Generator().manual_seed(seed)
    grid_z = torch.randn(train_cfg.grid_size, train_cfg.latent_dim,
                         generator=torch.Generator().manual_seed(seed)).to(device)
    return Run(cfg, run_id, gan_name, gan_cfg, variant_name, variant, seed, device, images,
               batch_gatherer(images, device, train_cfg.batch_size), len(images) // train_cfg.batch_size, G, D,
               build_step(G, D, gan_cfg, train_cfg, device, noise_rng, graphs), noise_rng, data_rng,
               beta_tensor(variant.beta, device), grid_z)


def resume(run: Run, ckpt: dict | None, files: RunFiles, log) -> tuple[Position, list[dict]]:
    """(position, metrics rows) to go on from: the checkpoint's, its training state restored into
    `run`; a fresh start's when there is none."""
    if ckpt is None:
        return Position(), []
    saved = ckpt["device"]
    if saved != run.device.type:  # a noise generator cannot move between device types
        raise OcbenchError(
            f"{files.checkpoint} was trained on {saved} and this run is on {run.device.type}: a resumed run "
            f"continues its {saved} random streams; resume it on {saved} (--set train.device={saved}), "
            f"or delete {files.state_dir} to train {run.id} afresh on {run.device.type}")
    position = restore(run, ckpt)
    log(f"{run.id}: resuming at epoch {position.epoch + 1}, batch {position.batch}/{run.n_batches}")
    return position, ckpt["rows"]


def restore(run: Run, ckpt: dict) -> Position:
    """Put a checkpoint's training state (`checkpoint_state`) back into `run`; returns its position."""
    restore_training_state(ckpt, run.G, run.D, run.step.opt_g, run.step.opt_d, run.noise_rng, run.data_rng,
                           run.device)
    return Position.from_dict(ckpt["position"])


@dataclass
class EpochResult:
    """How an epoch's training ended: "ok" or "diverged" (a non-finite mean loss), its training
    seconds (a resumed epoch's include those before the checkpoint), and its beta (beta_H, beta_L)."""

    status: str
    seconds: float
    beta: tuple[float, float]


def run_epoch(run: Run, position: Position, tb, checkpoints: Checkpoints, show_progress: bool = True) -> EpochResult:
    """Train on the batches of epoch `position.epoch` from `position.batch` on, advancing `position`.
    Stops early when the running mean loss stops being finite. `show_progress`: the epoch's bar."""
    cfg, train_cfg, epoch = run.cfg, run.cfg.train, position.epoch
    beta = set_beta(run, epoch)
    if position.perm is None:  # a fresh epoch: a new shuffle
        position.perm = torch.randperm(len(run.images), generator=run.data_rng)
    perm, size, totals = position.perm.to(run.images.device), train_cfg.batch_size, position.totals
    run.G.train(), run.D.train()
    started = time.monotonic() - position.elapsed
    bar = progress(range(position.batch, run.n_batches), initial=position.batch, total=run.n_batches,
                   desc=f"{run.id} epoch {epoch + 1}/{train_cfg.epochs}", unit="it", leave=False, mininterval=0.5,
                   disable=not show_progress)
    status = "ok"
    for batch_index in bar:
        real = to_model_input(run.gather(perm[batch_index * size:(batch_index + 1) * size]), run.device,
                              train_cfg.channels_last)
        loss_d, loss_g = run.step(real, run.beta, run.gan_cfg.critic.g_turn(batch_index, position.g_updates))
        totals.add(loss_d, loss_g)
        position.iterations += 1
        position.g_updates += loss_g is not None
        position.batch = batch_index + 1
        last_g_step = position.g_updates == train_cfg.g_steps  # with train.g_steps: the run stops here

        # Now and then (and at the epoch's last batch) the running losses come off the device.
        if batch_index % cfg.log.every == cfg.log.every - 1 or batch_index == run.n_batches - 1 or last_g_step:
            g_mean, d_mean = totals.means()
            bar.set_postfix(g=f"{g_mean:.3f}", d=f"{d_mean:.3f}", refresh=False)
            tb.losses(position.iterations, g_mean, d_mean, totals.g_steps, totals.d_steps, beta)
            if not (math.isfinite(g_mean) and math.isfinite(d_mean)):
                status = "diverged"
                break
        if last_g_step:  # within the last epoch (set_up checked train.epochs): evaluated as an epoch
            break
        if checkpoints.due():
            position.elapsed = time.monotonic() - started
            checkpoints.save(position)
    bar.close()
    return EpochResult(status, time.monotonic() - started, beta)


def end_of_epoch(run: Run, position: Position, epoch: EpochResult, evaluator, files: RunFiles,
                 checkpoints: Checkpoints) -> dict:
    """The epoch's metrics row: its losses and speed, then (unless it diverged) the sample grid, FID,
    precision/recall and KID of the generator, and at snapshot epochs the generator's weights."""
    train_cfg, n_samples, number = run.cfg.train, run.cfg.metrics.fid_samples, position.epoch + 1
    g_mean, d_mean = position.totals.means()
    status = epoch.status if math.isfinite(g_mean) and math.isfinite(d_mean) else "diverged"
    row = {
        "epoch": number, "iterations": position.iterations, "g_updates": position.g_updates,
        "g_loss": g_mean, "d_loss": d_mean, "beta_h": epoch.beta[0], "beta_l": epoch.beta[1],
        "epoch_seconds": round(epoch.seconds, 3),
        "images_per_s": round(position.totals.d_steps * train_cfg.batch_size / max(epoch.seconds, 1e-9), 1),
        "status": status,
    }
    eval_started = time.monotonic()
    run.G.eval()
    if status == "ok":
        # Grids and evaluation samples in fp32 whatever training's autocast: `ocbench sample` and
        # `fid score --generator` regenerate them from the snapshot in fp32 and must get the same.
        with torch.no_grad(), checkpoints.writing(files.grid(number)):
            save_grid(run.G(run.grid_z, run.beta), files.grid(number))
        snapshot_epoch = number in train_cfg.snapshot_kept
        seed = eval_seed(run.cfg, position.epoch)
        scores = evaluator.evaluate(eval_sampler(run.G, run.beta, train_cfg.latent_dim, run.device, seed, n_samples),
                                    n_samples, fid_inf=snapshot_epoch)
        # plain Python types: the rows travel in the checkpoint, which loads with weights_only
        row.update(fid=float(scores["fid"]), precision=float(scores["precision"]),
                   recall=float(scores["recall"]), weights_sha256=str(scores["weights_sha256"]),
                   weights_official=bool(scores["weights_official"]), frechet=str(scores["frechet"]),
                   kid=float(scores["kid"]), kid_std=float(scores["kid_std"]), fid_inf=float(scores["fid_inf"]))
        if snapshot_epoch:
            snapshot = {"generator": run.G.state_dict(), "alpha": run.variant.alpha, "width": train_cfg.g_width,
                        "latent_dim": train_cfg.latent_dim, "beta": list(epoch.beta), "epoch": number, "run": run.id,
                        # the latents this epoch's FID was computed on: `ocbench sample` redraws them
                        "evaluation": {"seed": seed, "samples": n_samples}, "arch": train_cfg.arch}
            with checkpoints.writing(files.snapshot(number)):
                atomic_write(files.snapshot(number), lambda f: torch.save(snapshot, f))
    else:
        nan = float("nan")
        row.update(fid=nan, precision=nan, recall=nan, weights_sha256=evaluator.weights_sha256,
                   weights_official=evaluator.weights_official, frechet=evaluator.frechet, kid=nan, kid_std=nan,
                   fid_inf=nan)
    row.update(evaluator.provenance(n_samples))
    row["eval_seconds"] = round(time.monotonic() - eval_started, 3)
    return row


def final_evaluation(run: Run, evaluator, log) -> dict:
    """run.json's "final": FID, KID and precision/recall of `metrics.final_samples` samples of the
    trained generator (published tables score 50,000); the FID against `metrics.final_real_images`
    real images drawn at random when set (published tables: 50,000), else against the same reference
    as every epoch's, KID and precision/recall against the real features every epoch uses.
    Their latents come from the seed after the last epoch's (`eval_seed`), which no epoch scores;
    `ocbench fid score --final --generator <last snapshot> -n N --seed S` scores the same images."""
    cfg, n = run.cfg, run.cfg.metrics.final_samples
    seed = eval_seed(cfg, cfg.train.epochs)
    started = time.monotonic()
    run.G.eval()
    scores = evaluator.evaluate(eval_sampler(run.G, run.beta, cfg.train.latent_dim, run.device, seed, n), n,
                                final=True)
    final = {"fid": float(scores["fid"]), "kid": float(scores["kid"]), "kid_std": float(scores["kid_std"]),
             "precision": float(scores["precision"]), "recall": float(scores["recall"]), "seed": seed,
             **evaluator.provenance(n, final=True), "eval_seconds": round(time.monotonic() - started, 3)}
    log(f"{run.id} final evaluation on {n} samples: fid {final['fid']:.2f} kid {final['kid']:.5f} "
        f"precision {final['precision']:.3f} recall {final['recall']:.3f} ({final['eval_seconds']:.1f}s)")
    return final


def epoch_line(run: Run, row: dict, epoch: EpochResult) -> str:
    """The log line of a finished epoch."""
    beta = epoch.beta
    return (f"{run.id} epoch {row['epoch']}/{run.cfg.train.epochs}: g_loss {row['g_loss']:.4f} "
            f"d_loss {row['d_loss']:.4f} fid {row['fid']:.2f} precision {row['precision']:.3f} "
            f"recall {row['recall']:.3f} beta ({beta[0]:.2f}, {beta[1]:.2f}) {row['images_per_s']:.0f} img/s "
            f"train {epoch.seconds:.1f}s eval {row['eval_seconds']:.1f}s"
            + ("  DIVERGED" if row["status"] != "ok" else ""))


def run_summary(run: Run, status: str, position: Position, rows: list[dict], protocol: dict, evaluator) -> dict:
    """run.json: how the run ended, what it did, and what its numbers were computed with (its
    protocol, which `ocbench aggregate` and the commands after it check against their config)."""
    return {
        "run": run.id, "gan": run.gan_name, "variant": run.variant_name, "seed": run.seed,
        "alpha": run.variant.alpha, "status": status, "epochs": run.cfg.train.epochs, "epochs_done": len(rows),
        "diverged_epoch": rows[-1]["epoch"] if status == "diverged" else None,
        "iterations": position.iterations, "g_updates": position.g_updates,
        "fingerprint": digest(protocol), "device": str(run.device), "torch": torch.__version__,
        "weights_sha256": evaluator.weights_sha256, "weights_official": evaluator.weights_official,
        "train_seconds": round(sum(r["epoch_seconds"] for r in rows), 1),
        "eval_seconds": round(sum(r["eval_seconds"] for r in rows), 1),
        "protocol": protocol,
    }


# --------------------------------------------------------------------------------------------------
# checkpoints


def give_way(ckpt: dict, files: RunFiles, run_id: str, protocol: dict, log) -> None:
    """A checkpoint of another protocol (`ckpt`) is never resumed. A finished one whose results are
    gone gives way: Snakemake deleted them to rerun the job because the run's settings changed (rerun
    trigger `params`), so the run trains afresh under this protocol. Any other is refused in one line
    saying what differs and how to resume it; nothing is deleted."""
    if ckpt["run"] != run_id:
        raise OcbenchError(f"{files.checkpoint} holds the state of run {ckpt['run']}, not {run_id}: move it back "
                           f"to {files.state_dir.parent / ckpt['run']}")
    recorded = ckpt.get("protocol")
    changes = protocol_changes(recorded, protocol)
    if ckpt["finished"] and not files.summary.exists():
        log(f"{run_id}: {files.checkpoint} is the finished run of other settings ({changes}), whose results "
            "are gone; training afresh with this config's")
        return None
    of = f" of {recorded['train.epochs']}" if recorded else ""
    state = "a finished run" if ckpt["finished"] else f"an unfinished run ({ckpt['position']['epoch']}{of} epochs done)"
    theirs = (f"its settings (`{set_options(recorded, protocol)}`)" if recorded
              else "the ocbench and config that made it")
    raise OcbenchError(
        f"{files.checkpoint} is {state} of other settings: {changes}; to {'use' if ckpt['finished'] else 'resume'} "
        f"it, train with {theirs}; to train this config's beside it, give this config another name (--set name=NEW)")


class Checkpoints:
    """The run's checkpoint policy: `save` after every epoch and, inside one, when `due` (every
    `train.checkpoint_minutes`); `writing(path)` around every write, so that a failed write (a full
    disk) ends the run with one line saying what failed and where a rerun resumes."""

    def __init__(self, run: Run, files: RunFiles, protocol: dict, tb, rows: list[dict],
                 resumed_at: Position | None):
        self.run, self.files, self.protocol, self.tb = run, files, protocol, tb
        self.fingerprint = digest(protocol)
        self.rows = rows  # the run's metrics rows, which every checkpoint carries (appended in place)
        self.saved_at = None if resumed_at is None else (resumed_at.epoch, resumed_at.batch)
        self.last_save = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last_save > 60 * self.run.cfg.train.checkpoint_minutes

    def save(self, position: Position, finished: bool = False) -> None:
        """checkpoint.pt (the one it replaces kept as checkpoint.prev.pt), then checkpoint.json."""
        run, files = self.run, self.files
        state = {"fingerprint": self.fingerprint, "protocol": self.protocol, "run": run.id, "finished": finished,
                 **checkpoint_state(run, position), "rows": self.rows}
        self.tb.flush()  # every event up to this step on disk before the checkpoint: a resume misses none
        train_cfg = run.cfg.train
        where = {"run": run.id, "fingerprint": self.fingerprint, "protocol": self.protocol, "finished": finished,
                 "epochs": train_cfg.epochs, "n_batches": run.n_batches,
                 "batch_size": train_cfg.batch_size, "time": time.time(), "epoch": position.epoch,
                 "batch": position.batch, "iterations": position.iterations, "elapsed": position.elapsed}
        with self.writing(files.checkpoint):
            atomic_write(files.checkpoint, lambda f: torch.save(state, f), files.previous)
            atomic_write(files.position_json, json.dumps(where))
        self.saved_at, self.last_save = (position.epoch, position.batch), time.monotonic()

    @contextlib.contextmanager
    def writing(self, path: Path):
        """Every write is atomic, so the checkpoint and metrics.csv stay as they were."""
        try:
            yield
        except OSError as exc:
            resume = "starts afresh" if self.saved_at is None else \
                f"resumes at epoch {self.saved_at[0] + 1}, batch {self.saved_at[1]}/{self.run.n_batches}"
            raise OcbenchError(f"cannot write {path}: {exc.strerror or exc}; the last checkpoint and "
                               f"metrics.csv are intact: free space and rerun, which {resume}") from None


def load_checkpoint(files: RunFiles, run_id: str, log) -> dict | None:
    """The newest readable checkpoint of the run, or None when there is none.

    When checkpoint.pt cannot be read (cut short, corrupt, a disk error) it is set aside as
    checkpoint.pt.unreadable, one line says so, and the previous one is used; when no checkpoint
    can be read, one line names the files and the fix.
    """
    newest, previous = files.checkpoint, files.previous
    problems = []
    for path in (newest, previous):
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(ckpt, dict) or "format_version" not in ckpt and "G" not in ckpt:
                raise ValueError("not a training checkpoint of ocbench")
        except Exception as exc:  # whatever the damage, the file cannot be resumed from
            problems.append((path, one_line(exc, 120)))
            continue
        version = ckpt.get("format_version")
        if version != CHECKPOINT_FORMAT:  # readable, but not this ocbench's to resume
            made = f"is of checkpoint format {version}" if version is not None else "carries no format version"
            raise OcbenchError(f"{path} {made}, and this ocbench resumes format {CHECKPOINT_FORMAT}; resume {run_id} "
                               f"with the ocbench that wrote it, or start it again here (delete {files.state_dir})")
        if not CHECKPOINT_KEYS <= ckpt.keys():
            problems.append((path, "not a training checkpoint of ocbench"))
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
                           f"{CHECKPOINT}, or delete {files.state_dir} to train {run_id} afresh")
    return None


def training_state(G, D, opt_g, opt_d, noise_rng, data_rng, device: torch.device) -> dict:
    """What a checkpoint holds of the networks, their optimisers and every random stream (and the
    device type they were on); `restore_training_state` puts it back."""
    return {"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": rng_state(noise_rng, data_rng, device), "device": device.type}


def checkpoint_state(run: Run, position: Position) -> dict:
    """What a checkpoint holds to continue the run where it stands (`restore` puts it back)."""
    return {"format_version": CHECKPOINT_FORMAT,
            **training_state(run.G, run.D, run.step.opt_g, run.step.opt_d, run.noise_rng, run.data_rng, run.device),
            "position": position.as_dict()}


def restore_training_state(state: dict, G, D, opt_g, opt_d, noise_rng, data_rng, device: torch.device) -> None:
    G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
    load_optimizer_state(opt_g, state["opt_g"]), load_optimizer_state(opt_d, state["opt_d"])
    set_rng_state(state["rng"], noise_rng, data_rng, device)


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
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------------------
# one iteration


class TrainingStep:
    """One iteration of the protocol: `step(real, beta, g_turn)` -> (loss_d, loss_g or None).

    A D step with a fresh z, then (when `g_turn`) a G step with another fresh z, both drawn from the
    run's noise generator (and WGAN-GP's interpolation weights between them). The losses stay on the
    device: the loop reads them only now and then. `G` and `D` may be compiled copies; `D_plain` is
    the module behind a compiled D, for the clamp, the penalty and switching its gradients off.
    Holds the optimisers (`opt_g`, `opt_d`) and the autocast context the run's forward passes use.
    """

    def __init__(self, G, D, opt_g, opt_d, gan_cfg: GanConfig, noise_rng: torch.Generator, *, batch_size: int,
                 latent_dim: int, device: torch.device, autocast=contextlib.nullcontext, D_plain=None):
        self.G, self.D, self.opt_g, self.opt_d, self.gan_cfg = G, D, opt_g, opt_d, gan_cfg
        self.D_plain = D if D_plain is None else D_plain
        self.d_weights = list(self.D_plain.parameters())
        self.noise_rng, self.device, self.autocast = noise_rng, device, autocast
        self.z_shape = (batch_size, latent_dim)

    def __call__(self, real: torch.Tensor, beta, g_turn: bool):
        z = torch.randn(self.z_shape, device=self.device, generator=self.noise_rng)
        eps = (losses.interpolation_weights(self.z_shape[0], self.device, self.noise_rng)
               if self.gan_cfg.gradient_penalty else None)
        loss_d = self.d_step(real, z, beta, eps)
        if not g_turn:
            return loss_d, None
        return loss_d, self.g_step(torch.randn(self.z_shape, device=self.device, generator=self.noise_rng), beta)

    def d_step(self, real: torch.Tensor, z: torch.Tensor, beta, eps: torch.Tensor | None) -> torch.Tensor:
        """D on a real batch and on G(z) as two separate forward passes (BatchNorm sees real and fake
        apart), plus lambda x the gradient penalty at interpolates with weights `eps` when the GAN has
        one, backward, optimiser step, then the WGAN clamp if any. Returns the loss (penalty included),
        detached: nothing here waits for the device."""
        gan_cfg = self.gan_cfg
        with self.autocast():
            with torch.no_grad():
                fake = self.G(z, beta)  # no graph through G: the same as G(z).detach()
            loss = losses.d_loss(gan_cfg.loss, self.D(real, beta).float(), self.D(fake, beta).float())
            if gan_cfg.gradient_penalty:  # the plain D: torch.compile does not support double backward
                loss = loss + gan_cfg.gradient_penalty * losses.gradient_penalty(self.D_plain, real, fake, beta, eps)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        if gan_cfg.clamp is not None:
            losses.clamp_(self.d_weights, gan_cfg.clamp)
        return loss.detach()

    def g_step(self, z: torch.Tensor, beta) -> torch.Tensor:
        """G through a frozen D, backward, optimiser step; returns the loss, detached."""
        self.D_plain.requires_grad_(False)  # D's weight gradients are not needed for G's step
        with self.autocast():
            loss = losses.g_loss(self.gan_cfg.loss, self.D(self.G(z, beta), beta).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.D_plain.requires_grad_(True)
        return loss.detach()


class CudaGraphStep(TrainingStep):
    """The same iteration, with the D step and the G step each captured once as a CUDA graph and then
    replayed: one launch per half instead of hundreds of small kernels.

    Inputs reach the graphs through static buffers: the real batch is copied in and each z is drawn
    into its buffer from the run's noise generator, the same draws in the same order as the eager
    step makes. beta must be the same tensor (or None) on every call: train updates it in place.
    Each half runs eagerly `warmup` times before it is captured, counted apart: with several critic
    steps per G step (and after a resume in the middle of that schedule) the first G step may come
    many iterations after the first D step. Those eager calls are ordinary training iterations.
    `graphs`: the device side (`CudaGraphs(device)` unless a test passes a stand-in).
    """

    WARMUP = 3  # eager calls of each half before its capture

    def __init__(self, *args, warmup: int = WARMUP, graphs=None, **kwargs):
        super().__init__(*args, **kwargs)
        if graphs is None:
            if self.device.type != "cuda":
                raise OcbenchError(f"train.cuda_graphs needs a CUDA device, not {self.device}; "
                                   f"set train.cuda_graphs=false")
            graphs = CudaGraphs(self.device)
        self.graphs, self.warmup = graphs, warmup
        self.z_d = torch.empty(self.z_shape, device=self.device)  # the D step's z, drawn into in place
        self.z_g = torch.empty(self.z_shape, device=self.device)  # the G step's
        self.eps = torch.empty(self.z_shape[0], 1, 1, 1, device=self.device) if self.gan_cfg.gradient_penalty else None
        self.real = self.beta = None  # the inputs every call shares, set by the first
        self.eager_calls = {"d_step": 0, "g_step": 0}
        self.replays: dict = {}  # half's name -> its replay(), once captured

    @property
    def replaying(self) -> bool:
        """Both halves captured: every call from now on is two replays (what a timer should time)."""
        return len(self.replays) == 2

    def __call__(self, real: torch.Tensor, beta, g_turn: bool):
        if self.real is None:
            self.real, self.beta = torch.empty_like(real), beta
        if beta is not self.beta:
            raise ValueError("a CUDA-graph step needs the same beta tensor on every call (update it in place)")
        self.real.copy_(real)
        self.z_d.normal_(generator=self.noise_rng)
        if self.eps is not None:
            self.eps.uniform_(generator=self.noise_rng)  # what interpolation_weights draws, into the buffer
        loss_d = self.run_half(self.d_step, self.real, self.z_d, beta, self.eps)
        if not g_turn:
            return loss_d, None
        self.z_g.normal_(generator=self.noise_rng)
        return loss_d, self.run_half(self.g_step, self.z_g, beta)

    def run_half(self, half, *inputs):
        name = half.__name__
        if name in self.replays:
            return self.replays[name]()
        if self.eager_calls[name] < self.warmup:
            self.eager_calls[name] += 1
            return self.graphs.eager(half, *inputs)
        self.replays[name] = self.graphs.capture(half, *inputs)  # capture records without running:
        return self.replays[name]()  # the first replay is this iteration's step


class CudaGraphs:
    """The device side of `CudaGraphStep`: eager calls on a side stream (as capture requires of the
    calls before it: cuDNN's autotuning, the optimisers' lazily made state, torch.compile), and
    capture into a graph that replays. Tests on the CPU pass a stand-in with the same methods."""

    def __init__(self, device: torch.device):
        self.device, self.side = device, torch.cuda.Stream(device)
        self.capture_stream = torch.cuda.Stream(device)  # capture needs a stream other than the default

    def eager(self, fn, *inputs):
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            out = fn(*inputs)
        current.wait_stream(self.side)
        return out

    def capture(self, fn, *inputs):
        """`fn(*inputs)` captured once; returns `replay()`, which runs it again and returns a copy of
        its output (the graph's output buffer is overwritten by the next replay). Captured on a
        stream of the run's device (torch.cuda.graph makes it current, with its device)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.capture_stream):
            out = fn(*inputs)

        def replay():
            graph.replay()
            return out.clone()

        return replay


def build_step(G, D, gan_cfg: GanConfig, train_cfg: TrainConfig, device: torch.device,
               noise_rng: torch.Generator, graphs=None) -> TrainingStep:
    """The run's step and its optimisers, as the config's speed options ask; the benchmarks and
    preflight build theirs here too, so that they time and check what training runs. `graphs`: a
    CUDA-graph step's device side (tests pass a stand-in on the CPU, see `CudaGraphStep`)."""
    capturable = train_cfg.cuda_graphs and device.type == "cuda"  # a capturable Adam steps only on a GPU
    opt_g = make_optimizer(G.parameters(), gan_cfg.optimizer, device, capturable=capturable)
    opt_d = make_optimizer(D.parameters(), gan_cfg.optimizer, device, capturable=capturable)
    # Compiled copies share parameters with G and D; checkpoints always hold the plain modules.
    G_fwd, D_fwd = (torch.compile(G), torch.compile(D)) if train_cfg.compile else (G, D)
    # autocast's weight cache must be off inside a CUDA graph (the cache would be captured stale)
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=train_cfg.bf16,
                                 cache_enabled=not train_cfg.cuda_graphs)
    parts = dict(batch_size=train_cfg.batch_size, latent_dim=train_cfg.latent_dim, device=device,
                 autocast=autocast, D_plain=D)
    if train_cfg.cuda_graphs:  # the fast path is its own step
        return CudaGraphStep(G_fwd, D_fwd, opt_g, opt_d, gan_cfg, noise_rng, **parts, graphs=graphs)
    return TrainingStep(G_fwd, D_fwd, opt_g, opt_d, gan_cfg, noise_rng, **parts)


def build_networks(alpha: float, gan_cfg: GanConfig, train_cfg: TrainConfig,
                   device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """G and D of a run at `alpha`, of `train.arch`: D's normalisation and spectral norm as the GAN's
    config says."""
    G = generator(train_cfg.arch, alpha, train_cfg.g_width, train_cfg.latent_dim, init=train_cfg.init).to(device)
    D = discriminator(train_cfg.arch, alpha, train_cfg.d_width, init=train_cfg.init, norm=gan_cfg.d_norm,
                      spectral_norm=gan_cfg.spectral_norm, resnet=train_cfg.resnet).to(device)
    if train_cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def set_beta(run: Run, epoch: int) -> tuple[float, float]:
    """Epoch `epoch`'s beta into the run's networks, in place (compiled and captured steps read the
    new values); returned as floats, for the record."""
    beta = schedules.beta(run.variant.beta, epoch, run.cfg.train.epochs)
    if run.beta is not None:
        run.beta.copy_(torch.tensor(beta))
    return beta


def beta_tensor(schedule: dict, device: torch.device) -> torch.Tensor | None:
    """The networks' beta: None when the schedule is (1, 1) throughout (OCT, LOW, the baseline: no
    weighting at all), else a 2-element device tensor that the loop updates in place every epoch,
    so that a compiled or captured step sees each epoch's values without recompiling."""
    if schedules.is_identity(schedule):
        return None
    return torch.ones(2, device=device)


# --------------------------------------------------------------------------------------------------
# the device and the optimisers


def configure_backends(train_cfg: TrainConfig, device: torch.device) -> None:
    """Deterministic algorithms when asked (bit-exact resume), else cuDNN's autotuner on a GPU.
    CUDA's current device is left alone: every call names the run's device (`resolve_device`)."""
    if train_cfg.deterministic and device.type == "cuda" and train_cfg.arch == "resnet":
        raise OcbenchError(
            "train.deterministic with train.arch resnet cannot run on a GPU: the generator's bilinear "
            "upsampling has no deterministic CUDA backward in torch; set train.deterministic=false (a resumed "
            "run then continues within the GPU's last-bit noise, which preflight checks) or train on the CPU")
    if train_cfg.deterministic:
        # cuBLAS reads this when it starts (the first matmul): without it, deterministic mode raises
        # on the generator's Linear with CUDA >= 10.2. Harmless on the CPU; a user's own value stays.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # algorithm choice only; precision stays the default


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


# --------------------------------------------------------------------------------------------------
# evaluation's latents


def eval_sampler(G, beta, latent_dim, device, seed: int, n: int):
    """`sample(start, count)` for the evaluator: G in eval mode on n latents drawn from `seed` (an
    epoch's is `eval_seed`; the generator snapshot records it, so `ocbench sample` redraws them),
    in fp32 even when training runs under bf16 autocast, as `ocbench sample` regenerates them."""
    return latent_sampler(G, beta, latents(n, latent_dim, seed), device)


def eval_seed(cfg: Config, epoch: int) -> int:
    """The seed of the latents scored after epoch index `epoch` (0-based), the same for every run:
    `metrics.eval_seed` + epoch."""
    return cfg.metrics.eval_seed + epoch
