"""`ocbench claims` on hand-made runs with known answers.

Runs are written in the train module's metrics.csv format for DCGAN and LSGAN x baseline, OCT, LOW x 3
seeds. DCGAN_OCT is clearly better than DCGAN (lower final FID, no late jump), LSGAN_OCT clearly worse
than LSGAN, DCGAN_OCT's images/s scatter around DCGAN's; one run (lsgan_low_s2) is missing and one
(lsgan_low_s1) diverged. KID is FID / 1000, except LSGAN_OCT's, FID / 2000: on claim 1 KID calls LSGAN_OCT
better where FID calls it worse, a disagreement claims.md must name.
"""

import csv

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import stats

from ocbench import claims as claims_mod
from ocbench import config as config_mod
from ocbench.formats import METRIC_COLUMNS

EPOCHS = 6
SEEDS = [0, 1, 2]
MISSING = "lsgan_low_s2"
DIVERGED, DIVERGED_AT = "lsgan_low_s1", 5  # its last row has no FID; the run counts over epochs 1-4
FINAL = {  # final FID per seed
    ("dcgan", "baseline"): [100.0, 104.0, 98.0], ("dcgan", "oct"): [70.0, 72.0, 69.0],
    ("lsgan", "baseline"): [100.0, 103.0, 98.0], ("lsgan", "oct"): [150.0, 149.0, 155.0],
    ("dcgan", "low"): [101.0, 103.0, 99.0], ("lsgan", "low"): [99.0, 104.0, 97.0],
}
SPEED = {("dcgan", "baseline"): [100.0, 100.0, 100.0], ("dcgan", "oct"): [110.0, 90.0, 101.0]}


def write_run(run_dir, gan, variant, seed):
    """FID falls linearly from 300 to the final value; vanilla networks jump by 80 at epoch 5."""
    final = FINAL[gan, variant][seed]
    fids = list(np.linspace(300.0, final, EPOCHS))
    if variant == "baseline":
        fids[4] += 80.0
    speed = SPEED.get((gan, variant), [100.0] * 3)[seed]
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_COLUMNS)
        writer.writeheader()
        diverged = f"{gan}_{variant}_s{seed}" == DIVERGED
        for e, fid in enumerate(fids[:DIVERGED_AT] if diverged else fids, start=1):
            bad = diverged and e == DIVERGED_AT
            writer.writerow({
                "epoch": e, "iterations": 10 * e, "g_updates": 10 * e, "g_loss": 1.0, "d_loss": 1.0,
                "fid": float("nan") if bad else fid,
                "precision": 0.5, "recall": 0.5 - (0.05 * e if variant == "baseline" else 0.0),
                "beta_h": 1.0, "beta_l": 1.0, "epoch_seconds": 1.0, "images_per_s": speed, "eval_seconds": 0.1,
                "weights_sha256": "ab" * 32, "weights_official": False, "status": "diverged" if bad else "ok",
                "kid": float("nan") if bad else fid / (2000 if (gan, variant) == ("lsgan", "oct") else 1000),
                "kid_std": 0.001, "fid_samples": 10000, "reference_images": 202599, "reference_split": "all",
                "pr_real_samples": 10000, "kid_real_samples": 10000, "eval_precision": "fp32", "frechet": "eigh",
            })


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    overlay = {"name": "claimtest", "paths": {"results": str(root / "results"), "figures": str(root / "figures")},
               "run": {"gans": ["dcgan", "lsgan"], "variants": ["baseline", "oct", "low"], "seeds": SEEDS},
               "train": {"epochs": EPOCHS}}
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([config])
    for run in cfg.run_ids():
        if run != MISSING:
            write_run(cfg.run_dir(run), *cfg.parse_run(run))
    return root, config, cfg


def row(table: pd.DataFrame, claim: str, gan: str, measure: str) -> pd.Series:
    hit = table[(table.claim == claim) & (table.gan == gan) & (table.measure == measure)]
    assert len(hit) == 1, (claim, gan, measure)
    return hit.iloc[0]


def test_a_missing_run_stops_the_command_and_names_it(tree, cli):
    _, config, _ = tree
    proc = cli("claims", "--config", config)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and MISSING in lines[0] and "--allow-partial" in lines[0]


def test_known_answers_three_seeds(tree, cli):
    _, config, cfg = tree
    cli("claims", "--config", config, "--allow-partial", check=True)
    table = pd.read_csv(cfg.results_dir / "claims.csv")

    # A clear improvement: supported, with the paired t-interval computed independently here.
    r = row(table, "1", "dcgan", "final_fid")
    oct_, base = FINAL["dcgan", "oct"], FINAL["dcgan", "baseline"]
    ci = stats.ttest_rel(oct_, base).confidence_interval(0.95)
    assert r.n_seeds == 3 and r.seeds == "0 1 2"
    assert (r.mean_setting, r.mean_versus) == pytest.approx((np.mean(oct_), np.mean(base)))
    assert r.difference == pytest.approx(np.mean(np.subtract(oct_, base)))
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))
    assert r.margin == pytest.approx(0.10 * np.mean(base)) and r.verdict == "supported"
    # The vanilla nets jump at epoch 5 and lose recall after epoch 2 (of 6; the paper's 20 of 50).
    assert row(table, "2", "dcgan", "largest_rise").verdict == "supported"
    assert row(table, "3", "dcgan", "recall_drop_late").verdict == "supported"

    # A clear degradation: contradicted.
    assert row(table, "1", "lsgan", "final_fid").verdict == "contradicted"
    # Noise around zero: not resolved.
    assert row(table, "6", "dcgan", "images_per_s").verdict == "not resolved at 3 seeds"
    # LOW within 10% of the baseline's mean FID curve on DCGAN: similar.
    assert row(table, "4b", "dcgan", "mean_fid").verdict == "supported"

    # The missing run: LSGAN's LOW comparisons use seeds 0 and 1 and say why; the diverged run is
    # kept, measured over the epochs before it diverged, and named.
    r = row(table, "4a", "lsgan", "final_fid")
    assert r.n_seeds == 2 and r.seeds == "0 1" and f"{MISSING} missing" in r.notes
    assert f"{DIVERGED} diverged at epoch {DIVERGED_AT}" in r.notes
    fids = np.linspace(300.0, FINAL["lsgan", "low"][1], EPOCHS)
    assert r.mean_setting == pytest.approx((FINAL["lsgan", "low"][0] + fids[DIVERGED_AT - 2]) / 2)
    # Settings this config does not train are named, not dropped.
    assert row(table, "5a", "dcgan", "final_fid").verdict == "not trained by this config"
    assert set(table[table.gan == "wgan"].verdict) == {"not trained by this config"}

    # KID beside FID: the same test on KID, and a disagreement between them said on the row and in claims.md.
    assert row(table, "1", "dcgan", "final_kid").verdict == "supported"
    assert row(table, "1", "dcgan", "final_kid").fid_kid_agree == True  # noqa: E712 (read back from csv)
    r = row(table, "1", "lsgan", "final_kid")
    assert r.verdict == "supported" and r.fid_kid_agree == False  # noqa: E712
    assert np.isnan(row(table, "1", "lsgan", "final_fid").fid_kid_agree)  # FID rows have no twin to differ from
    # What the numbers were computed under, on every claims row.
    assert (r.fid_samples, r.reference_images, r.reference_split, r.eval_precision, r.frechet) == (
        10000, 202599, "all", "fp32", "eigh") and r.weights_sha256 == "ab" * 8

    md = (cfg.results_dir / "claims.md").read_text()
    assert "1 quality, LSGAN: final KID **supported**, FID twin **contradicted**" in md
    assert "10000 generated samples against a reference of 202599 real images (split all)" in md
    assert "95% t-interval" in md and MISSING in md and DIVERGED in md and "not comparable" in md
    assert "better or similar quality" in md  # the paper's words
    for fmt in cfg.figures.formats:
        assert (cfg.figures_dir / f"claims.{fmt}").stat().st_size > 0
    with Image.open(cfg.figures_dir / "claims.png") as im:
        im.verify()
    pypdf = pytest.importorskip("pypdf")
    pages = pypdf.PdfReader(cfg.figures_dir / "claims.pdf").pages
    assert len(pages) == 1 and pages[0].mediabox.width <= 596 and pages[0].mediabox.height <= 842  # one A4 page
    text = "".join(p.extract_text() for p in pages)
    assert "non-official Inception weights" in text and "contradicted" in text and MISSING in text


def test_one_seed_gives_a_difference_and_no_interval(tree, cli):
    _, config, cfg = tree
    cli("claims", "--config", config, "--set", "run.seeds=[0]", check=True)
    table = pd.read_csv(cfg.results_dir / "claims.csv")
    r = row(table, "1", "dcgan", "final_fid")
    assert r.n_seeds == 1 and r.difference == pytest.approx(70.0 - 100.0)
    assert np.isnan(r.ci_low) and r.verdict == "no interval possible with one seed"
    assert "no interval possible with one seed" in (cfg.results_dir / "claims.md").read_text()


@pytest.mark.parametrize("test, better, low, high, margin, expect", [
    ("better", "lower", -5, -1, None, "supported"),
    ("better", "lower", 1, 5, None, "contradicted"),
    ("better", "higher", 1, 5, None, "supported"),
    ("better", "higher", -1, 5, None, "not resolved at 3 seeds"),
    ("worse", "lower", 1, 5, None, "supported"),  # RAMP: a higher FID is what the paper says
    ("worse", "lower", -5, -1, None, "contradicted"),
    ("not_worse", "lower", -3, 9, 10, "supported"),  # better or similar: worse by less than the margin
    ("not_worse", "lower", 11, 20, 10, "contradicted"),
    ("not_worse", "lower", 5, 15, 10, "not resolved at 3 seeds"),
    ("similar", "lower", -9, 9, 10, "supported"),
    ("similar", "lower", -12, 9, 10, "not resolved at 3 seeds"),
    ("similar", "lower", -30, -12, 10, "contradicted"),
])
def test_verdict_rules(test, better, low, high, margin, expect):
    assert claims_mod.verdict(test, better, low, high, margin, 3) == expect


def test_every_claim_names_known_measures_variants_and_gans():
    cfg = config_mod.load()
    for claim in claims_mod.CLAIMS:
        assert set(claim.measures) <= set(claims_mod.MEASURES)
        assert {claim.setting, claim.versus} <= set(cfg.variants) and set(claim.gans) <= set(cfg.gans)
        assert claim.test in claims_mod.TESTS and (claim.margin is not None) == (claim.test in ("not_worse", "similar"))
        assert (claims_mod.margin_of(cfg, claim) is not None) == (claim.margin is not None)  # a key of analysis.margins


def test_margins_confidence_and_stability_window_come_from_the_config(tree):
    """analysis.margins, analysis.confidence and analysis.std_window change the verdicts' inputs and
    the words of claims.md; the margins a claim does not use stay as they were."""
    from ocbench.aggregate import collect

    _, config, _ = tree
    cfg = config_mod.load([config], ["analysis.margins.similar=0.3", "analysis.confidence=0.99",
                                     "analysis.std_window=3"])
    runs = collect(cfg)
    result = claims_mod.evaluate(cfg, runs)
    r = row(result, "1", "dcgan", "final_fid")
    oct_, base = FINAL["dcgan", "oct"], FINAL["dcgan", "baseline"]
    ci = stats.ttest_rel(oct_, base).confidence_interval(0.99)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))
    assert r.margin_rel == 0.3 and r.margin == pytest.approx(0.3 * np.mean(base))
    assert row(result, "4a", "dcgan", "final_fid").margin_rel == 0.25  # not_dramatically_worse: unchanged
    # the stability window: FID's standard deviation over the last 3 of the 6 epochs
    table = claims_mod.measure_table(cfg, runs)
    fids = np.linspace(300.0, FINAL["dcgan", "oct"][0], EPOCHS)
    assert table.set_index("run").fid_std_last10["dcgan_oct_s0"] == pytest.approx(np.std(fids[-3:], ddof=1))
    md = claims_mod.markdown(cfg, runs, result)
    assert "99% t-interval" in md and "difference [99% CI]" in md and "FID std, last 3 epochs" in md
    assert "two one-sided tests at 1%, which use a 98% interval" in md and "not worse by more than 30%" in md


def test_a_metrics_file_of_another_version_is_refused_in_one_line(tmp_path):
    """There has been no release: a metrics.csv without the columns this ocbench writes (an older
    checkout's) is refused, naming them and the fix, not padded with guesses."""
    from ocbench.aggregate import collect
    from ocbench.errors import OcbenchError

    overlay = {"name": "old", "paths": {"results": str(tmp_path / "results"), "figures": str(tmp_path / "figures")},
               "run": {"gans": ["dcgan"], "variants": ["baseline", "oct"], "seeds": SEEDS},
               "train": {"epochs": EPOCHS}, "figures": {"formats": ["png"]}}
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([config])
    for run in cfg.run_ids():
        write_run(cfg.run_dir(run), *cfg.parse_run(run))
    path = cfg.run_dir(cfg.run_ids()[0]) / "metrics.csv"
    pd.read_csv(path).drop(columns=["kid", "kid_std", "frechet"]).to_csv(path, index=False)
    with pytest.raises(OcbenchError, match=r"metrics.csv lacks the columns frechet, kid, kid_std: this version of "
                                           r"`ocbench train` did not write it; retrain the run"):
        collect(cfg)


def test_a_published_baseline_is_set_beside_ours_and_other_gans_are_judged_too(tmp_path):
    """analysis.references (sngan-resnet.yaml's mimicry numbers): claims.md opens with each published
    value beside the mean of our final evaluations (run.json's "final") and its seed interval, with
    whether the interval holds it; claim 1 is judged on the config's SNGAN too, claim 3 (DCGAN and
    LSGAN's mode collapse) is not."""
    import json

    from ocbench.aggregate import collect

    FINAL["sngan", "baseline"], FINAL["sngan", "oct"] = [100.0, 104.0, 98.0], [70.0, 72.0, 69.0]
    ours = {"fid": [12.5, 13.4, 13.1], "kid": [0.0100, 0.0110, 0.0105]}  # FID: 13.0 +- 1.1; KID: well above
    published = [{"gan": "sngan", "variant": "baseline", "measure": m, "value": v, "std": s, "generated": 50000,
                  "real": 50000, "source": f"mimicry, {m}"} for m, v, s in (("fid", 12.93, 0.04), ("kid", 0.0076, 0.0001))]
    overlay = {"name": "ref", "paths": {"results": str(tmp_path / "results"), "figures": str(tmp_path / "figures")},
               "run": {"gans": ["sngan"], "variants": ["baseline", "oct"], "seeds": SEEDS},
               "train": {"epochs": EPOCHS}, "metrics": {"final_samples": 50000}, "figures": {"formats": ["png"]},
               "analysis": {"references": published}}
    cfg = config_mod.from_dict(config_mod.deep_merge(config_mod.read_yaml(config_mod.BASE_CONFIG), overlay))
    for run in cfg.run_ids():
        gan, variant, seed = cfg.parse_run(run)
        write_run(cfg.run_dir(run), gan, variant, seed)
        final = {m: ours[m][seed] for m in ours} if variant == "baseline" else {"fid": 11.0, "kid": 0.009}
        counts = {"fid_samples": 50000, "reference_images": 50000, "reference_seed": 0, "kid_real_samples": 10000}
        (cfg.run_dir(run) / "run.json").write_text(json.dumps({"run": run, "final": {**final, **counts}}))
    result = claims_mod.evaluate(cfg, collect(cfg))

    fid = row(result, "R", "sngan", "final_eval_fid")
    ci = stats.ttest_1samp(np.array(ours["fid"]) - 12.93, 0).confidence_interval(0.95)
    assert fid.mean_setting == pytest.approx(13.0) and fid.difference == pytest.approx(13.0 - 12.93)
    assert (fid.ci_low, fid.ci_high) == pytest.approx((ci.low, ci.high))
    assert fid.verdict == "within the seed interval" and fid.n_seeds == 3
    assert (fid.fid_samples, fid.reference_images) == ("50000", "50000")  # the final's counts, not every epoch's
    assert row(result, "R", "sngan", "final_eval_kid").verdict == "outside the seed interval"
    assert row(result, "1", "sngan", "final_fid").verdict == "supported"  # OCT 70 vs 100: the paper's claim 1
    assert not len(result[(result.claim == "3") & (result.gan == "sngan")])
    claims_mod.write(cfg)
    md = (cfg.results_dir / "claims.md").read_text()
    assert md.index("## Our baseline against published numbers") < md.index("| claim | GAN |")
    # ours and ours − published to the same decimals: 13.000 − 12.93 reads as 0.070
    assert "| SNGAN | FID, final evaluation | 12.93 ± 0.04 | 13.000 | 0.070 [" in md and "**within the seed interval**" in md
    # each row says both image counts, published and ours; KID's real ones are the features it keeps
    assert "| published 50,000 / 50,000; ours 50,000 / 50,000 | mimicry, fid |" in md
    assert "| published 50,000 / 50,000; ours 50,000 / 10,000 | mimicry, kid |" in md
    assert "for DCGAN, LSGAN, WGAN, SNGAN." in md

    # Without metrics.final_samples the row says what to set; a paper config has no reference section.
    plain = config_mod.from_dict({**cfg.raw, "metrics": {**cfg.raw["metrics"], "final_samples": None}})
    for run in plain.run_ids():
        (plain.run_dir(run) / "run.json").write_text(json.dumps({"run": run}))
    assert row(claims_mod.evaluate(plain, collect(plain)), "R", "sngan", "final_eval_fid").verdict == \
        "no final evaluation: set metrics.final_samples"
    assert "against published numbers" not in claims_mod.markdown(
        config_mod.from_dict({**cfg.raw, "analysis": {**cfg.raw["analysis"], "references": []}}), collect(cfg),
        claims_mod.evaluate(config_mod.from_dict({**cfg.raw, "analysis": {**cfg.raw["analysis"], "references": []}}), collect(cfg)))


def one_seed(tree, *overrides):
    """The tree's runs judged at seed 0 alone (and `overrides`): (cfg, runs, claims table)."""
    from ocbench.aggregate import collect

    cfg = config_mod.load([tree[1]], ["run.seeds=[0]", *overrides])
    runs = collect(cfg)
    return cfg, runs, claims_mod.evaluate(cfg, runs)


def test_fid_and_kid_agree_only_where_the_table_says_so(tree):
    """With one seed no verdict has an interval, so claims.md claims no agreement in verdict; FID and
    KID differences on opposite sides of the test (LSGAN_OCT: FID 50 worse, beyond its margin of 10;
    KID 0.025 better) are named, with their numbers."""
    cfg, runs, result = one_seed(tree)
    assert row(result, "1", "lsgan", "final_kid").fid_kid_agree == False  # noqa: E712
    assert row(result, "1", "dcgan", "final_kid").fid_kid_agree == True  # noqa: E712
    md = claims_mod.markdown(cfg, runs, result)
    assert "They agree" not in md and "They point different ways on:" in md
    assert ("- 1 quality, LSGAN (one seed, no interval): final FID difference 50.0 fails (margin 10.0), "
            "final KID difference -0.0250 passes (margin 0.0100)") in md

    cfg, runs, result = one_seed(tree, "run.gans=[dcgan]")  # DCGAN's KID is its FID / 1000: the same way
    md = claims_mod.markdown(cfg, runs, result)
    assert "No verdict has an interval (one seed), so whether FID and KID agree cannot be tested" in md
    assert "They agree" not in md


def test_each_row_rounds_its_means_and_difference_alike(tree):
    """A reader can reconcile `mean setting − mean versus` with the difference of the same row."""
    cfg, runs, result = one_seed(tree)
    md = claims_mod.markdown(cfg, runs, result)
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| ") and " | 1 | " in line]
    assert len(table) > 20
    for cells in table:
        a, b, d = cells[5], cells[6], cells[7]
        places = {len(x.partition(".")[2]) for x in (a, b, d)}
        assert len(places) == 1, cells  # one number of decimals on the row
        assert abs(float(a) - float(b) - float(d)) <= 1.01 * 10.0 ** -places.pop(), cells
    assert "| 1 quality | LSGAN | final KID | LSGAN_OCT | LSGAN | 0.0750 | 0.1000 | -0.0250 | 0.0100 |" in md


def test_the_forest_plot_says_one_seed_once(tree):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    cfg, runs, result = one_seed(tree)
    fig = claims_mod.forest_plot(cfg, runs, result)
    texts = " ".join(t.get_text() for t in fig.findobj(Text))
    plt.close(fig)
    assert texts.count("no interval") == 1 and "One seed: each dot is the single run's difference" in texts


def test_smoke_settings_label_every_output_and_say_why_recall_is_0(tree):
    """A config on synthetic data with placeholder Inception weights (smoke.yaml's facts, whatever its
    name) says so at the top of claims.md and summary.md and on its figures, with what makes the numbers
    uninformative; a config without those facts carries no such label."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from ocbench import aggregate, figures, summary

    smoke = ["data.synthetic={n: 200, seed: 0}", "metrics.placeholder_weights=true", "metrics.fid_samples=32",
             "metrics.dims=64", "metrics.pr_real_samples=200"]
    cfg, runs, result = one_seed(tree, *smoke)
    runs.metrics["recall"] = 0.0  # as every epoch of the smoke preset scores it
    label = ("Smoke-test settings, not a measurement of the paper: synthetic data (200 drawn faces, data.synthetic), "
             "not CelebA; placeholder Inception (seeded random weights, metrics.placeholder_weights)")
    recall = "Recall is 0 in every scored epoch of every run: none of the 200 real images' features lies within"
    md = claims_mod.markdown(cfg, runs, result)
    assert md.index("**Smoke-test settings, not a measurement of the paper:**") < md.index("FIDs from non-official")
    assert "32 generated samples an epoch on 64-d features" in md and recall in md
    table = aggregate.per_run(runs, cfg.analysis.std_window)
    assert "**Smoke-test settings" in summary.markdown(cfg, runs, table, summary.per_gan(table))
    for fig in (claims_mod.forest_plot(cfg, runs, result), figures.figure2(cfg, runs), figures.figure4(cfg, runs)):
        texts = [t.get_text() for t in fig.findobj(Text)]
        plt.close(fig)
        assert any(t.startswith(label[:60]) for t in texts), texts  # the first note line, in red
        assert recall[:40] in " ".join(texts)

    cfg, runs, result = one_seed(tree)  # real data, official weights asked for: no label
    assert "Smoke-test" not in claims_mod.markdown(cfg, runs, result)
