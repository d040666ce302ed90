"""FID against the real pytorch-fid (its CLI in a subprocess), precision/recall on known answers,
and the weights checks. No mocks of pytorch-fid: the Inception network runs, with seeded placeholder
weights in a temporary TORCH_HOME (the CPU does about 10 images/s, so the sets are small)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ocbench import config as config_mod
from ocbench import fid, kid, prdc
from ocbench.errors import OcbenchError
from ocbench.formats import image_files, sha256_of, to_uint8
from ocbench.metrics import Evaluator, read_images
from ocbench.sample import generator_sampler

from conftest import run_cli

N_REAL, N_FAKE, BATCH = 40, 40, 20


def write_config(path: Path, root: Path, **metrics) -> Path:
    cfg = {
        "name": "metrics-test",
        "data": {"prepared": str(root / "prepared.npy")},
        "metrics": {
            "stats": str(root / "stats.npz"), "fid_samples": N_FAKE, "batch_size": BATCH,
            "pr_real_samples": 30, "placeholder_weights": True, **metrics,
        },
        "train": {"device": "cpu"},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def pytorch_fid(*args, torch_home):
    """`python -m pytorch_fid ...` on the CPU, as a user would run it; returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytorch_fid", *map(str, args),
         "--device", "cpu", "--batch-size", str(BATCH), "--num-workers", "0"],
        env={**os.environ, "TORCH_HOME": str(torch_home)}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def save_png(image: torch.Tensor, path: Path) -> None:
    """The authors' route: one generated image in [-1, 1] through torchvision's save_image."""
    from torchvision.utils import save_image

    save_image((image + 1) / 2, path)


@pytest.fixture(scope="session")
def fid_env(tmp_path_factory):
    """Placeholder weights in a temporary TORCH_HOME, a small prepared array, and reference stats
    made by `ocbench fid stats` (session-scoped: the Inception passes are the slow part)."""
    root = tmp_path_factory.mktemp("fid")
    torch_home = root / "torch"
    env = {"TORCH_HOME": str(torch_home)}
    run_cli("fid", "weights", "--config", write_config(root / "cfg.yaml", root), env=env, check=True)
    weights = torch_home / "hub" / "checkpoints" / fid.WEIGHTS_NAME
    assert weights.is_file()

    # Structured "real" images: smooth colour gradients with a bright square, plus noise.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    images = []
    for _ in range(N_REAL):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = c0 * xx[..., None] + c1 * yy[..., None] / 2
        r, c = rng.integers(0, 96, 2)
        img[r : r + 32, c : c + 32] = 255
        images.append(np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8))
    np.save(root / "prepared.npy", np.stack(images))

    # In-process code finds the same folder through weights_dir; subprocesses through TORCH_HOME.
    cfg_path = write_config(root / "cfg.yaml", root, weights_dir=str(weights.parent))
    run_cli("fid", "stats", "--config", cfg_path, env=env, check=True)
    return {"root": root, "torch_home": torch_home, "env": env, "config": cfg_path,
            "cfg": config_mod.load([cfg_path]), "weights": weights}


# --------------------------------------------------------------------------------------------------
# FID equals pytorch-fid's


def test_reference_stats_equal_pytorch_fid_save_stats(fid_env):
    root = fid_env["root"]
    ours = np.load(root / "stats.npz")
    assert set(ours.files) == {"mu", "sigma", "features", "weights_sha256", "images", "split"}
    assert int(ours["images"]) == N_REAL and str(ours["split"]) == "all"  # where the reference came from
    assert ours["mu"].dtype == ours["sigma"].dtype == np.float64
    assert ours["sigma"].shape == (2048, 2048) and ours["features"].shape == (30, 2048)
    assert str(ours["weights_sha256"]) == sha256_of(fid_env["weights"])

    real = root / "real_png"
    real.mkdir()
    from PIL import Image

    for i, img in enumerate(np.load(root / "prepared.npy")):
        Image.fromarray(img).save(real / f"{i:06d}.png")
    pytorch_fid("--save-stats", real, root / "theirs.npz", torch_home=fid_env["torch_home"])
    theirs = np.load(root / "theirs.npz")
    # Ours streams float64 sums on the device; pytorch-fid holds every feature in a float64 array
    # (the route `ocbench fid stats` took before) and calls np.mean / np.cov.
    for key in ("mu", "sigma"):
        scale = np.abs(theirs[key]).max()
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-12 * scale)


def test_streaming_reference_equals_the_full_array_route(fid_env):
    """`fid.compute_reference` (running sums, uneven batches) against the route it replaced: every
    feature in one float64 array, np.mean / np.cov, the P/R rows picked from it. dims = 64 (the
    same code, Inception's first block only) to keep the Inception pass cheap."""
    net = fid.load_inception(fid.locate_weights(str(fid_env["weights"].parent), placeholder=True), "cpu", 64)
    array = np.load(fid_env["root"] / "prepared.npy", mmap_mode="r")
    ref = fid.compute_reference(array, net, batch_size=7, count=37, pr_samples=11, progress=False)

    act = np.concatenate([fid.features(net, b).numpy() for b in fid.array_batches(array, 7, 37)]).astype(np.float64)
    mu, sigma = np.mean(act, axis=0), np.cov(act, rowvar=False)
    np.testing.assert_allclose(ref.mu, mu, rtol=0, atol=1e-12 * np.abs(mu).max())
    np.testing.assert_allclose(ref.sigma, sigma, rtol=0, atol=1e-12 * np.abs(sigma).max())
    keep = fid.real_sample_indices(37, 11)
    assert ref.features.dtype == np.float32 and np.array_equal(ref.features, act[keep].astype(np.float32))


def test_final_real_images_are_a_seeded_random_subset_scored_by_the_final_evaluation(fid_env, tmp_path):
    """metrics.final_real_images: `fid stats` also computes, in the same pass, the statistics of N
    images drawn at random from every prepared image (N = 20 of 40, seed 3; some beyond the first
    stats_images = 12, which the pass then reads on for); the reference itself stays what it was. The
    file keeps them beside pytorch-fid's keys; the final evaluation's FID is against them, and its
    provenance says how many and which seed. A file without them, or of another N or seed, is refused."""
    from ocbench.metrics import final_reference

    weights = fid.locate_weights(str(fid_env["weights"].parent), placeholder=True)
    net = fid.load_inception(weights, "cpu", 64)
    array = np.load(fid_env["root"] / "prepared.npy", mmap_mode="r")
    ref = fid.compute_reference(array, net, batch_size=7, count=12, pr_samples=5, progress=False, subset=20,
                                subset_seed=3)
    plain = fid.compute_reference(array, net, batch_size=7, count=12, pr_samples=5, progress=False)
    for a, b in ((ref.mu, plain.mu), (ref.sigma, plain.sigma), (ref.features, plain.features)):
        assert np.array_equal(a, b)  # the reference of every epoch: bit for bit as without the subset
    act = np.concatenate([fid.features(net, b).numpy() for b in fid.array_batches(array, 7)]).astype(np.float64)
    chosen = fid.real_sample_indices(len(array), 20, seed=3)
    assert chosen.max() >= 12 and (ref.subset.images, ref.subset.seed) == (20, 3)
    np.testing.assert_allclose(ref.subset.mu, act[chosen].mean(0), rtol=0, atol=1e-12 * np.abs(act).max())
    sigma = np.cov(act[chosen], rowvar=False)
    np.testing.assert_allclose(ref.subset.sigma, sigma, rtol=0, atol=1e-12 * np.abs(sigma).max())

    path = tmp_path / "stats.npz"
    fid.save_reference(ref, path)
    loaded = fid.load_reference(path)
    assert {"mu", "sigma"} <= set(np.load(path).files)  # what pytorch-fid reads: the whole reference
    assert np.array_equal(loaded.subset.sigma, ref.subset.sigma)
    assert (loaded.subset.images, loaded.subset.seed) == (20, 3)
    evaluator = Evaluator(net, weights, loaded, batch_size=BATCH, final_reference=final_reference(loaded, 20, 3, path))
    feats = torch.from_numpy(act[20:35]).float()
    fid_final = evaluator.score_features(feats, final=True)["fid"]
    mu, sig = fid.statistics(feats)
    expected = fid.frechet_distance_eigh(mu, sig, ref.subset.mu, ref.subset.sigma, 15)
    assert fid_final == pytest.approx(expected, rel=1e-12)
    assert fid_final != evaluator.score_features(feats)["fid"]
    assert evaluator.provenance(15, final=True)["reference_images"] == 20
    assert evaluator.provenance(15, final=True)["reference_seed"] == 3
    assert evaluator.provenance(15)["reference_images"] == 12 and "reference_seed" not in evaluator.provenance(15)

    for images, seed, stats in ((20, 4, loaded), (30, 3, loaded), (20, 3, plain)):
        with pytest.raises(OcbenchError, match=f"final_real_images={images} .* rerun `ocbench fid stats`") as err:
            final_reference(stats, images, seed, path)
        assert "\n" not in str(err.value)
    with pytest.raises(OcbenchError, match="final_real_images is 41 but the prepared array holds 40 images"):
        fid.compute_reference(array, net, batch_size=7, progress=False, subset=41)


def test_in_memory_fid_equals_pytorch_fid_cli(fid_env, tmp_path):
    from ocbench.nn import Generator

    torch.manual_seed(0)
    g = Generator(alpha=0.5, width=4, latent_dim=16)
    ckpt = tmp_path / "generator_epoch_001.pt"
    torch.save({"generator": g.state_dict(), "arch": "dcgan", "alpha": 0.5, "width": 4, "latent_dim": 16,
                "beta": [1.0, 1.0]}, ckpt)

    # In memory, through the checkpoint loader that `ocbench fid score --generator` uses.
    evaluator = Evaluator.from_config(fid_env["cfg"], "cpu")
    sample, _ = generator_sampler(ckpt, "cpu", N_FAKE, seed=0)
    ours = evaluator.evaluate(sample, N_FAKE)

    # The authors' route: the same images as PNG files, then pytorch-fid's CLI.
    pngs = tmp_path / "fake_png"
    pngs.mkdir()
    with torch.no_grad():
        images = sample(0, N_FAKE)
    for i, img in enumerate(images):
        save_png(img, pngs / f"{i:06d}.png")
    # The PNGs hold exactly the uint8 pixels the in-memory path fed to Inception.
    read_back = torch.cat(list(read_images(image_files(pngs), BATCH)))
    assert torch.equal(read_back, to_uint8(images))

    out = pytorch_fid(pngs, fid_env["root"] / "stats.npz", torch_home=fid_env["torch_home"])
    theirs = float(re.search(r"FID:\s+(\S+)", out).group(1))
    rel = abs(ours["fid"] - theirs) / abs(theirs)
    print(f"in-memory FID {ours['fid']!r} (eigh), pytorch-fid CLI {theirs!r}, relative difference {rel:.3g}")
    # 40 samples in 2048 dimensions: the CLI's sqrtm is itself off by ~1e-8 here (test_frechet.py).
    assert ours["frechet"] == "eigh" and rel <= 1e-6
    assert 0 <= ours["precision"] <= 1 and 0 <= ours["recall"] <= 1
    assert ours["weights_sha256"] == sha256_of(fid_env["weights"])
    assert ours["weights_official"] is False
    # KID on the same features against the P/R real features; FID-infinity only when asked for.
    assert np.isfinite(ours["kid"]) and ours["kid_std"] >= 0 and np.isnan(ours["fid_inf"])
    assert evaluator.provenance(N_FAKE) == {
        "fid_samples": N_FAKE, "reference_images": N_REAL, "reference_split": "all", "pr_real_samples": 30,
        "kid_real_samples": 30, "eval_precision": "fp32"}  # kid_real_samples: fid_samples (40), capped at 30


def test_score_cli_errors_are_one_line(fid_env, tmp_path):
    """`ocbench fid score` itself (its scoring path is the one tested above; each FID costs a
    2048 x 2048 sqrtm, tens of seconds on this CPU, so the CLI is checked on its failures)."""
    (tmp_path / "empty").mkdir()
    for source in (["--images", tmp_path / "empty"], ["--generator", tmp_path / "none.pt"]):
        proc = run_cli("fid", "score", "--config", fid_env["config"], *source, env=fid_env["env"])
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert str(source[1]) in proc.stderr


# --------------------------------------------------------------------------------------------------
# precision and recall: known answers


def gaussian(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_identical_samples_give_precision_and_recall_one():
    x = gaussian(500, 8, 0)
    assert prdc.precision_recall(x, x, k=3) == (1.0, 1.0)


def test_two_samples_of_one_gaussian_give_high_precision_and_recall():
    p, r = prdc.precision_recall(gaussian(2000, 8, 0), gaussian(2000, 8, 1), k=3)
    assert p > 0.8 and r > 0.8


def test_disjoint_samples_give_zero():
    assert prdc.precision_recall(gaussian(500, 8, 0), gaussian(500, 8, 1, shift=100.0), k=3) == (0.0, 0.0)


def test_generator_covering_one_of_two_modes():
    real = np.concatenate([gaussian(1000, 8, 0, shift=-10.0), gaussian(1000, 8, 1, shift=10.0)])
    fake = gaussian(1000, 8, 2, shift=10.0)
    p, r = prdc.precision_recall(real, fake, k=3)
    assert p > 0.8 and r < 0.55


def test_radii_and_chunking_match_brute_force():
    real, fake = gaussian(300, 5, 0), gaussian(200, 5, 1, shift=0.5)
    d = np.linalg.norm(real[:, None] - real[None], axis=-1)
    np.testing.assert_allclose(prdc.knn_radii(real, 3).numpy(), np.sort(d, axis=1)[:, 3], rtol=1e-9)
    full = prdc.precision_recall(real, fake, k=3)
    assert prdc.precision_recall(real, fake, k=3, max_elements=777) == full  # many small blocks
    assert 0 < full[0] < 1 and 0 < full[1] < 1


# --------------------------------------------------------------------------------------------------
# weights


def test_wrong_weights_file_gives_one_line_error_naming_the_path(tmp_path):
    path = tmp_path / "torch" / "hub" / "checkpoints" / fid.WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the inception weights")
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path, placeholder_weights=False)
    proc = run_cli("fid", "weights", "--config", cfg, env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in proc.stderr


def test_offline_download_error_names_the_path(tmp_path, monkeypatch):
    # An address that refuses connections, so the test never downloads even with internet.
    monkeypatch.setattr(fid, "WEIGHTS_URL", "http://127.0.0.1:9/pt_inception.pth")
    with pytest.raises(OcbenchError) as exc:
        fid.fetch_weights(str(tmp_path / "w"))
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "w" / fid.WEIGHTS_NAME) in msg
    assert not (tmp_path / "w" / fid.WEIGHTS_NAME).exists()


def test_placeholder_weights_are_flagged_non_official(fid_env, tmp_path):
    w = fid.locate_weights(str(fid_env["weights"].parent), placeholder=True)
    assert not w.official and not w.sha256.startswith(fid.OFFICIAL_SHA256_PREFIX)
    # Written once, never overwritten; and refused when placeholders are not allowed.
    before = fid_env["weights"].stat().st_mtime_ns
    fid.ensure_weights(str(fid_env["weights"].parent), placeholder=True)
    assert fid_env["weights"].stat().st_mtime_ns == before
    with pytest.raises(OcbenchError, match="not the official"):
        fid.locate_weights(str(fid_env["weights"].parent), placeholder=False)


def test_missing_weights_or_stats_name_the_fix(fid_env, tmp_path):
    cfg = config_mod.load([fid_env["config"]], [f"metrics.weights_dir={tmp_path}"])
    with pytest.raises(OcbenchError, match="ocbench fid weights"):
        Evaluator.from_config(cfg, "cpu")
    cfg = config_mod.load([fid_env["config"]], [f"metrics.stats={tmp_path / 'none.npz'}"])
    with pytest.raises(OcbenchError, match="ocbench fid stats"):
        Evaluator.from_config(cfg, "cpu")
    other = tmp_path / "other.npz"
    fid.save_reference(fid.Reference(np.zeros(2048), np.eye(2048), None, "0" * 64), other)
    with pytest.raises(OcbenchError, match="other Inception weights"):
        Evaluator.from_config(fid_env["cfg"], "cpu", stats=str(other))
    # KID cannot compare with more real features than the stats file kept; the message names both fixes.
    cfg = config_mod.load([fid_env["config"]], ["metrics.kid_real_samples=31"])
    with pytest.raises(OcbenchError, match="kid_real_samples is 31 but .* holds 30 real features; lower it, "
                                           "or raise metrics.pr_real_samples and rerun `ocbench fid stats`"):
        Evaluator.from_config(cfg, "cpu")


def test_to_uint8_matches_save_image(tmp_path):
    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(3, 8, 8)
    save_png(x, tmp_path / "x.png")
    read_back = next(iter(read_images([tmp_path / "x.png"], 1)))[0]
    assert torch.equal(read_back, to_uint8(x))


def test_smaller_dims_equal_pytorch_fid_cli_with_the_same_dims(fid_env, tmp_path):
    """metrics.dims = 64 (the smoke config's) is pytorch-fid's --dims 64, pooled the same way."""
    from ocbench.nn import Generator

    stats64 = tmp_path / "stats64.npz"
    sets = ["--set", "metrics.dims=64", "--set", f"metrics.stats={stats64}"]
    run_cli("fid", "stats", "--config", fid_env["config"], *sets, env=fid_env["env"], check=True)
    assert np.load(stats64)["mu"].shape == (64,)
    cfg = config_mod.load([fid_env["config"]], ["metrics.dims=64", f"metrics.stats={stats64}"])

    torch.manual_seed(1)
    g = Generator(alpha=0.5, width=4, latent_dim=16)
    ckpt = tmp_path / "g.pt"
    torch.save({"generator": g.state_dict(), "arch": "dcgan", "alpha": 0.5, "width": 4, "latent_dim": 16,
                "beta": [1.0, 1.0]}, ckpt)
    sample, _ = generator_sampler(ckpt, "cpu", N_FAKE, seed=0)
    ours = Evaluator.from_config(cfg, "cpu").evaluate(sample, N_FAKE)
    pngs = tmp_path / "png"
    pngs.mkdir()
    with torch.no_grad():
        for i, img in enumerate(sample(0, N_FAKE)):
            save_png(img, pngs / f"{i:06d}.png")
    out = pytorch_fid(pngs, stats64, "--dims", "64", torch_home=fid_env["torch_home"])
    theirs = float(re.search(r"FID:\s+(\S+)", out).group(1))
    assert ours["frechet"] == "eigh" and abs(ours["fid"] - theirs) <= 1e-6 * abs(theirs)
    # metrics.frechet: scipy is pytorch-fid's own function on our statistics, which differ from
    # np.cov's in the last bits; its sqrtm of a rank-deficient product (40 samples, 64-d) turns
    # that into ~1e-11.
    scipy_cfg = config_mod.load([fid_env["config"]], ["metrics.dims=64", f"metrics.stats={stats64}",
                                                      "metrics.frechet=scipy"])
    ours_scipy = Evaluator.from_config(scipy_cfg, "cpu").evaluate(sample, N_FAKE)
    assert ours_scipy["frechet"] == "scipy" and abs(ours_scipy["fid"] - theirs) <= 1e-9 * abs(theirs)
    with pytest.raises(config_mod.ConfigError, match="frechet"):
        config_mod.load([fid_env["config"]], ["metrics.frechet=sqrtm"])
    # Stats of one dimension do not score features of another.
    with pytest.raises(OcbenchError, match="64-d statistics but metrics.dims is 2048"):
        Evaluator.from_config(config_mod.load([fid_env["config"]], [f"metrics.stats={stats64}"]), "cpu")


def structured_images(n: int, seed: int) -> np.ndarray:
    """uint8 n x 64 x 64 x 3: colour gradients with a bright square, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    out = []
    for _ in range(n):
        img = rng.uniform(0, 255, 3) * xx[..., None] + rng.uniform(0, 255, 3) * yy[..., None] / 2
        r, c = rng.integers(0, 48, 2)
        img[r : r + 16, c : c + 16] = 255
        out.append(np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def test_eigh_equals_pytorch_fid_on_its_own_save_stats_files(fid_env, tmp_path):
    """(d): two stats files written by `python -m pytorch_fid --save-stats` (--dims 64, 80 images
    each, so that both covariances have full rank), read by our loader; the eigh route against
    pytorch-fid's calculate_frechet_distance on the same arrays."""
    from PIL import Image
    from pytorch_fid.fid_score import calculate_frechet_distance

    files = []
    for seed in (1, 2):
        folder = tmp_path / f"set{seed}"
        folder.mkdir()
        for i, img in enumerate(structured_images(80, seed)):
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        files.append(tmp_path / f"set{seed}.npz")
        pytorch_fid("--save-stats", folder, files[-1], "--dims", "64", torch_home=fid_env["torch_home"])
    a, b = (fid.load_reference(f) for f in files)
    assert a.features is None and a.sigma.shape == (64, 64) and np.linalg.matrix_rank(a.sigma) == 64
    theirs = float(calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    ours = fid.frechet_distance_eigh(a.mu, a.sigma, b.mu, b.sigma)
    print(f"FID {theirs!r} (scipy), {ours!r} (eigh)")
    assert (abs(ours - theirs) <= 1e-9 * theirs) if theirs > 1 else (abs(ours - theirs) <= 1e-7)


# --------------------------------------------------------------------------------------------------
# KID and FID-infinity on features (no Inception pass: both read features already computed)


def pool3_like(n, d, seed, scale=1.0):
    """Non-negative features (ReLU'd, as pool3's averages are), float64."""
    return torch.from_numpy(np.abs(np.random.default_rng(seed).normal(size=(n, d))) * scale)


def test_kid_equals_torch_fidelity_on_the_same_features():
    """torch-fidelity's `kid_features_to_metric` and ours on the same float64 features: on the full
    sets (one subset of every row: a permutation, which the estimator does not see) and on the very
    subsets torch-fidelity draws (its RandomState, replayed)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    fake, real = pool3_like(300, 64, 0), pool3_like(300, 64, 1, scale=1.1)
    theirs = kid_features_to_metric(fake, real, kid_subsets=1, kid_subset_size=300, verbose=False)
    ours = kid.kid(fake, real, subsets=1, subset_size=300)
    assert abs(ours[0] - theirs[KEY_METRIC_KID_MEAN]) <= 1e-6 * abs(theirs[KEY_METRIC_KID_MEAN]) and ours[1] == 0

    real = pool3_like(500, 64, 2, scale=1.1)  # sets of different sizes, subsets of 100
    theirs = kid_features_to_metric(fake, real, kid_subsets=20, kid_subset_size=100, rng_seed=7, verbose=False)
    rng = np.random.RandomState(7)  # what kid_features_to_metric draws, in its order
    pairs = [(torch.from_numpy(rng.choice(300, 100, replace=False)), torch.from_numpy(rng.choice(500, 100, replace=False)))
             for _ in range(20)]
    mean, std = kid.kid_of_subsets(fake, real, pairs)
    print(f"KID {mean!r} +- {std!r}, torch-fidelity {theirs}")
    assert abs(mean - theirs[KEY_METRIC_KID_MEAN]) <= 1e-6 * abs(theirs[KEY_METRIC_KID_MEAN])
    assert abs(std - theirs[KEY_METRIC_KID_STD]) <= 1e-6 * theirs[KEY_METRIC_KID_STD]
    # Subsets as large as one set (all of it, permuted) take a shortcut: the same numbers as subset by subset.
    pairs = kid.subset_indices(100, 500, 10, 100)
    plain = [kid.mmd2_unbiased(fake[:100][i].double(), real[j].double()) for i, j in pairs]
    assert kid.kid_of_subsets(fake[:100], real, pairs) == pytest.approx((np.mean(plain), np.std(plain)), rel=1e-9)


def test_kid_of_two_samples_of_one_distribution_is_zero_within_its_std():
    """Unbiased: two independent samples of one distribution have a KID of 0 within its std. (One set
    against itself is not such a pair: subsets that share rows put k(x, x) into the cross term, and
    the estimate is negative, in torch-fidelity's estimator as in ours.)"""
    x, y = pool3_like(1000, 32, 0), pool3_like(1000, 32, 1)
    mean, std = kid.kid(x, y, subsets=50, subset_size=100)
    assert std > 0 and abs(mean) <= std
    shifted, _ = kid.kid(x + 0.5, y, subsets=50, subset_size=100)
    assert shifted > 10 * std
    # Its own seeded subsets: the same number every call, and no draw from torch's global generator.
    state = torch.random.get_rng_state()
    assert kid.kid(x, y, subsets=50, subset_size=100) == (mean, std)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_fid_infinity_is_closer_to_the_true_distance_than_the_fid_at_n():
    """Generated features N(0, diag(s)), the reference N(0, I) given exactly: the Frechet distance is
    sum (sqrt(s) - 1)^2 in closed form. The FID of N samples overshoots it by a bias ~ 1/N;
    FID-infinity removes most of it."""
    d, n = 32, 400  # a bias of ~10% of the distance (FID-infinity was closer for each of 20 seeds here)
    s = np.linspace(0.25, 4.0, d)
    true = float(((np.sqrt(s) - 1) ** 2).sum())
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(n, d)) * np.sqrt(s))
    mu2, sigma2 = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)

    def distance(mu, sigma, count):
        return fid.frechet_distance_eigh(mu, sigma, mu2, sigma2, count)

    at_n = distance(*fid.statistics(feats), n)
    state = torch.random.get_rng_state()
    inf, slope = fid.fid_infinity(feats, distance, points=5, smallest=0.5)
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator
    print(f"true {true:.4f}, FID at N {at_n:.4f}, FID-infinity {inf:.4f}, slope {slope:.1f}")
    assert slope > 0 and abs(inf - true) < abs(at_n - true)
