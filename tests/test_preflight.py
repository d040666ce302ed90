"""`ocbench preflight` on the CPU: the reduced run a CPU preset gets, the stop of a config that did
not ask for the CPU on a machine without a GPU, a GPU job whose CUDA cannot start, and checks that
fail when what they check is broken."""

import json

import numpy as np
import pytest
import yaml

from ocbench import config as config_mod
from ocbench import preflight, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny CPU config (width 4, batch 4, 64-d placeholder Inception) in a temporary folder."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("preflight")
    overlay = {
        "name": "tiny",
        "paths": {"results": str(root / "results"), "figures": str(root / "figures")},
        "data": {"prepared": str(root / "images.npy"), "subset": True,
                 "images": str(root / "img_align_celeba.zip"), "partition": str(root / "part.txt")},
        "run": {"gans": ["dcgan", "wgan_gp"], "variants": ["baseline", "oct"], "seeds": [0]},
        "train": {"epochs": 2, "batch_size": 4, "width": 4, "device": "cpu"},
        "metrics": {"stats": str(root / "stats.npz"), "fid_samples": 16, "dims": 64, "batch_size": 8,
                    "weights_dir": str(root / "weights"), "placeholder_weights": True},
    }
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(overlay))
    run_cli("fid", "weights", "--config", config, check=True)
    return root, config


def test_a_cpu_preset_passes_its_reduced_preflight_and_writes_json(setup, cli):
    root, config = setup
    out = root / "preflight.json"
    proc = cli("preflight", "--config", config, "--set", "train.channels_last=true", "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    # One octave variant per GAN on the CPU: eager, the speed option against it, the resume.
    for case in ("dcgan/oct", "wgan_gp/oct"):
        assert f"✔ training    {case} eager" in table
        assert f"✔ training    {case} channels_last" in table
        assert f"✔ training    {case} resume" in table
    assert "dcgan/baseline" not in table
    assert "– data        prepared" in table  # not made yet: not a failure
    assert "✔ data        inception" in table and "placeholder" in table
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["device"].startswith("cpu")
    assert report["projection"]["runs"] == 4 and report["projection"]["device_hours"] > 0
    assert {c["status"] for c in report["checks"]} <= {"✔", "–"}


def test_the_paper_protocol_on_a_machine_without_a_gpu_is_stopped_with_the_presets_that_fit(setup, cli):
    """`make reproduce` on a CPU: auto finds no GPU; preflight fails on the projected time, names
    `make mini` and `make smoke`, and `train.device=cpu` as the way to insist."""
    root, config = setup
    proc = cli("preflight", "--config", config, "--set", "train.device=auto")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(li for li in proc.stdout.splitlines() if li.lstrip()[2:].startswith("projection"))
    assert line.lstrip().startswith("✘") and "CPU-hours" in line and "no GPU was found" in line
    assert "make mini" in proc.stdout and "train.device=cpu" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("ocbench: error: preflight: 1 check(s) failed")


def test_a_gpu_job_whose_cuda_cannot_start_fails_at_once(setup, cli):
    root, config = setup
    proc = cli("preflight", "--config", config, "--set", "train.device=auto", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert proc.returncode == 1
    assert "✘ environment device" in proc.stdout and "CUDA cannot start" in proc.stdout
    assert "training" not in proc.stdout  # nothing ran on the CPU instead


def test_the_resume_check_fails_when_a_resume_loses_the_optimiser_state(setup, monkeypatch):
    root, config = setup
    cfg = config_mod.load([config])
    batches = preflight.random_batches(4, cfg.train.batch_size, 128)
    ok, _ = preflight.check_resume(cfg, "dcgan", "oct", cfg.train, preflight.torch.device("cpu"), batches, 2,
                                   preflight.Trainer(cfg, "dcgan", "oct", cfg.train, preflight.torch.device("cpu")))
    assert not ok  # a trainer that never ran is not the uninterrupted one
    uninterrupted = preflight.Trainer(cfg, "dcgan", "oct", cfg.train, preflight.torch.device("cpu"))
    uninterrupted.run(batches)
    ok, detail = preflight.check_resume(cfg, "dcgan", "oct", cfg.train, preflight.torch.device("cpu"), batches, 2,
                                        uninterrupted)
    assert ok, detail

    def without_optimisers(state, G, D, opt_g, opt_d, noise_rng, data_rng, device):
        G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
        train.set_rng_state(state["rng"], noise_rng, data_rng, device)

    monkeypatch.setattr(preflight, "restore_training_state", without_optimisers)
    ok, _ = preflight.check_resume(cfg, "dcgan", "oct", cfg.train, preflight.torch.device("cpu"), batches, 2,
                                   uninterrupted)
    assert not ok


def test_a_prepared_array_of_the_wrong_shape_fails_the_data_check(setup):
    root, config = setup
    cfg = config_mod.load([config], [f"data.prepared={root / 'small.npy'}"])
    np.save(root / "small.npy", np.zeros((5, 64, 64, 3), np.uint8))
    report = preflight.Report("tiny")
    preflight.check_data(cfg, report)
    check = next(c for c in report.checks if c.name == "prepared")
    assert check.status == "✘" and "(64, 64, 3)" in check.detail and "ocbench data prepare" in check.fix


def test_with_cuda_graphs_the_resume_check_captures_and_replays_both_halves_on_each_side(setup, monkeypatch):
    """WGAN-GP makes a G step every 5 iterations: 3 + 3 iterations with a 3-call warm-up never
    captured its G step (nor anything after the reload). The check now runs enough iterations per
    half for each trainer to capture and replay both halves, and fails when one does not; timings
    count replays only. The device side is the CPU stand-in for a CUDA graph (test_gpu_paths)."""
    from test_gpu_paths import ReplayByCalling

    root, config = setup
    cfg = config_mod.load([config], ["train.cuda_graphs=true"])
    cpu = preflight.torch.device("cpu")
    critic = cfg.gans["wgan_gp"].critic
    assert preflight.iterations_per_half(critic, 3, warmup=None) == 3  # no graphs: as asked
    k = preflight.iterations_per_half(critic, 3, warmup=3)
    assert k == 23  # G steps at 0, 5, ..., 20: 3 eager, the capture, a replay; 25 ... 45 after it
    official = config_mod.load([preflight.Path(__file__).parent.parent / "workflow/config/official-wgan.yaml"])
    # 20 critic steps per G step at first: G at 0, 20, ..., 80 before the checkpoint, 100 ... 180 after
    assert preflight.iterations_per_half(official.gans["wgan"].critic, 3, warmup=3) == 91

    batches = preflight.random_batches(2 * k, cfg.train.batch_size, 128)
    graphed = preflight.Trainer(cfg, "wgan_gp", "oct", cfg.train, cpu, graphs=ReplayByCalling)
    graphed.run(batches)
    assert graphed.steady() and graphed.timed == 2 * k - 16  # D captured at 3, G at 15: timed from 16
    ok, detail = preflight.check_resume(cfg, "wgan_gp", "oct", cfg.train, cpu, batches, k, graphed, ReplayByCalling)
    assert ok and "both halves captured and replayed before and after the reload" in detail, detail
    ok, detail = preflight.check_resume(cfg, "wgan_gp", "oct", cfg.train, cpu, batches[:6], 3, graphed, ReplayByCalling)
    assert not ok and "was not captured and replayed on both sides" in detail
