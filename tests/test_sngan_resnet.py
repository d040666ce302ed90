"""The ResNet SN-GAN preset (workflow/config/sngan-resnet.yaml, issue #27): its config, the G-step
count, and its whole DAG at tiny widths on a synthetic CelebA through Snakemake: a last partial epoch,
the final evaluation, the published baseline beside ours in claims.md, every figure."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, WORKER_CORES
from ocbench import config as config_mod
from ocbench.config import CriticConfig
from ocbench.config import protocol_fingerprint

BIN = Path(sys.executable).parent
PRESET = REPO / "workflow" / "config" / "sngan-resnet.yaml"
SMOKE = REPO / "workflow" / "config" / "smoke.yaml"


def test_the_preset_is_mimicrys_celeba_128_setting():
    cfg = config_mod.load([PRESET])
    t, sngan = cfg.train, cfg.gans["sngan"]
    assert (t.arch, t.g_width, t.d_width, t.latent_dim, t.batch_size, t.g_steps) == ("resnet", 1024, 1024, 128, 64,
                                                                                     100_000)
    assert (sngan.loss, sngan.optimizer.lr, sngan.optimizer.betas, sngan.critic.n) == ("hinge", 2e-4, (0.0, 0.9), 2)
    assert sngan.spectral_norm and sngan.d_norm == "none"
    assert cfg.run.variants == ["baseline", "oct", "low", "ramp", "combi"] and cfg.run.seeds == [0, 1, 2]
    # CelebA's 202,599 images in batches of 64, a G step on every second: 100k G steps end in epoch 64
    assert sngan.critic.epochs_for(t.g_steps, 202_599 // 64) == t.epochs == 64
    assert t.resnet == "mimicry"  # D as mimicry's code computes it (tests/test_resnet.py)
    # a checkpoint of the chainer form (every ResNet run before train.resnet) is another protocol
    chainer = config_mod.load([PRESET], ["train.resnet=chainer"])
    assert protocol_fingerprint(cfg, "sngan_baseline_s0") != protocol_fingerprint(chainer, "sngan_baseline_s0")
    # the final FID at the published counts: 50k generated against 50k real drawn at random; every
    # epoch's against all the real images
    m = cfg.metrics
    assert (m.final_samples, m.final_real_images, m.stats_images) == (50_000, 50_000, None)
    (fid,) = [r for r in cfg.analysis.references if r.measure == "fid"]
    assert (fid.gan, fid.variant, fid.value, fid.std, fid.generated, fid.real) == ("sngan", "baseline", 12.93, 0.04,
                                                                                   50_000, 50_000)


@pytest.mark.parametrize("g_steps, n_batches, n, epochs", [
    (6, 12, 1, 1), (13, 12, 1, 2), (12, 12, 2, 2), (13, 12, 2, 3), (100_000, 3165, 2, 64), (1, 5, 5, 1)])
def test_epochs_for_g_steps_counts_training_own_rule(g_steps, n_batches, n, epochs):
    assert CriticConfig(n=n, warmup_g_updates=0).epochs_for(g_steps, n_batches) == epochs


def test_bench_protocol_projects_the_preset_to_its_last_g_step_and_its_final_evaluation():
    from ocbench.projection import evaluations

    cfg = config_mod.load([PRESET])
    # 63 epochs of 3,165 batches, then 541 of the 64th: 199,936 iterations, 100,000 with a G step
    assert cfg.gans["sngan"].critic.iterations(3165, 64, cfg.train.g_steps) == (100_000, 99_936)
    assert CriticConfig(n=1, warmup_g_updates=0).iterations(3165, 50) == (3165 * 50, 0)  # the paper's: unchanged
    assert evaluations(cfg) == 64 + 50_000 / 10_000  # every epoch's 10k samples, and the final 50k


@pytest.mark.parametrize("overrides, words", [
    (["train.arch=resnet"], "gans.dcgan.d_norm: arch resnet's discriminator has no normalisation layers"),
    (["train.arch=resnet", "run.gans=[sngan]", "train.init=dcgan"], "train.init: 'dcgan'"),
    (["train.arch=vgg"], "train.arch"),
    (["train.ngf=8"], "train.ngf"),
    (["train.resnet=keras"], "train.resnet: 'keras' is not one of \\['mimicry', 'chainer'\\]"),
    (["analysis.references=[{gan: began, variant: baseline, measure: fid, value: 1, source: x}]"], "unknown gan"),
])
def test_a_config_the_resnet_cannot_run_is_refused_in_one_line(overrides, words):
    with pytest.raises(config_mod.ConfigError, match=words.replace("(", r"\(")) as err:
        config_mod.load(overrides=overrides)
    assert "\n" not in str(err.value)


def test_preflight_fails_a_g_step_length_that_train_epochs_does_not_reach():
    """What every train job's set_up would refuse, preflight says first, from CelebA's count."""
    import torch

    from ocbench.preflight import FAIL, PASS, Report, check_projection

    for epochs, status in ((64, PASS), (50, FAIL)):
        report = Report(config="sngan-resnet")
        cfg = config_mod.load([PRESET], [f"train.epochs={epochs}", "train.device=cpu",
                                         "data.prepared=/nonexistent/celeba128.npy"])
        check_projection(cfg, torch.device("cpu"), {}, 0.0, report)
        (check,) = [c for c in report.checks if c.name == "g_steps sngan"]
        assert check.status == status and "ends in epoch 64 of 3,165 batches" in check.detail, check
    assert check.fix == "set train.epochs: 64"


def test_dry_run_of_the_preset_plans_fifteen_resnet_runs_and_figure_8(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                           "-n", "--cores", "1", "--configfile", str(PRESET)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("rule train:") == 15 and "results/sngan-resnet/runs/sngan_combi_s2" in proc.stdout
    assert "figures/sngan-resnet/fig8.pdf" in proc.stdout and "results/sngan-resnet/claims.md" in proc.stdout


TINY = {  # the preset at CPU size: 24 faces, batches of 8 (3 an epoch, 2 with a G step), 5 G steps
    "name": "sngan-resnet-smoke",
    "run": {"variants": ["baseline", "oct"], "seeds": [0]},
    "data": {"images": "data/rn/img_align_celeba.zip", "partition": "data/rn/list_eval_partition.txt",
             "prepared": "data/rn/celeba128.npy", "synthetic": {"n": 24, "seed": 0}},
    "train": {"ngf": 16, "ndf": 16, "batch_size": 8, "g_steps": 5, "epochs": 3, "snapshot_epochs": [2, 3]},
    "metrics": {"stats": "data/rn/fid_stats.npz", "weights_dir": "data/rn/weights", "pr_real_samples": 24,
                "final_samples": 24, "final_real_images": 20},
}


def test_the_presets_dag_runs_end_to_end_at_tiny_widths(tmp_path, monkeypatch):
    """sngan-resnet.yaml over smoke.yaml, cut to SNGAN and SNGAN_OCT at widths 16: the run stops at its
    5th G step within epoch 3, scores the final evaluation (its FID against 20 of the 24 faces drawn at
    random), and claims.md opens with mimicry's numbers beside ours, with both image counts of each;
    the figures render, Figure 8 (a spectral-norm GAN) too."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch")}
    proc = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", str(WORKER_CORES), "--resources", "gpu=1", "--configfile", str(PRESET),
                           str(SMOKE), str(tiny)], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = tmp_path / "results/sngan-resnet-smoke"

    for variant in ("baseline", "oct"):
        run = results / f"runs/sngan_{variant}_s0"
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        # epochs 1-2 whole (3 batches, G steps on the 1st and 3rd), epoch 3 stops after its 1st batch
        assert [(r["epoch"], r["iterations"], r["g_updates"]) for r in rows] == [
            ("1", "3", "2"), ("2", "6", "4"), ("3", "7", "5")]
        summary = json.loads((run / "run.json").read_text())
        assert summary["status"] == "ok" and summary["g_updates"] == 5
        final = summary["final"]
        assert final["fid_samples"] == 24 and final["fid"] > 0 and final["kid"] == final["kid"]
        assert final["seed"] == 1_000_003  # eval_seed + epochs: scored by no epoch
        assert (final["reference_images"], final["reference_seed"], rows[-1]["reference_images"]) == (20, 0, "24")
    # a ResNet snapshot loads back (its "arch") and scores the FID its epoch recorded: what
    # `ocbench fid score --generator` runs, in this process (the CLI has its tests in test_train)
    from ocbench.metrics import Evaluator

    monkeypatch.chdir(tmp_path)  # the config's data paths are relative to the workflow's directory
    cfg = config_mod.load([results / "config.yaml"])
    evaluator = Evaluator.from_config(cfg, "cpu")
    scored = evaluator.evaluate_generator(run / "generator_epoch_003.pt")["fid"]
    assert scored == pytest.approx(float(rows[-1]["fid"]), rel=1e-6)
    # ... and, as `ocbench fid score --final -n 24 --seed 1000003`, the final evaluation's FID
    scored = evaluator.evaluate_generator(run / "generator_epoch_003.pt", 24, final["seed"], final=True)["fid"]
    assert scored == pytest.approx(final["fid"], rel=1e-6)

    md = (results / "claims.md").read_text()
    assert "## Our baseline against published numbers" in md and "12.93 ± 0.04" in md
    assert "| published 50,000 / 50,000; ours 24 / 20 |" in md  # FID: generated / real, both counts
    assert "| published 50,000 / 50,000; ours 24 / 24 |" in md  # KID: against the 24 real features kept
    assert "no interval possible with one seed" in md and "SNGAN" in md
    with open(results / "claims.csv") as f:
        claims = {(r["claim"], r["gan"], r["measure"]): r for r in csv.DictReader(f)}
    assert claims[("R", "sngan", "final_eval_fid")]["n_seeds"] == "1"
    assert claims[("1", "sngan", "final_fid")]["verdict"] == "no interval possible with one seed"
    for name in ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "claims"):
        with Image.open(tmp_path / f"figures/sngan-resnet-smoke/{name}.png") as im:
            im.verify()
