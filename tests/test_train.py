"""The training engine end to end on a tiny CPU setup: outputs, bit-exact resume after SIGKILL,
refusal of a foreign checkpoint, divergence, and the official WGAN critic schedule."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ocbench.train import METRIC_COLUMNS, TIMING_COLUMNS


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
    from conftest import run_cli

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
    run_cli("fid", "weights", "--config", config, check=True)
    run_cli("fid", "stats", "--config", config, check=True)
    return root, config


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_metrics_samples_snapshots_and_run_json(setup, cli):
    root, config = setup
    proc = cli("train", "--config", config, "--run", "dcgan_oct_s0", check=True)
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


def test_ramp_schedule_reaches_the_metrics(setup, cli):
    root, config = setup
    cli("train", "--config", config, "--run", "lsgan_ramp_s0", "--set", "train.epochs=2", check=True)
    rows = read_rows(root / "results" / "tiny" / "runs" / "lsgan_ramp_s0" / "metrics.csv")
    assert [(float(r["beta_h"]), float(r["beta_l"])) for r in rows] == [(0.5, 0.5), (1.0, 0.0)]


# wgan_combi_s1: the weight clamp and a beta schedule, killed after an epoch and its evaluation.
# sngan and wgan_gp (one epoch, to keep the cost down): spectral norm's power-iteration vectors and the
# gradient penalty's interpolation weights, drawn from the run's noise generator, survive the kill.
@pytest.mark.parametrize("run, epochs, kill_epoch", [
    ("wgan_combi_s1", 3, 1), ("sngan_oct_s0", 1, 0), ("wgan_gp_oct_s0", 1, 0)])
def test_sigkill_mid_epoch_then_rerun_is_bit_identical(setup, cli, run, epochs, kill_epoch):
    root, config = setup
    base = ["--config", config, "--set", f"train.epochs={epochs}", "--set", "metrics.fid_samples=8"]
    # The uninterrupted reference, in its own results folder.
    cli("train", *base, "--set", f"paths.results={root / 'reference'}", "--run", run, check=True)

    # The same run, killed with SIGKILL in the middle of an epoch, then rerun with the same command.
    exe = Path(sys.executable).with_name("ocbench")
    state = root / "results" / "tiny" / "state" / run / "checkpoint.pt"
    proc = subprocess.Popen([str(exe), "train", *map(str, base), "--run", run],
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
    on_disk = torch.load(state, weights_only=True)["position"]
    assert on_disk["epoch"] == kill_epoch and 0 < on_disk["batch"] < 12  # really a mid-epoch checkpoint

    resumed = cli("train", *base, "--run", run, check=True)
    assert f"resuming at epoch {kill_epoch + 1}" in resumed.stdout

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


def test_a_checkpoint_from_another_run_is_refused(setup, cli):
    root, config = setup
    src = root / "results" / "tiny" / "state" / "dcgan_oct_s0" / "checkpoint.pt"
    dst = root / "results" / "tiny" / "state" / "dcgan_oct_s7" / "checkpoint.pt"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    proc = cli("train", "--config", config, "--run", "dcgan_oct_s7")
    assert proc.returncode == 1
    assert "belongs to another config or run" in proc.stderr and "delete" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


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


def test_official_wgan_critic_schedule_and_clamp(setup, cli):
    root, config = setup
    from conftest import REPO

    cli("train", "--config", config, "--config", REPO / "workflow/config/official-wgan.yaml",
        "--set", "name=tiny-official", "--set", "train.epochs=2", "--run", "wgan_oct_s0", check=True)
    rows = read_rows(root / "results" / "tiny-official" / "runs" / "wgan_oct_s0" / "metrics.csv")
    # 12 batches an epoch; n_critic is 20 for the first 50 G updates: G steps on batch 0 only.
    assert [(int(r["iterations"]), int(r["g_updates"])) for r in rows] == [(12, 1), (24, 2)]
    ckpt = torch.load(root / "results" / "tiny-official" / "state" / "wgan_oct_s0" / "checkpoint.pt",
                      weights_only=True)
    assert max(v.abs().max().item() for k, v in ckpt["D"].items() if v.is_floating_point()
               and "running" not in k) <= torch.tensor(0.05).item()  # 0.05 in float32
    assert ckpt["opt_d"]["param_groups"][0]["lr"] == 5e-5 and "alpha" in ckpt["opt_d"]["param_groups"][0]


def test_the_d_step_adds_lambda_times_the_gradient_penalty():
    """make_step's D loss for wgan_gp is D's WGAN loss plus 10 x the penalty at interpolates whose
    weights come from the run's noise generator, right after the fake batch's z."""
    import copy
    from contextlib import nullcontext

    from ocbench import config, losses
    from ocbench.nn import Discriminator, Generator
    from ocbench.train import make_optimizer, make_step

    cfg = config.load(overrides=["train.width=4", "train.batch_size=4"])
    gan, tc = cfg.gans["wgan_gp"], cfg.train
    torch.manual_seed(0)
    G, D = Generator(0.5, 4), Discriminator(0.5, 4, norm=gan.d_norm)
    real, beta = torch.rand(4, 3, 128, 128) * 2 - 1, (1.0, 1.0)
    noise = torch.Generator().manual_seed(0)

    G_ref, D_ref, noise_ref = copy.deepcopy(G), copy.deepcopy(D), torch.Generator().manual_seed(0)
    with torch.no_grad():
        fake = G_ref(torch.randn(4, tc.latent_dim, generator=noise_ref), beta)
    eps = losses.interpolation_weights(4, "cpu", noise_ref)
    expected = losses.d_loss("wgan", D_ref(real, beta), D_ref(fake, beta)) + 10.0 * losses.gradient_penalty(
        D_ref, real, fake, beta, eps)

    step = make_step(G, D, make_optimizer(G.parameters(), gan.optimizer), make_optimizer(D.parameters(), gan.optimizer),
                     gan, noise, tc, torch.device("cpu"), nullcontext)
    loss_d, loss_g = step(real, beta, g_turn=False)
    assert loss_g is None and loss_d.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(noise.get_state(), noise_ref.get_state())  # the same draws, in the same order
