"""Aggregation, Figures 2-7 and the stability summary on a small but realistic results tree.

The tree is written in the train module's exact formats (metrics.csv with METRIC_COLUMNS, sample grids
saved by torchvision's save_image with nrow 8 and padding 2, run.json) for 3 GANs x 5 variants x 2
seeds, with one diverged run (lsgan_baseline_s1, at epoch 4) and one missing run (wgan_low_s1).
"""

import csv
import json
import math
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from ocbench import config as config_mod
from ocbench.formats import METRIC_COLUMNS

EPOCHS = 6
GANS = ["dcgan", "lsgan", "wgan"]
VARIANTS = ["baseline", "oct", "low", "ramp", "combi"]
SEEDS = [0, 1]
DIVERGED, DIVERGED_AT = "lsgan_baseline_s1", 4
MISSING = "wgan_low_s1"
SHA = "ab12cd34" + "0" * 56  # placeholder weights: FIDs not comparable
KNOWN = {"dcgan_baseline_s0": [300.0, 200.0, 150.0, 190.0, 160.0, 175.0]}  # best 150 @3, rise 40 @4


def fid_curve(gan: str, variant: str, seed: int) -> list[float]:
    """Falling FID; the vanilla nets get a late collapse (a jump), the octave ones stay smooth."""
    run = f"{gan}_{variant}_s{seed}"
    if run in KNOWN:
        return KNOWN[run]
    rng = np.random.default_rng(zlib.crc32(run.encode()))
    base = {"dcgan": 120, "lsgan": 140, "wgan": 180, "sngan": 110, "wgan_gp": 130}[gan] + 15 * VARIANTS.index(variant)
    curve = [base + 250 * math.exp(-0.7 * e) + rng.normal(0, 4) for e in range(EPOCHS)]
    if variant == "baseline":
        curve[4] += 60
    return [round(v, 3) for v in curve]


def smooth_grid(seed: int) -> torch.Tensor:
    """64 random 128x128 images, low-frequency (blobs compress fast, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(64, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=128, mode="bilinear", align_corners=False)


def write_run(run_dir, gan, variant, seed, index):
    from torchvision.utils import save_image

    (run_dir / "samples").mkdir(parents=True)
    fids = fid_curve(gan, variant, seed)
    diverged = f"{gan}_{variant}_s{seed}" == DIVERGED
    n = DIVERGED_AT if diverged else EPOCHS
    first = run_dir / "samples" / "epoch_001.png"
    save_image(smooth_grid(index), first, nrow=8, padding=2)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_COLUMNS)
        writer.writeheader()
        for e in range(1, n + 1):
            bad = diverged and e == n
            writer.writerow({
                "epoch": e, "iterations": 10 * e, "g_updates": 10 * e, "g_loss": float("nan") if bad else 1.5,
                "d_loss": float("nan") if bad else 0.7, "fid": float("nan") if bad else fids[e - 1],
                "precision": float("nan") if bad else 0.1 * e, "recall": float("nan") if bad else 0.05 * e,
                "beta_h": 1.0, "beta_l": 1.0, "epoch_seconds": 1.0, "images_per_s": 640.0,
                "eval_seconds": 0.5, "weights_sha256": SHA, "weights_official": False, "frechet": "eigh",
                "status": "diverged" if bad else "ok",
                "kid": float("nan") if bad else fids[e - 1] / 1000, "kid_std": 0.001, "fid_samples": 64,
                "reference_images": 500, "reference_split": "all", "eval_precision": "fp32",
            })
            if not bad and e > 1:
                shutil.copy(first, run_dir / "samples" / f"epoch_{e:03d}.png")
    (run_dir / "run.json").write_text(json.dumps({
        "run": run_dir.name, "status": "diverged" if diverged else "ok", "epochs": EPOCHS, "epochs_done": n,
        "diverged_epoch": n if diverged else None, "weights_sha256": SHA, "weights_official": False}))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    overlay = {
        "name": "figs",
        "paths": {"results": str(root / "results"), "figures": str(root / "figures")},
        "run": {"gans": GANS, "variants": VARIANTS, "seeds": SEEDS},
        "train": {"epochs": EPOCHS},
        "figures": {"grid_epochs": [3, 20], "curve_sample_epochs": [1, 3, 6], "band": "minmax"},
    }
    config = root / "figs.yaml"
    config.write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([config])
    for i, run in enumerate(cfg.run_ids()):
        if run != MISSING:
            write_run(cfg.run_dir(run), *cfg.parse_run(run), index=i)
    return root, config, cfg


def test_missing_run_is_an_error_naming_it(tree, cli):
    _, config, _ = tree
    for command in ("aggregate", "figures", "summary"):
        proc = cli(command, "--config", config)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and MISSING in lines[0], proc.stderr
        assert f"ocbench train --config {config} --run {MISSING}" in lines[0] and "--allow-partial" in lines[0]


def test_aggregate_long_format(tree, cli):
    _, config, cfg = tree
    cli("aggregate", "--config", config, "--allow-partial", check=True)
    df = pd.read_csv(cfg.results_dir / "metrics.csv")
    finished = len(cfg.run_ids()) - 2  # minus the missing and the diverged run
    assert len(df) == finished * EPOCHS + DIVERGED_AT
    assert list(df.columns[:5]) == ["run", "gan", "variant", "seed", "alpha"]
    assert set(METRIC_COLUMNS) <= set(df.columns) and "run_status" in df.columns
    assert MISSING not in set(df.run)
    assert set(df[df.run == DIVERGED].run_status) == {"diverged"}
    assert df.groupby("run").size().drop(DIVERGED).eq(EPOCHS).all()
    assert df.loc[df.run == "dcgan_oct_s1", "alpha"].iloc[0] == 0.5


def test_figures_every_format_valid(tree, cli):
    _, config, cfg = tree
    cli("figures", "--config", config, "--allow-partial", check=True)
    for n in range(2, 8):
        png, pdf = cfg.figures_dir / f"fig{n}.png", cfg.figures_dir / f"fig{n}.pdf"
        with Image.open(png) as im:
            im.verify()
        assert pdf.read_bytes()[:5] == b"%PDF-"
    pypdf = pytest.importorskip("pypdf")
    text = {n: "".join(p.extract_text() for p in pypdf.PdfReader(cfg.figures_dir / f"fig{n}.pdf").pages)
            for n in range(2, 8)}
    assert all(len(pypdf.PdfReader(cfg.figures_dir / f"fig{n}.pdf").pages) == 1 for n in range(2, 8))
    for n in (2, 3, 6):
        assert "non-official Inception weights" in text[n]  # FIDs that must not be compared
    assert MISSING in text[6] and "diverged" in text[2] and "DCGAN_OCT" in text[2]
    assert "min–max" in text[2]


def test_summary_numbers(tree, cli):
    _, config, cfg = tree
    cli("summary", "--config", config, "--allow-partial", check=True)
    table = pd.read_csv(cfg.results_dir / "summary.csv").set_index("run")
    assert list(table.index) == cfg.run_ids()
    row = table.loc["dcgan_baseline_s0"]
    assert (row.best_fid, row.best_epoch, row.final_fid) == (150.0, 3, 175.0)
    assert (row.largest_rise, row.largest_rise_epoch) == (40.0, 4)
    assert row.fid_std_last10 == pytest.approx(np.std(KNOWN["dcgan_baseline_s0"], ddof=1))
    for run in cfg.run_ids():  # every run against a plain recomputation
        if run in (MISSING, DIVERGED):
            continue
        fids = fid_curve(*cfg.parse_run(run))
        rise = max(b - a for a, b in zip(fids, fids[1:]))
        assert table.loc[run, "best_fid"] == pytest.approx(min(fids))
        assert table.loc[run, "best_epoch"] == fids.index(min(fids)) + 1
        assert table.loc[run, "largest_rise"] == pytest.approx(max(rise, 0.0))
    div = table.loc[DIVERGED]
    assert div.status == "diverged" and div.final_epoch == DIVERGED_AT - 1
    assert table.loc[MISSING, "status"] == "missing" and np.isnan(table.loc[MISSING, "best_fid"])
    md = (cfg.results_dir / "summary.md").read_text()
    assert "not comparable" in md and MISSING in md and "Variants against the baseline" in md
    gans = pd.read_csv(cfg.results_dir / "summary_gans.csv")
    dcgan = gans[gans.gan == "dcgan"].set_index("variant")
    assert dcgan.loc["oct", "final_fid_vs_baseline"] == pytest.approx(
        dcgan.loc["oct", "final_fid"] - dcgan.loc["baseline", "final_fid"])


def test_grid_crop_matches_saved_images(tmp_path):
    """The crop geometry is torchvision's: image i at row i // 8, column i % 8, 2 px padding."""
    from torchvision.utils import save_image

    from ocbench.figures import grid_tiles

    images = smooth_grid(7)
    save_image(images, tmp_path / "grid.png", nrow=8, padding=2)
    cfg = config_mod.load()
    tiles = grid_tiles(tmp_path / "grid.png", cfg, 64)
    expect = images.mul(255).add_(0.5).clamp_(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert len(tiles) == 64 and all((t == e).all() for t, e in zip(tiles, expect))


def test_absent_variants_render(tree, tmp_path):
    """A config that trains only some GANs and variants (like official-wgan) renders, saying what is absent."""
    from ocbench.figures import output_paths, render

    root, _, _ = tree
    overlay = {"name": "figs", "paths": {"results": str(root / "results"), "figures": str(tmp_path)},
               "run": {"gans": ["wgan"], "variants": ["baseline", "oct"], "seeds": [0]},
               "train": {"epochs": EPOCHS}, "figures": {"formats": ["png"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([tmp_path / "c.yaml"])
    written = render(cfg, allow_partial=False, log=lambda *_: None)  # every wgan seed-0 run exists
    assert written == output_paths(cfg) and all(p.is_file() for p in written)


def test_figure8_a_panel_per_stabiliser_gan_baseline_vs_oct(tree, tmp_path):
    """Beyond the paper: DCGAN, SNGAN and WGAN_GP, vanilla vs octave, mean and band over two seeds."""
    from ocbench.aggregate import collect
    from ocbench.figures import figure8, output_paths, render

    root, _, paper_cfg = tree
    assert 8 not in paper_cfg.figure_numbers()  # the paper's GANs alone: Figures 2-7 only
    overlay = {"name": "figs", "paths": {"results": str(root / "results"), "figures": str(tmp_path)},
               "run": {"gans": ["dcgan", "sngan", "wgan_gp"], "variants": ["baseline", "oct"], "seeds": SEEDS},
               "train": {"epochs": EPOCHS}, "figures": {"formats": ["png"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([tmp_path / "c.yaml"])
    for i, run in enumerate(cfg.run_ids()):
        if not cfg.run_dir(run).exists():  # the dcgan runs are the tree's
            write_run(cfg.run_dir(run), *cfg.parse_run(run), index=100 + i)

    fig = figure8(cfg, collect(cfg))
    assert [ax.get_title() for ax in fig.axes] == ["DCGAN", "SNGAN", "WGAN_GP"]
    for ax, gan in zip(fig.axes, ["dcgan", "sngan", "wgan_gp"]):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == [gan.upper(), f"{gan.upper()}_OCT"]
        mean = np.mean([fid_curve(gan, "oct", seed) for seed in SEEDS], axis=0)
        np.testing.assert_allclose(lines[f"{gan.upper()}_OCT"].get_ydata(), mean)
        assert len(ax.collections) == 2  # a min-max band per variant
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "Beyond the paper" in notes and "spectral norm" in notes and "gradient penalty λ = 10" in notes
    assert "Figure 8" in fig.get_suptitle() and "beyond the paper" in fig.get_suptitle()

    written = render(cfg, log=lambda *_: None)
    assert written == output_paths(cfg) and written[-1] == cfg.figures_dir / "fig8.png"
    with Image.open(written[-1]) as im:
        im.verify()


def test_figures_2_and_6_drawn_with_kid_name_it_and_the_sample_counts(tree, tmp_path):
    """figures.metric: kid puts the per-epoch KID on Figures 2 and 6, and the figure says so."""
    from ocbench.aggregate import collect
    from ocbench.figures import figure2, figure6

    root, config, _ = tree
    cfg = config_mod.load([config], ["figures.metric=kid", f"paths.figures={tmp_path}"])
    runs = collect(cfg)
    for figure in (figure2, figure6):
        fig = figure(cfg, runs)
        assert "KID per epoch" in fig.get_suptitle() and fig.axes[0].get_ylabel() == "KID"
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        mean = np.mean([fid_curve("dcgan", "oct", seed) for seed in SEEDS], axis=0) / 1000
        np.testing.assert_allclose(lines["DCGAN_OCT"].get_ydata(), mean)
        notes = " ".join(t.get_text() for t in fig.texts)
        assert "KID" in notes and "64 generated samples per epoch against 500 real images (split all)" in notes
    with pytest.raises(config_mod.ConfigError, match="metric"):
        config_mod.load([config], ["figures.metric=is"])


def test_a_run_of_other_settings_is_refused_by_every_command_that_reads_it(tmp_path):
    """A finished tree, then the config changed (alpha) without retraining: aggregate, figures,
    summary and claims each refuse in one line naming the run and the setting, rather than show
    alpha 0.5's results as alpha 0.25's; a run still training is checked by its checkpoint.json."""
    from ocbench import aggregate, claims, figures, summary
    from ocbench.errors import OcbenchError
    from ocbench.formats import POSITION, write_metrics

    overlay = {"name": "t", "paths": {"results": str(tmp_path / "results"), "figures": str(tmp_path / "figures")},
               "run": {"gans": ["dcgan"], "variants": ["baseline", "oct"], "seeds": [0]}, "train": {"epochs": EPOCHS}}
    cfg = config_mod.from_dict(config_mod.deep_merge(config_mod.read_yaml(config_mod.BASE_CONFIG), overlay))
    for run in cfg.run_ids():  # finished runs: their metrics and run.json, which records their protocol
        cfg.run_dir(run).mkdir(parents=True)
        write_metrics(cfg.run_dir(run) / "metrics.csv", [
            {"epoch": e, "fid": fid, "status": "ok", "weights_official": False} for e, fid in
            enumerate(fid_curve(*cfg.parse_run(run)), 1)])
        (cfg.run_dir(run) / "run.json").write_text(json.dumps({
            "run": run, "status": "ok", "protocol": config_mod.run_protocol(cfg, run),
            "fingerprint": config_mod.protocol_fingerprint(cfg, run)}))
    aggregate.write(cfg)  # under its own settings: read
    changed = config_mod.from_dict(config_mod.deep_merge(cfg.raw, {"variants": {"oct": {"alpha": 0.25}}}))
    for write in (aggregate.write, figures.render, summary.write, claims.write):
        with pytest.raises(OcbenchError) as refused:
            write(changed)
        said = str(refused.value)
        assert "dcgan_oct_s0 was trained with other settings" in said and "\n" not in said, said
        assert "variants.oct.alpha 0.5 (this config: 0.25)" in said and "`--set variants.oct.alpha=0.5`" in said
    run = cfg.run_dir("dcgan_oct_s0")
    recorded = json.loads((run / "run.json").read_text())
    (run / "run.json").unlink()  # training again: its checkpoint.json says under what
    state = cfg.results_dir / "state" / "dcgan_oct_s0"
    state.mkdir(parents=True)
    (state / POSITION).write_text(json.dumps({k: recorded[k] for k in ("fingerprint", "protocol")}))
    with pytest.raises(OcbenchError, match=f"other settings than this config's \\({state / POSITION}\\)"):
        aggregate.write(changed, allow_partial=True)
