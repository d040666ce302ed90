"""`ocbench bench protocol` at smoke size on the CPU: it runs, both routes, and its projection is the
config's arithmetic (batches per epoch, epochs, runs, the critic schedule). Its numbers are timings,
so only their consistency is asserted, never their size."""

import json

import pytest
import yaml

from ocbench import config as config_mod

BATCH, EPOCHS, PROJECTED = 16, 3, 1000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic CelebA prepared by ocbench, placeholder weights and reference statistics."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("bench")
    overlay = {
        "name": "bench-test",
        "paths": {"results": str(root / "results"), "figures": str(root / "figures")},
        "data": {"images": str(root / "data/img_align_celeba.zip"), "partition": str(root / "data/partition.txt"),
                 "prepared": str(root / "data/prepared.npy"), "subset": True, "synthetic": {"n": 64, "seed": 0}},
        "run": {"gans": ["dcgan"], "variants": ["baseline", "oct"], "seeds": [0, 1]},
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "width": 4, "device": "cpu"},
        "metrics": {"stats": str(root / "stats.npz"), "fid_samples": 16, "dims": 64, "batch_size": 16,
                    "pr_real_samples": 32, "weights_dir": str(root / "weights"), "placeholder_weights": True},
    }
    config = root / "bench.yaml"
    config.write_text(yaml.safe_dump(overlay))
    for command in (["data", "synth"], ["data", "prepare"], ["fid", "weights"], ["fid", "stats"]):
        run_cli(*command, "--config", config, check=True)
    return root, config


def check_projection(result: dict, runs_per_case: int, authors: bool) -> None:
    assert result["timed_images"] == 64 and result["projected_images"] == PROJECTED
    assert result["batches_per_epoch"] == PROJECTED // BATCH and result["epochs"] == EPOCHS
    assert result["runs"] == len(result["cases"]) * runs_per_case
    for case in result["cases"]:
        assert case["iterations_with_g"] == (PROJECTED // BATCH) * EPOCHS and case["iterations_without_g"] == 0
        ours, p = case["ours"], case["projection"]
        run_s = case["iterations_with_g"] * ours["with_g"] + EPOCHS * ours["evaluation"]
        assert p["ours_run_s"] == pytest.approx(run_s)
        assert p["ours_device_h"] == pytest.approx(run_s * runs_per_case / case["sharing"] / 3600)
        assert p["ours_it_s"] == pytest.approx(case["sharing"] / ours["with_g"])
        if authors:
            theirs = case["authors"]
            authors_s = case["iterations_with_g"] * theirs["with_g"] + EPOCHS * theirs["evaluation"]
            assert p["authors_device_h"] == pytest.approx(authors_s * runs_per_case / 3600)
            assert p["ratio"] == pytest.approx(p["authors_device_h"] / p["ours_device_h"])
    total = result["total"]
    assert total["ours_device_h"] == pytest.approx(sum(c["projection"]["ours_device_h"] for c in result["cases"]))
    if authors:
        assert total["ratio"] == pytest.approx(total["authors_device_h"] / total["ours_device_h"])


def test_protocol_bench_projects_the_configured_protocol_ours_and_the_authors(setup, cli, tmp_path):
    root, config = setup
    out = tmp_path / "protocol.json"
    # final_real_images: the stats file holds no such statistics, and the bench, which projects the final
    # evaluation from the per-epoch one, must not ask for them (the sngan-resnet preset sets it)
    proc = cli("bench", "protocol", "--config", config, "--iterations", "2", "--warmup", "1",
               "--projected-images", PROJECTED, "--set", "metrics.final_real_images=64", "--json", out, check=True)
    result = json.loads(out.read_text())
    check_projection(result, runs_per_case=2, authors=True)
    assert [(c["gan"], c["variant"], c["sharing"]) for c in result["cases"]] == [
        ("dcgan", "baseline", 1), ("dcgan", "oct", 1)]
    for key in ("date", "device_name", "torch", "precision", "speed_options"):
        assert key in result
    # The table says what was timed and what was projected, and has a row per case and a total.
    assert "Timed on 64 images, projected for 1,000" in proc.stdout
    assert "| dcgan | oct | 2 |" in proc.stdout and "| **total** |" in proc.stdout


def test_runs_sharing_the_device_are_timed_together_and_projected_from_their_aggregate(setup, cli, tmp_path):
    root, config = setup
    out = tmp_path / "shared.json"
    cli("bench", "protocol", "--config", config, "--set", "gpus.runs_per_gpu=2", "--set", "run.variants=[oct]",
        "--set", "metrics.final_real_images=64", "--iterations", "2", "--warmup", "1", "--projected-images",
        PROJECTED, "--no-authors", "--json", out, check=True)
    result = json.loads(out.read_text())
    assert result["runs_per_gpu"] == 2 and [c["sharing"] for c in result["cases"]] == [2]
    assert "authors_device_h" not in result["total"]
    check_projection(result, runs_per_case=2, authors=False)


def test_the_critic_schedule_is_counted_as_training_counts_it():
    """official-wgan: 12 batches an epoch, n_critic 20 for the first 50 G updates: training makes 1 G
    update per epoch (tests/test_train.py checks that on a real run), so 2 epochs = 2 with, 22 without."""
    from conftest import REPO

    cfg = config_mod.load([REPO / "workflow/config/official-wgan.yaml"])
    assert cfg.gans["wgan"].critic.iterations(12, 2) == (2, 22)
    # n_critic 5 after the warm-up, 20 again at every 500th G update: count by brute force.
    critic = cfg.gans["wgan"].critic
    with_g, without_g = critic.iterations(3165, 50)
    assert with_g + without_g == 3165 * 50
    assert 3165 * 50 / 5 * 0.95 < with_g < 3165 * 50 / 5  # mostly every 5th batch, a little less
    assert config_mod.load().gans["dcgan"].critic.iterations(3165, 50) == (3165 * 50, 0)
