"""The training engine end to end on a tiny CPU setup: outputs, bit-exact resume after SIGKILL,
refusal of a foreign checkpoint, divergence, and the official WGAN critic schedule."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import checkout_env
from ocbench.formats import GRID_PADDING, METRIC_COLUMNS, PREVIOUS_CHECKPOINT, TIMING_COLUMNS, grid_columns


def tiny_images(n: int, seed: int = 0) -> np.ndarray:
    """Structured uint8 images (a coloured disc on a gradient), enough for a GAN to do something."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    out = np.empty((n, 128, 128, 3), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3)
        bg = rng.uniform(0, 1, 3)[None, None] * (0.5 + 0.5 * yy[..., None])
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        out[i] = (255 * np.where(disc, rng.uniform(0.5, 1, 3), bg)).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config overlay pointing everything into a temporary folder, with prepared data,
    placeholder Inception weights and reference statistics made by ocbench itself."""
    from ocbench import config as config_mod
    from ocbench import fid
    from ocbench.metrics import make_reference

    root = tmp_path_factory.mktemp("train")
    np.save(root / "images.npy", tiny_images(96))
    overlay = {
        "name": "tiny",
        "paths": {"results": str(root / "results"), "figures": str(root / "figures")},
        "data": {"prepared": str(root / "images.npy"), "subset": True},
        "train": {"epochs": 3, "batch_size": 8, "width": 4, "snapshot_epochs": [2],
                  "deterministic": True, "checkpoint_minutes": 0.0001, "grid_size": 16},
        "metrics": {"stats": str(root / "stats.npz"), "fid_samples": 16, "dims": 64, "batch_size": 16,
                    "pr_real_samples": 64, "weights_dir": str(root / "weights"),
                    "placeholder_weights": True},
    }
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(overlay))
    # What `ocbench fid weights` and `ocbench fid stats --config tiny.yaml` do, in this process: two
    # torch start-ups fewer per xdist worker that runs this module (the CLIs have their own tests).
    cfg = config_mod.load([config])
    fid.ensure_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
    make_reference(cfg, progress=False)
    return root, config


def tensorboard_events(log_dir: Path):
    """A run's TensorBoard events as TensorBoard reads them (purged steps hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_metrics_samples_snapshots_and_run_json(setup, cli, reference):
    root, config = setup
    proc = reference["proc"]  # `ocbench train --run dcgan_oct_s0`, trained once for this module
    run_dir = root / "results" / "tiny" / "runs" / "dcgan_oct_s0"
    rows = read_rows(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == METRIC_COLUMNS
    assert [int(r["iterations"]) for r in rows] == [12, 24, 36]  # 96 images / batch 8, each epoch
    for r in rows:
        assert np.isfinite(float(r["fid"])) and 0 <= float(r["precision"]) <= 1
        assert r["weights_official"] == "False" and len(r["weights_sha256"]) == 64
        assert r["frechet"] == "eigh"  # the default route made the FID, and the row says so
        assert (float(r["beta_h"]), float(r["beta_l"])) == (1.0, 1.0) and r["status"] == "ok"
        # KID every epoch; what the numbers compare under, in the row itself
        assert np.isfinite(float(r["kid"])) and float(r["kid_std"]) >= 0
        assert (r["fid_samples"], r["reference_images"], r["reference_split"], r["pr_real_samples"],
                r["kid_real_samples"], r["eval_precision"]) == ("16", "96", "all", "64", "16", "fp32")
    # FID-infinity at the snapshot epoch (2) and the last (3) only
    assert [np.isfinite(float(r["fid_inf"])) for r in rows] == [False, True, True]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert sorted(p.name for p in run_dir.glob("generator_epoch_*.pt")) == [
        "generator_epoch_002.pt", "generator_epoch_003.pt"]
    snap = torch.load(run_dir / "generator_epoch_003.pt", weights_only=True)
    assert snap["alpha"] == 0.5 and snap["width"] == 4 and snap["epoch"] == 3
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["status"] == "ok" and summary["epochs_done"] == 3
    assert proc.stdout.count("dcgan_oct_s0 epoch") == 3  # one log line per epoch
    # Rerunning a finished run does nothing.
    again = cli("train", "--config", config, "--run", "dcgan_oct_s0", check=True)
    assert "already finished" in again.stdout


def train_here(configs, run, *overrides, log=lambda *_: None):
    """`ocbench train --config ... --set ... --run RUN` in this process, where a test is about what
    training computes, not the command (about 5 s of torch start-up fewer a call; the command keeps
    its tests here: the SIGKILL resumes, the lock, the damaged checkpoints, the full disk)."""
    from ocbench import config as config_mod
    from ocbench.train import train

    # train.deterministic switches torch's deterministic algorithms on for the process: back as it
    # was afterwards, for the tests this worker runs next.
    deterministic, cublas = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        summary = train(config_mod.load(configs, list(overrides)), run, log=log)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    assert summary["status"] == "ok", summary


def test_ramp_schedule_reaches_the_metrics(setup):
    root, config = setup
    train_here([config], "lsgan_ramp_s0", "train.epochs=2")
    rows = read_rows(root / "results" / "tiny" / "runs" / "lsgan_ramp_s0" / "metrics.csv")
    assert [(float(r["beta_h"]), float(r["beta_l"])) for r in rows] == [(0.5, 0.5), (1.0, 0.0)]


# wgan_combi_s1: the weight clamp and a beta schedule, killed after an epoch and its evaluation.
# sngan and wgan_gp (one epoch, to keep the cost down): spectral norm's power-iteration vectors and the
# gradient penalty's interpolation weights, drawn from the run's noise generator, survive the kill.
@pytest.mark.parametrize("run, epochs, kill_epoch", [
    ("wgan_combi_s1", 3, 1), ("sngan_oct_s0", 1, 0), ("wgan_gp_oct_s0", 1, 0)])
def test_sigkill_mid_epoch_then_rerun_is_bit_identical(setup, cli, run, epochs, kill_epoch):
    root, config = setup
    # log.every 4: TensorBoard loss points inside epochs, where the kill falls
    settings = [f"train.epochs={epochs}", "metrics.fid_samples=8", "log.every=4"]
    base = ["--config", config, *(arg for setting in settings for arg in ("--set", setting))]
    # The uninterrupted reference, in its own results folder, trained in this process: the command
    # is under test in the killed run and its rerun below.
    train_here([config], run, *settings, f"paths.results={root / 'reference'}")

    # The same run, killed with SIGKILL in the middle of an epoch, then rerun with the same command.
    exe = Path(sys.executable).with_name("ocbench")
    state = root / "results" / "tiny" / "state" / run / "checkpoint.pt"
    proc = subprocess.Popen([str(exe), "train", *map(str, base), "--run", run], env=checkout_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            position = torch.load(state, weights_only=True)["position"]
        except Exception:  # not written yet
            time.sleep(0.02)
            continue
        if position["epoch"] == kill_epoch and 2 <= position["batch"] <= 9:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = position
            break
    proc.wait()
    assert killed_at is not None, "the run finished before it could be killed mid-epoch"
    # The checkpoint the rerun resumes from: checkpoint.pt, or checkpoint.prev.pt when the kill fell
    # between a save's two renames (the newest moved aside, the new one not yet in; a loaded machine
    # lands there now and then), which test_an_unreadable_checkpoint_falls_back_to_the_previous_one covers.
    resumes_from = state if state.exists() else state.with_name(PREVIOUS_CHECKPOINT)
    on_disk = torch.load(resumes_from, weights_only=True)["position"]
    assert on_disk["epoch"] == kill_epoch and 0 < on_disk["batch"] < 12  # really a mid-epoch checkpoint
    # A killed writer can leave events past its checkpoint on disk: it flushes before each checkpoint,
    # but also every 120 s and whenever its file buffer fills (a sample grid does). Here checkpoints
    # come every iteration, so the kill rarely catches one: put the next loss point on disk as such a
    # writer would. The resumed run must hide it (purge_step), else TensorBoard shows that step twice.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(root / "results" / "tiny" / "tensorboard" / run)) as late:
        late.add_scalar("loss/d", 1e6, -(-(on_disk["iterations"] + 1) // 4) * 4)  # log.every 4
    # `ocbench status` says so: failed (no trainer alive) in that epoch; another run not started.
    gan, variant, seed = run.rsplit("_", 2)
    runs = f"run={{gans: [{gan}], variants: [{variant}], seeds: [{seed[1:]}, 5]}}"
    table = cli("status", *base, "--set", runs, check=True).stdout
    assert re.search(rf"^{run}\s+failed\s+{kill_epoch + 1}/{epochs} \(\d+/12\)\s", table, re.M), table
    assert re.search(rf"^{run[:-1]}5\s+not started\s", table, re.M), table

    resumed = cli("train", *base, "--run", run, check=True)
    assert f"resuming at epoch {kill_epoch + 1}" in resumed.stdout
    table = cli("status", *base, "--set", runs, check=True).stdout
    assert re.search(rf"^{run}\s+finished\s+{epochs}/{epochs}\s+{12 * epochs}\s", table, re.M), table

    # TensorBoard shows each step once, none missing: what the killed attempt wrote past its last
    # checkpoint is purged. The same steps and FIDs as the uninterrupted run.
    ours_tb = tensorboard_events(root / "results" / "tiny" / "tensorboard" / run)
    ref_tb = tensorboard_events(root / "reference" / "tiny" / "tensorboard" / run)
    for tag in ("loss/d", "loss/g", "beta/h", "fid", "recall"):
        steps = [e.step for e in ours_tb.Scalars(tag)]
        assert steps == [e.step for e in ref_tb.Scalars(tag)] and len(set(steps)) == len(steps), tag
    assert [e.step for e in ours_tb.Scalars("loss/d")] == list(range(4, 12 * epochs + 1, 4))
    assert [e.value for e in ours_tb.Scalars("fid")] == [e.value for e in ref_tb.Scalars("fid")]
    assert [e.step for e in ours_tb.Images("samples")] == [12 * (e + 1) for e in range(epochs)]

    ours = torch.load(state, weights_only=True)
    ref = torch.load(root / "reference" / "tiny" / "state" / run / "checkpoint.pt", weights_only=True)
    for net in ("G", "D"):
        assert ours[net].keys() == ref[net].keys()
        for key in ref[net]:
            assert torch.equal(ours[net][key], ref[net][key]), f"{net}.{key} differs after resume"
    assert any(k.endswith("._u") for k in ref["D"]) == run.startswith("sngan")  # SN's u is in the checkpoint
    rows = read_rows(root / "results" / "tiny" / "runs" / run / "metrics.csv")
    ref_rows = read_rows(root / "reference" / "tiny" / "runs" / run / "metrics.csv")
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]  # noqa: E731
    assert len(rows) == epochs and drop(rows) == drop(ref_rows)


def test_a_checkpoint_from_another_run_is_refused(setup, cli, reference):
    root, config = setup
    src = root / "results" / "tiny" / "state" / "dcgan_oct_s0" / "checkpoint.pt"
    dst = root / "results" / "tiny" / "state" / "dcgan_oct_s7" / "checkpoint.pt"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    proc = cli("train", "--config", config, "--run", "dcgan_oct_s7")
    assert proc.returncode == 1
    assert "holds the state of run dcgan_oct_s0, not dcgan_oct_s7" in proc.stderr, proc.stderr
    assert "delete" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_checkpoint_of_other_settings_says_which_and_how_to_resume_it(setup, reference):
    """A run killed, then its config changed (alpha): the checkpoint is refused in one line naming the
    setting and the --set that resumes it, never advising to delete it; with that --set it resumes.
    A finished run whose results Snakemake deleted to rerun it for changed settings trains afresh."""
    from ocbench import config as config_mod
    from ocbench.errors import OcbenchError
    from ocbench.train import train

    root, config = setup
    killed = root / "other-settings"
    shutil.copytree(root / "results" / "tiny" / "state" / RUN, killed / "tiny" / "state" / RUN)
    newest = killed / "tiny" / "state" / RUN / "checkpoint.pt"
    ckpt = torch.load(newest, weights_only=True)
    ckpt["finished"] = False  # as if killed before it said so
    torch.save(ckpt, newest)
    changed = config_mod.load([config], [f"paths.results={killed}", "variants.oct.alpha=0.25"])
    with pytest.raises(OcbenchError) as refused:
        train(changed, RUN, log=lambda *_: None)
    said = str(refused.value)
    assert "unfinished run (3 of 3 epochs done)" in said and "variants.oct.alpha 0.5 (this config: 0.25)" in said
    assert "`--set variants.oct.alpha=0.5`" in said and "delete" not in said and "\n" not in said, said
    assert not torch.load(newest, weights_only=True)["finished"]  # nothing touched
    # The settings it names resume it (at its end: the run.json of the run it was).
    train_here([config], RUN, f"paths.results={killed}", "variants.oct.alpha=0.25", "variants.oct.alpha=0.5")
    summary = json.loads((killed / "tiny" / "runs" / RUN / "run.json").read_text())
    assert summary["protocol"]["variants.oct.alpha"] == 0.5 and summary["fingerprint"] == ckpt["fingerprint"]

    # Finished, its results gone (Snakemake deletes a job's outputs before it reruns it): afresh.
    (killed / "tiny" / "runs" / RUN / "run.json").unlink()
    said = []
    train_here([config], RUN, f"paths.results={killed}", "train.epochs=1", log=said.append)
    assert "finished run of other settings (train.epochs 3 (this config: 1))" in said[0], said
    summary = json.loads((killed / "tiny" / "runs" / RUN / "run.json").read_text())
    assert (summary["epochs_done"], summary["protocol"]["train.epochs"]) == (1, 1)


def test_a_checkpoint_from_a_gpu_is_refused_on_the_cpu_in_one_line(setup, cli, reference):
    """A run killed on a GPU and rerun where only the CPU is left: its noise generator's state (16
    bytes of a CUDA generator, 5,056 of a CPU one) cannot be resumed there. A checkpoint records its
    device."""
    root, config = setup
    src = root / "results" / "tiny" / "state" / "dcgan_oct_s0" / "checkpoint.pt"
    ckpt = torch.load(src, weights_only=True)
    assert ckpt["device"] == "cpu"
    ckpt["device"], ckpt["rng"]["noise"] = "cuda", torch.zeros(16, dtype=torch.uint8)  # as a GPU run's
    ckpt["finished"] = False
    gpu_state = root / "gpu" / "tiny" / "state" / "dcgan_oct_s0" / "checkpoint.pt"
    gpu_state.parent.mkdir(parents=True)
    torch.save(ckpt, gpu_state)
    proc = cli("train", "--config", config, "--set", f"paths.results={root / 'gpu'}", "--run", "dcgan_oct_s0")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert "was trained on cuda and this run is on cpu" in line and "train.device=cuda" in line, proc.stderr
    assert "delete" in line and "Traceback" not in proc.stderr


def test_a_checkpoint_of_another_format_is_refused_in_one_line_and_kept(setup, reference):
    """Checkpoints carry a format version; there has been no release, so a checkpoint of another
    version (an older checkout's) is not guessed at: one line says which versions and the two ways
    on, and the file stays where it is (it is not unreadable, only not this ocbench's to resume)."""
    from ocbench import config as config_mod
    from ocbench.errors import OcbenchError
    from ocbench.formats import CHECKPOINT_FORMAT
    from ocbench.train import train

    root, config = setup
    ckpt = torch.load(root / "results" / "tiny" / "state" / "dcgan_oct_s0" / "checkpoint.pt", weights_only=True)
    assert ckpt["format_version"] == CHECKPOINT_FORMAT
    cfg = config_mod.load([config], [f"paths.results={root / 'other-format'}"])
    state = cfg.results_dir / "state" / "dcgan_oct_s0" / "checkpoint.pt"
    state.parent.mkdir(parents=True)
    for version, said in ((None, "carries no format version"), (CHECKPOINT_FORMAT + 1, f"is of checkpoint format "
                                                                                       f"{CHECKPOINT_FORMAT + 1}")):
        torch.save({k: v for k, v in ckpt.items() if k != "format_version"} | (
            {} if version is None else {"format_version": version}), state)
        with pytest.raises(OcbenchError, match=f"{said}, and this ocbench resumes format {CHECKPOINT_FORMAT}; resume "
                                               "dcgan_oct_s0 with the ocbench that wrote it, or start it again here"):
            train(cfg, "dcgan_oct_s0", log=lambda line: None)
        assert state.exists() and not state.with_name("checkpoint.pt.unreadable").exists()


def test_divergence_stops_cleanly_and_the_job_succeeds(setup, cli):
    root, config = setup
    proc = cli("train", "--config", config, "--run", "lsgan_baseline_s0",
               "--set", "gans.lsgan.optimizer.lr=1.0e+12", check=True)
    run_dir = root / "results" / "tiny" / "runs" / "lsgan_baseline_s0"
    summary = json.loads((run_dir / "run.json").read_text())
    rows = read_rows(run_dir / "metrics.csv")
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == int(rows[-1]["epoch"])
    assert rows[-1]["status"] == "diverged" and rows[-1]["fid"] == "nan"
    assert "DIVERGED" in proc.stdout


def test_official_wgan_critic_schedule_and_clamp(setup):
    root, config = setup
    from conftest import REPO

    train_here([config, REPO / "workflow/config/official-wgan.yaml"], "wgan_oct_s0", "name=tiny-official",
               "train.epochs=2")
    rows = read_rows(root / "results" / "tiny-official" / "runs" / "wgan_oct_s0" / "metrics.csv")
    # 12 batches an epoch; n_critic is 20 for the first 50 G updates: G steps on batch 0 only.
    assert [(int(r["iterations"]), int(r["g_updates"])) for r in rows] == [(12, 1), (24, 2)]
    ckpt = torch.load(root / "results" / "tiny-official" / "state" / "wgan_oct_s0" / "checkpoint.pt",
                      weights_only=True)
    assert max(v.abs().max().item() for k, v in ckpt["D"].items() if v.is_floating_point()
               and "running" not in k) <= torch.tensor(0.05).item()  # 0.05 in float32
    assert ckpt["opt_d"]["param_groups"][0]["lr"] == 5e-5 and "alpha" in ckpt["opt_d"]["param_groups"][0]


def test_the_d_step_adds_lambda_times_the_gradient_penalty():
    """TrainingStep's D loss for wgan_gp is D's WGAN loss plus 10 x the penalty at interpolates whose
    weights come from the run's noise generator, right after the fake batch's z."""
    import copy
    from contextlib import nullcontext

    from ocbench import config, losses
    from ocbench.nn import Discriminator, Generator
    from ocbench.train import TrainingStep, make_optimizer

    cfg = config.load(overrides=["train.width=4", "train.batch_size=4"])
    gan, train_cfg = cfg.gans["wgan_gp"], cfg.train
    torch.manual_seed(0)
    G, D = Generator(0.5, 4), Discriminator(0.5, 4, norm=gan.d_norm)
    real, beta = torch.rand(4, 3, 128, 128) * 2 - 1, (1.0, 1.0)
    noise = torch.Generator().manual_seed(0)

    G_ref, D_ref, noise_ref = copy.deepcopy(G), copy.deepcopy(D), torch.Generator().manual_seed(0)
    with torch.no_grad():
        fake = G_ref(torch.randn(4, train_cfg.latent_dim, generator=noise_ref), beta)
    eps = losses.interpolation_weights(4, "cpu", noise_ref)
    expected = losses.d_loss("wgan", D_ref(real, beta), D_ref(fake, beta)) + 10.0 * losses.gradient_penalty(
        D_ref, real, fake, beta, eps)

    step = TrainingStep(G, D, make_optimizer(G.parameters(), gan.optimizer), make_optimizer(D.parameters(), gan.optimizer),
                        gan, noise, batch_size=4, latent_dim=train_cfg.latent_dim, device=torch.device("cpu"),
                        autocast=nullcontext)
    loss_d, loss_g = step(real, beta, g_turn=False)
    assert loss_g is None and loss_d.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(noise.get_state(), noise_ref.get_state())  # the same draws, in the same order


# --------------------------------------------------------------------------------------------------
# what a user runs into: a second trainer, damaged checkpoints, a full disk, images out of a run

RUN = "dcgan_oct_s0"
# A checkpoint after every iteration, however fast the machine: where a stopped run resumes is known.
EVERY_ITERATION = ["--set", "train.checkpoint_minutes=1.0e-9"]


@pytest.fixture(scope="module")
def reference(setup):
    """RUN trained once, uninterrupted, in the config's own results folder (which only reads and
    copies of it use): what a run writes, and what every interrupted, damaged or resumed copy of it
    must end up equal to (train.deterministic is on). Trained once: a training is the slow part."""
    from conftest import run_cli

    root, config = setup
    proc = run_cli("train", "--config", config, "--run", RUN, check=True)
    results = root / "results" / "tiny"
    state = torch.load(results / "state" / RUN / "checkpoint.pt", weights_only=True)
    return {"rows": read_rows(results / "runs" / RUN / "metrics.csv"), "G": state["G"], "proc": proc,
            "generator": results / "runs" / RUN / "generator_epoch_003.pt"}


def drop_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def assert_one_line_error(proc, *fragments):
    """Exit code 1 and one error line, the last on stderr (progress lines may come before it)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ocbench: error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert sum(line.startswith("ocbench:") for line in lines) == 1, proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[-1], lines[-1]
    return lines[-1]


def full_disk_at(path: Path) -> Path:
    """Make the next write of `path` fail as on a full disk: training writes every file to
    `<name>.tmp` first, and `<name>.tmp` -> /dev/full makes the kernel answer ENOSPC to it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to("/dev/full")
    return tmp


def test_a_second_trainer_of_a_run_refuses_until_the_first_dies(setup, cli):
    root, config = setup
    base = ["--config", config, "--set", f"paths.results={root / 'lock'}", "--run", RUN]
    lock = root / "lock" / "tiny" / "state" / RUN / "train.lock"
    first = subprocess.Popen([str(Path(sys.executable).with_name("ocbench")), "train", *map(str, base)],
                             env=checkout_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.01)
        # Stopped, it holds its lock as a busy trainer would, for as long as this test needs.
        os.kill(first.pid, signal.SIGSTOP)
        assert lock.read_text().strip() == str(first.pid), "the first trainer never took its lock"

        second = cli("train", *base)
        assert_one_line_error(second, f"run {RUN} of config tiny", f"process {first.pid}", lock)
        table = cli("status", *base[:4], check=True).stdout  # its trainer holds the lock: training
        assert re.search(rf"^{RUN}\s+training\s.*PID {first.pid}$", table, re.M), table
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the kernel releases the lock of a killed process
        first.wait()
    cli("train", *base, check=True)  # after SIGKILL the same command trains
    assert json.loads((root / "lock" / "tiny" / "runs" / RUN / "run.json").read_text())["status"] == "ok"
    assert "already finished" in cli("train", *base, check=True).stdout  # released at exit too


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(setup, cli, reference):
    root, config = setup
    base = ["--config", config, "--set", f"paths.results={root / 'damaged'}", "--run", RUN, *EVERY_ITERATION]
    state, run_dir = root / "damaged" / "tiny" / "state" / RUN, root / "damaged" / "tiny" / "runs" / RUN
    newest, previous = state / "checkpoint.pt", state / "checkpoint.prev.pt"

    # Stop the run in epoch 2 (a full disk for its sample grid), then cut its newest checkpoint short.
    full_disk_at(run_dir / "samples" / "epoch_002.png")
    assert cli("train", *base).returncode == 1
    fallback = torch.load(previous, weights_only=True)["position"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    proc = cli("train", *base, check=True)
    said = [line for line in proc.stdout.splitlines() if "cannot be read" in line]
    assert len(said) == 1 and str(newest) in said[0] and f"resuming from {previous}" in said[0], proc.stdout
    assert f"resuming at epoch {fallback['epoch'] + 1}, batch {fallback['batch']}/12" in proc.stdout
    assert (state / "checkpoint.pt.unreadable").exists()
    # Resumed from the previous checkpoint, the run ends exactly where the uninterrupted one did.
    assert drop_timing(read_rows(run_dir / "metrics.csv")) == drop_timing(reference["rows"])
    ours = torch.load(newest, weights_only=True)["G"]
    assert all(torch.equal(ours[k], reference["G"][k]) for k in reference["G"])

    # Killed between moving the newest aside and renaming the new one in: the previous one serves.
    newest.unlink()
    proc = cli("train", *base, check=True)
    assert f"{newest} is missing" in proc.stdout and json.loads((run_dir / "run.json").read_text())["status"] == "ok"

    # Neither readable: one line naming both files and the fix; the files stay as they were.
    for path in (newest, previous):
        path.write_bytes(path.read_bytes()[:1000])
    assert_one_line_error(cli("train", *base), newest, previous, f"delete {state}")
    assert newest.stat().st_size == previous.stat().st_size == 1000


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_resumes(setup, cli, reference):
    """Every kind of write training does, made to fail with a real ENOSPC in turn (see
    full_disk_at): the run stops with one line naming the file, the checkpoint and the metrics
    written before are intact, and after each the same command goes on, to the uninterrupted result."""
    root, config = setup
    base = ["--config", config, "--set", f"paths.results={root / 'full'}", "--run", RUN, *EVERY_ITERATION]
    state, run_dir = root / "full" / "tiny" / "state" / RUN, root / "full" / "tiny" / "runs" / RUN
    checkpoint, metrics = state / "checkpoint.pt", run_dir / "metrics.csv"
    # In the order the run reaches them: epoch 2's sample grid, then (each rerun resuming at the
    # end of epoch 2's iterations) its metrics row, its generator snapshot, its checkpoint.
    targets = [run_dir / "samples" / "epoch_002.png", metrics, run_dir / "generator_epoch_002.pt", checkpoint]
    for target in targets:
        before = {p: p.read_bytes() for p in (checkpoint, metrics) if p.exists()}
        tmp = full_disk_at(target)
        line = assert_one_line_error(cli("train", *base), f"cannot write {target}: No space left on device",
                                     "rerun, which resumes at epoch 2, batch")
        assert not tmp.is_symlink() and not tmp.exists()  # no temporary file left behind
        if target != targets[0]:  # (the first run wrote its checkpoints before the disk filled)
            assert checkpoint.read_bytes() == before[checkpoint], line
        assert len(read_rows(metrics)) == 1 + (target == checkpoint)  # epoch 2's row came before
        if metrics in before and target != checkpoint:
            assert metrics.read_bytes() == before[metrics]
        torch.load(checkpoint, weights_only=True)  # readable
    cli("train", *base, check=True)
    assert drop_timing(read_rows(metrics)) == drop_timing(reference["rows"])
    ours = torch.load(checkpoint, weights_only=True)["G"]
    assert all(torch.equal(ours[k], reference["G"][k]) for k in reference["G"])


def pytorch_fid_cli(folder: Path, root: Path, tmp_path: Path) -> float:
    """`python -m pytorch_fid FOLDER stats.npz` as a user runs it, on the setup's placeholder weights
    (found through torch.hub's cache in a TORCH_HOME of its own): the FID it prints."""
    import re

    from ocbench import fid

    torch_home = tmp_path / "torch"
    if not torch_home.exists():
        (torch_home / "hub" / "checkpoints").mkdir(parents=True)
        (torch_home / "hub" / "checkpoints" / fid.WEIGHTS_NAME).symlink_to(root / "weights" / fid.WEIGHTS_NAME)
    theirs = subprocess.run([sys.executable, "-m", "pytorch_fid", str(folder), str(root / "stats.npz"), "--dims", "64",
                             "--device", "cpu", "--batch-size", "16", "--num-workers", "0"],
                            env={**os.environ, "TORCH_HOME": str(torch_home)}, capture_output=True, text=True)
    assert theirs.returncode == 0, theirs.stderr
    return float(re.search(r"FID:\s+(\S+)", theirs.stdout).group(1))


def test_sample_writes_the_pngs_the_fid_scores(setup, cli, reference, tmp_path):
    """`ocbench sample` -> `python -m pytorch_fid DIR STATS` gives the FID of
    `ocbench fid score --generator` for the same generator, n and seed; the grid holds the same images."""
    import re

    from PIL import Image

    from ocbench.formats import to_uint8
    from ocbench.sample import generator_sampler

    root, config = setup
    generator, n, seed = reference["generator"], 24, 5
    out = tmp_path / "samples"
    cli("sample", "--generator", generator, "-n", n, "--seed", seed, "--out", out, "--device", "cpu", check=True)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(n)]
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    with torch.no_grad():
        expected = to_uint8(generator_sampler(generator, "cpu", n, seed)[0](0, n)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(pixels, expected)  # the FID's latents, quantised as the FID does

    fid_theirs = pytorch_fid_cli(out, root, tmp_path)
    ours = cli("fid", "score", "--config", config, "--generator", generator, "-n", n, "--seed", seed,
               "--device", "cpu", check=True)
    fid_ours = float(re.search(r"FID (\S+)", ours.stdout).group(1))
    assert abs(fid_ours - fid_theirs) <= 1e-4 * abs(fid_theirs), (fid_ours, fid_theirs)

    grid = tmp_path / "grid.png"
    cli("sample", "--generator", generator, "-n", n, "--seed", seed, "--grid", grid, "--device", "cpu", check=True)
    cells = np.asarray(Image.open(grid).convert("RGB"))
    step, columns = 128 + GRID_PADDING, grid_columns(n)
    for i in range(n):
        r, c = divmod(i, columns)
        cell = cells[GRID_PADDING + r * step:][:128, GRID_PADDING + c * step:][:, :128]
        np.testing.assert_array_equal(cell, pixels[i])

    # A folder that already holds images would mix them into pytorch-fid's score: refused.
    assert_one_line_error(cli("sample", "--generator", generator, "-n", 2, "--out", out), f"{out} already holds {n}")


def test_a_snapshot_gives_back_the_fid_training_recorded(setup, cli, reference, tmp_path):
    """Without -n and --seed, `ocbench fid score --generator` and `ocbench sample` use the latents the
    snapshot's epoch was scored on in training: the FID in metrics.csv, from the snapshot alone."""
    import re

    root, config = setup
    recorded = float(reference["rows"][2]["fid"])  # generator_epoch_003.pt: epoch 3
    ours = cli("fid", "score", "--config", config, "--generator", reference["generator"], "--device", "cpu",
               check=True)
    fid_ours = float(re.search(r"FID (\S+)", ours.stdout).group(1))
    assert abs(fid_ours - recorded) <= 1e-6 * recorded + 5e-7, (fid_ours, recorded)  # printed to 6 decimals

    out = tmp_path / "epoch3"
    cli("sample", "--generator", reference["generator"], "--out", out, "--device", "cpu", check=True)
    assert len(list(out.iterdir())) == 16  # metrics.fid_samples of the run
    fid_theirs = pytorch_fid_cli(out, root, tmp_path)
    assert abs(fid_theirs - recorded) <= 1e-4 * recorded, (fid_theirs, recorded)


def test_under_bf16_the_recorded_fid_is_the_snapshots_fid_in_fp32(setup, cli, tmp_path):
    """train.bf16 trains under bf16 autocast, but the per-epoch samples are generated in fp32, as
    `ocbench fid score --generator` regenerates them from the snapshot (the schema's promise that
    evaluation stays fp32): the two FIDs agree. Under autocast they differed."""
    import re

    root, config = setup
    run = "lsgan_oct_s1"
    cli("train", "--config", config, "--run", run, "--set", "train.bf16=true", "--set", "train.epochs=1", check=True)
    recorded = float(read_rows(root / "results" / "tiny" / "runs" / run / "metrics.csv")[0]["fid"])
    snapshot = root / "results" / "tiny" / "runs" / run / "generator_epoch_001.pt"
    ours = cli("fid", "score", "--config", config, "--generator", snapshot, "--device", "cpu", check=True)
    fid_ours = float(re.search(r"FID (\S+)", ours.stdout).group(1))
    assert abs(fid_ours - recorded) <= 1e-6 * recorded + 5e-7, (fid_ours, recorded)
