"""Does the paper's claim hold? Each claim of the paper as a measured verdict with its uncertainty.

`ocbench claims` writes results/<config>/claims.csv and claims.md, and a forest plot of the claims as
figures/<config>/claims.<format>. For every claim in CLAIMS, every GAN it concerns and every measure it
is judged on: the two settings' means over seeds, their difference paired by seed (setting − versus,
in the measure's units) with a t-interval across seeds (`analysis.confidence`, 95%), the number of seeds,
and a verdict in plain words: supported, contradicted, or not resolved at this number of seeds.

Per-run measures come from the stability numbers (`aggregate.per_run`: best and final FID, FID standard
deviation over the last `analysis.std_window` epochs, largest rise) and, for what the summary does
not hold, from the per-epoch rows (`run_extras`). Runs that are missing or unfinished are left out of
the pairs and named; diverged runs are kept (measured over the epochs before they diverged, as in the
summary) and named. The margins and the confidence level are the config's (`analysis`).

A claim about the paper's three GANs is judged on every other GAN the config trains too (SN-GAN,
WGAN-GP, the ResNet SN-GAN of sngan-resnet.yaml): the question the paper's "generalizable" raises.
Published numbers the config lists (`analysis.references`, e.g. mimicry's SN-GAN FID on CelebA-128)
are set beside our final evaluation (run.json's "final", `metrics.final_samples` samples) as rows
of claim `R`, first in claims.md: whether the published value lies within our seed interval says
whether our baseline reproduces before any octave verdict is read. Each says how many images, generated
and real, the published number and ours were computed on (on an R row of claims.csv, `fid_samples` and
`reference_images` are our final evaluation's: for KID, the real features it compares with).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ocbench.aggregate import (PROVENANCE, Runs, collect, label, per_run, provenance, provenance_line,
                               require_finished, smoke_paragraph, smoke_settings, weights_header)
from ocbench.config import Config, run_id
from ocbench.formats import atomic_write

# --------------------------------------------------------------------------------------------------
# the measures a claim can be judged on (per run; one value each)


@dataclass(frozen=True)
class Measure:
    label: str
    unit: str
    better: str  # "lower" or "higher"
    how: str  # one sentence for claims.md


# The paper's epoch 20 of 50: "we choose epoch 20 ... as it seems to be the optimal training epoch",
# just before vanilla DCGAN and LSGAN "start to suffer from mode collapse from epoch 25 forward".
# Runs of another length use the same fraction of their epochs (epoch 4 of 11, epoch 1 of 3).
COLLAPSE_FROM = 20 / 50


def collapse_epoch(epochs: int) -> int:
    return max(1, round(COLLAPSE_FROM * epochs))


MEASURES = {
    "final_fid": Measure("final FID", "FID", "lower",
                         "FID after the last epoch (the last finite one if the run diverged)."),
    "best_fid": Measure("best FID", "FID", "lower", "the lowest FID of any epoch."),
    "mean_fid": Measure("mean FID", "FID", "lower",
                        "FID averaged over every epoch: the whole curve, not one point of it."),
    "fid_std_last10": Measure("FID std, last {window} epochs", "FID", "lower",  # window: analysis.std_window
                              "sample standard deviation of FID over the last {window} epochs."),
    "largest_rise": Measure("largest FID rise", "FID", "lower",
                            "the biggest increase of FID from one epoch to the next (0: never rose)."),
    "fid_rise_late": Measure("FID rise after epoch 20", "FID", "lower",
                             "final FID minus the FID at epoch 20 of 50 (the same fraction of shorter runs)."),
    "recall_drop_late": Measure("recall drop after epoch 20", "recall", "lower",
                                "recall at epoch 20 of 50 minus the final recall: a loss of diversity, "
                                "what mode collapse is."),
    "images_per_s": Measure("training images/s", "images/s", "higher",
                            "median over epochs of training images per second (evaluation not counted)."),
    # KID beside FID: unbiased by the sample count (FID's bias falls as 1/N), so a claim judged on both
    # holds whatever N the runs were scored with only when the two agree.
    "final_kid": Measure("final KID", "KID", "lower", "KID after the last epoch (the last finite one)."),
    "best_kid": Measure("best KID", "KID", "lower", "the lowest KID of any epoch."),
    "mean_kid": Measure("mean KID", "KID", "lower", "KID averaged over every epoch."),
}
KID_OF = {"final_fid": "final_kid", "best_fid": "best_kid", "mean_fid": "mean_kid"}  # a FID measure's KID twin


def measures_for(cfg: Config) -> dict[str, Measure]:
    """MEASURES in the words of `cfg`: its stability window (analysis.std_window) in the FID std's."""
    window = cfg.analysis.std_window
    return {k: replace(m, label=m.label.format(window=window), how=m.how.format(window=window))
            for k, m in MEASURES.items()}


# --------------------------------------------------------------------------------------------------
# the claims: one table, in the paper's order
#
# Tests: `better` / `worse`: the setting is better / worse than `versus` on the measure; `not_worse`:
# "better or similar", "not dramatically worse": not worse by more than a margin; `similar`: within a
# margin either way. A margin is a fraction of the compared (`versus`) setting's mean, so that it means
# the same for FIDs of any scale (the placeholder weights' FIDs included). How they are chosen:
# "similar" is 10%: seed-to-seed spread of FID is of that order for GANs of this size (Lucic et al.,
# "Are GANs created equal?", 2018), so a smaller difference is one a single run cannot see;
# "not dramatically worse" is 25%, a difference a reader of Fig. 6 would see at a glance but not call
# dramatic. They are set in the config, analysis.margins (these are its defaults), and a claim names
# the one it uses; the tables and the figure follow.


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    words: str  # the paper's words, quoted
    where: str  # section / figure
    setting: str  # the variant the claim is about
    versus: str  # the variant it is compared with
    measures: tuple[str, ...]
    test: str  # better | worse | not_worse | similar
    margin: str | None = None  # not_worse / similar: a key of analysis.margins (fraction of versus's mean)
    gans: tuple[str, ...] = ("dcgan", "lsgan", "wgan")
    reading: str = ""  # how the words become a test, where that is a choice
    only_these_gans: bool = False  # True: about these GANs alone, not also the config's others


def gans_of(cfg: Config, claim: Claim) -> tuple[str, ...]:
    """The GANs a claim is judged on: its own (the paper's), then every other GAN `cfg` trains, unless
    the claim is about its GANs alone (claim 3: vanilla DCGAN and LSGAN's mode collapse)."""
    if claim.only_these_gans:
        return claim.gans
    return claim.gans + tuple(g for g in cfg.run.gans if g not in claim.gans)


SIMILAR, NOT_DRAMATICALLY_WORSE = "similar", "not_dramatically_worse"  # keys of analysis.margins


def margin_of(cfg: Config, claim: Claim) -> float | None:
    """The claim's margin as a fraction of the versus setting's mean, from the config (None: no margin)."""
    return None if claim.margin is None else getattr(cfg.analysis.margins, claim.margin)


CLAIMS = (
    Claim("1", "quality", "in all three baselines, the octave model generates images of better or similar "
          "quality compared to the previous training", "Sec. 4.2, Fig. 2", "oct", "baseline",
          ("final_fid", "best_fid", "final_kid", "best_kid"), "not_worse", SIMILAR),
    Claim("2", "stability", "we can observe the improvement of stability during training for the octave "
          "implementation", "Sec. 4.2, Fig. 2", "oct", "baseline", ("fid_std_last10", "largest_rise"), "better"),
    Claim("3", "mode collapse", "vanilla DCGAN and LSGAN start to suffer from mode collapse from epoch 25 "
          "forward (Sec. 4.2, Fig. 4); [octave convolution leads to] suppressing the mode collapse problem",
          "Sec. 4.2 and 5", "oct", "baseline", ("recall_drop_late", "fid_rise_late"), "better",
          gans=("dcgan", "lsgan"), only_these_gans=True,
          reading="OCT loses less recall and gains less FID after epoch 20 than the vanilla network."),
    Claim("4a", "LOW quality", "surprisingly the score results are not dramatically worse than vanilla "
          "baselines", "Sec. 4.2, Fig. 6", "low", "baseline", ("final_fid", "best_fid", "final_kid", "best_kid"),
          "not_worse",
          NOT_DRAMATICALLY_WORSE),
    Claim("4b", "LOW evolution", "both share a similar FID score evolution", "Sec. 4.2, Fig. 6", "low",
          "baseline", ("mean_fid", "mean_kid"), "similar", SIMILAR),
    Claim("5a", "RAMP", "this strategy might be too harsh", "Sec. 4.2, Fig. 6", "ramp", "oct",
          ("final_fid", "mean_fid", "final_kid", "mean_kid"), "worse",
          reading="RAMP has a higher FID (and KID) than OCT (same α, constant β)."),
    Claim("5b", "COMBI", "a second weighting strategy called combination ..., which tries to be a trade-off "
          "between frequency components offering an optimized combination", "Sec. 4.2, Fig. 6", "combi", "oct",
          ("final_fid", "mean_fid", "final_kid", "mean_kid"), "not_worse", SIMILAR,
          reading="the paper gives no direction against OCT; tested: COMBI at least as good as OCT "
                  "(better or similar)."),
    Claim("6", "speed", "we achieve to reduce spatial redundancy by using octave convolution, and therefore, "
          "the training experiments a speedup", "Sec. 1", "oct", "baseline", ("images_per_s",), "better",
          reading="images/s as the runs recorded them: on the device and under the load they ran with."),
)

TESTS = {
    "better": "better than {versus}: supported when the whole interval lies on the better side of 0, "
              "contradicted when it lies wholly on the worse side",
    "worse": "worse than {versus}: supported when the whole interval lies on the worse side of 0, "
             "contradicted when it lies wholly on the better side",
    "not_worse": "better or similar to {versus}, not worse by more than {margin:.0%} of {versus}'s mean: "
                 "supported when the whole interval lies short of that margin, contradicted when it lies "
                 "wholly beyond it",
    "similar": "within ±{margin:.0%} of {versus}'s mean: supported when the whole interval lies inside, "
               "contradicted when it lies wholly outside",
}

SUPPORTED, CONTRADICTED = "supported", "contradicted"
ONE_SEED = "no interval possible with one seed"
NOT_TRAINED = "not trained by this config"

COLUMNS = [
    "claim", "title", "gan", "measure", "unit", "better", "setting", "versus", "test", "margin_rel", "margin",
    "mean_setting", "mean_versus", "difference", "ci_low", "ci_high", "n_seeds", "seeds", "verdict", "notes",
    "fid_kid_agree", *PROVENANCE,  # fid_kid_agree: on a KID row, whether the FID twin's verdict is the same
]


# --------------------------------------------------------------------------------------------------
# per-run measures


def value_at(rows: pd.DataFrame, column: str, epoch: int) -> float:
    hit = rows.loc[rows.epoch.astype(int) == epoch, column].astype(float)
    return float(hit.iloc[0]) if len(hit) else math.nan


def run_extras(rows: pd.DataFrame, epochs: int) -> dict:
    """The measures the stability summary does not hold, from one run's per-epoch rows."""
    rows = rows.sort_values("epoch")
    fid = rows["fid"].astype(float)
    finite = rows[np.isfinite(fid)]
    if finite.empty:
        return {}
    at = collapse_epoch(epochs)
    last = finite.iloc[-1]
    kid = rows["kid"].astype(float)
    return {
        "mean_fid": float(finite["fid"].astype(float).mean()),
        "mean_kid": float(kid[np.isfinite(kid)].mean()) if np.isfinite(kid).any() else math.nan,
        "fid_rise_late": float(last["fid"]) - value_at(finite, "fid", at),
        "recall_drop_late": value_at(finite, "recall", at) - float(last["recall"]),
        "images_per_s": float(rows["images_per_s"].astype(float).median()),
    }


def measure_table(cfg: Config, runs: Runs) -> pd.DataFrame:
    """One row per configured run: its identity, status and every measure in MEASURES."""
    table = per_run(runs, cfg.analysis.std_window)
    extras = pd.DataFrame([run_extras(runs.metrics[runs.metrics.run == r], cfg.train.epochs)
                           for r in table.run], index=table.index,
                          columns=["mean_fid", "mean_kid", "fid_rise_late", "recall_drop_late", "images_per_s"])
    table = pd.concat([table, extras], axis=1)
    info = runs.runs.set_index("run")
    table["diverged_epoch"] = table.run.map(info["diverged_epoch"])
    table["epochs_total"] = table.run.map(info["epochs"])
    return table


# --------------------------------------------------------------------------------------------------
# one comparison: paired differences, interval, verdict


def t_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    """The t-interval of the mean paired difference across seeds (n - 1 degrees of freedom)."""
    from scipy import stats

    n = len(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(diffs, ddof=1) / math.sqrt(n)
    return float(diffs.mean() - half), float(diffs.mean() + half)


def verdict(test: str, better: str, low: float, high: float, margin: float | None, n: int) -> str:
    """The verdict of an interval [low, high] of (setting − versus) under a claim's test."""
    # As an improvement: positive means the claim's setting is better on this measure.
    sign = 1.0 if better == "higher" else -1.0
    lo, hi = sorted((sign * low, sign * high))
    m = margin or 0.0
    if test == "better":
        supported, contradicted = lo > 0, hi < 0
    elif test == "worse":
        supported, contradicted = hi < 0, lo > 0
    elif test == "not_worse":
        supported, contradicted = lo > -m, hi < -m
    elif test == "similar":
        supported, contradicted = -m < lo and hi < m, lo > m or hi < -m
    else:
        raise ValueError(f"unknown test {test!r}")
    if supported:
        return SUPPORTED
    if contradicted:
        return CONTRADICTED
    return f"not resolved at {n} seeds"


def run_note(r) -> str | None:
    """Why a run is left out of, or qualified in, a comparison (None: a plain finished run)."""
    if r.status == "missing":
        return f"{r.run} missing"
    if r.status == "incomplete":
        return f"{r.run} unfinished ({r.epochs_done} of {r.epochs_total} epochs), left out"
    if r.status == "diverged":
        return f"{r.run} diverged at epoch {r.diverged_epoch}, measured over the epochs before"
    return None


def compare(cfg: Config, table: pd.DataFrame, claim: Claim, gan: str, measure: str,
            runs_metrics: pd.DataFrame) -> dict:
    """One row of claims.csv: claim x GAN x measure."""
    m = measures_for(cfg)[measure]
    row = {"claim": claim.id, "title": claim.title, "gan": gan, "measure": measure, "unit": m.unit,
           "better": m.better, "setting": label(gan, claim.setting), "versus": label(gan, claim.versus),
           "test": claim.test, "margin_rel": margin_of(cfg, claim), "n_seeds": 0, "seeds": "", "notes": ""}
    compared = runs_metrics[runs_metrics.run.isin({run_id(gan, v, s) for v in (claim.setting, claim.versus)
                                                   for s in cfg.run.seeds})]
    row.update(provenance(compared))
    absent = [x for x in (gan,) if x not in cfg.run.gans] + \
             [v for v in (claim.setting, claim.versus) if v not in cfg.run.variants]
    if absent:
        return {**row, "verdict": NOT_TRAINED, "notes": f"not in run.gans/run.variants: {', '.join(absent)}"}

    notes, pairs = [], []
    for seed in cfg.run.seeds:
        both = []
        for variant in (claim.setting, claim.versus):
            r = table[(table.gan == gan) & (table.variant == variant) & (table.seed == seed)].iloc[0]
            note = run_note(r)
            if note:
                notes.append(note)
            value = float(r[measure]) if r.status in ("ok", "diverged") else math.nan
            if r.status in ("ok", "diverged") and not np.isfinite(value):
                notes.append(f"{r.run} has no {m.label}")
            both.append(value)
        if all(np.isfinite(both)):
            pairs.append((seed, *both))
    row["notes"] = "; ".join(dict.fromkeys(notes))
    if not pairs:
        return {**row, "verdict": "no data: no seed has both runs finished"}
    seeds, a, b = (np.array(x) for x in zip(*pairs))
    diffs = a - b
    margin = row["margin_rel"] * abs(b.mean()) if row["margin_rel"] is not None else None
    row.update(mean_setting=a.mean(), mean_versus=b.mean(), difference=diffs.mean(), margin=margin,
               n_seeds=len(diffs), seeds=" ".join(str(int(s)) for s in seeds))
    if len(diffs) == 1:
        return {**row, "verdict": ONE_SEED}
    low, high = t_interval(diffs, cfg.analysis.confidence)
    return {**row, "ci_low": low, "ci_high": high,
            "verdict": verdict(claim.test, m.better, low, high, margin, len(diffs))}


def evaluate(cfg: Config, runs: Runs) -> pd.DataFrame:
    """Every claim x GAN x measure, in the order of CLAIMS."""
    table = measure_table(cfg, runs)
    rows = [compare(cfg, table, claim, gan, measure, runs.metrics)
            for claim in CLAIMS for gan in gans_of(cfg, claim) for measure in claim.measures]
    rows = reference_rows(cfg, runs) + rows
    result = pd.DataFrame(rows).reindex(columns=COLUMNS)
    # FID against KID: a KID row that points another way than its FID twin is a claim that depends on
    # the metric (or on FID's sample-size bias); said on the row and in claims.md. Empty (NA) where
    # either has no difference.
    result["fid_kid_agree"] = fid_kid_agreement(result)
    return result


def fid_kid_agreement(result: pd.DataFrame) -> list:
    """claims.csv's fid_kid_agree: per row, whether a KID row points the way its FID twin does."""
    twin = fid_twins(result)
    return [(stance(twin[r.Index]) == stance(r)) if r.Index in twin and None not in (stance(twin[r.Index]), stance(r))
            else pd.NA for r in result.itertuples()]


def fid_twins(result: pd.DataFrame) -> dict:
    """KID row's index -> its FID twin's row (same claim and GAN, the FID measure of KID_OF)."""
    fid_rows = {(r.claim, r.gan, KID_OF[r.measure]): r for r in result.itertuples()
                if r.measure in KID_OF and r.claim != REFERENCE}
    return {r.Index: fid_rows[(r.claim, r.gan, r.measure)] for r in result.itertuples()
            if (r.claim, r.gan, r.measure) in fid_rows}


def has_interval(r) -> bool:
    return pd.notna(r.ci_low)


def stance(r) -> str | None:
    """Where a claims row points: its verdict when it has an interval; with one seed (a difference and
    no interval) the verdict its difference alone would get, as an interval of zero width, so that a
    FID and a KID difference on opposite sides of a margin are not counted as agreeing. None without
    a difference."""
    if not r.n_seeds or pd.isna(r.difference):
        return None
    if has_interval(r):
        return r.verdict
    return verdict(r.test, r.better, r.difference, r.difference, r.margin if pd.notna(r.margin) else None, r.n_seeds)


def point_words(r) -> str:
    """'difference 0.180 passes (margin 0.537)': a row's difference alone against its test."""
    passes = {SUPPORTED: "passes", CONTRADICTED: "fails"}.get(stance(r), "is on the line")
    margin = f" (margin {number(r.margin, decimals(r))})" if pd.notna(r.margin) else " (against 0)"
    return f"difference {number(r.difference, decimals(r))} {passes}{margin}"


def disagreements(cfg: Config, result: pd.DataFrame) -> list[str]:
    """One line per claim, GAN and KID measure that points another way than its FID twin: in
    verdict where both have an interval, else in where their differences alone fall."""
    twin, words = fid_twins(result), measures_for(cfg)
    lines = []
    for r in result.itertuples():
        if pd.isna(r.fid_kid_agree) or r.fid_kid_agree:
            continue
        f = twin[r.Index]
        if has_interval(r) and has_interval(f):
            lines.append(f"- {r.claim} {r.title}, {r.gan.upper()}: {words[r.measure].label} **{r.verdict}**, "
                         f"FID twin **{f.verdict}**")
        else:
            lines.append(f"- {r.claim} {r.title}, {r.gan.upper()} (one seed, no interval): "
                         f"{words[f.measure].label} {point_words(f)}, {words[r.measure].label} {point_words(r)}")
    return lines


def agreement_sentence(result: pd.DataFrame, disagree: list[str]) -> str:
    """claims.md's sentence on FID against KID, true to its table: agreement in verdict is claimed
    only where both have an interval; where none has (one seed), only that the differences alone
    point the same way."""
    twin = fid_twins(result)
    compared = [(result.loc[i], f) for i, f in twin.items() if pd.notna(result.loc[i, "fid_kid_agree"])]
    if not compared:
        return "No claim has both a FID and a KID difference to set side by side."
    if disagree:
        return "They point different ways on:"
    with_interval = sum(has_interval(k) and has_interval(f) for k, f in compared)
    if with_interval == len(compared):
        return "They agree in verdict on every claim tested here."
    alone = ("their differences alone point the same way (both pass the claim's test, or both fail it, "
             "margin included)")
    if with_interval == 0:
        return ("No verdict has an interval (one seed), so whether FID and KID agree cannot be tested; on every "
                f"claim tested here {alone}.")
    return f"They agree in verdict where both have an interval; where they have none, {alone}."


# --------------------------------------------------------------------------------------------------
# published numbers beside ours

REFERENCE = "R"  # the claim id of claims.csv's rows that compare with analysis.references
FINAL_MEASURES = {  # claims.csv's measure of a reference row -> its words
    "final_eval_fid": Measure("FID, final evaluation", "FID", "lower",
                   "FID of metrics.final_samples images generated after training (run.json's final) against "
                   "metrics.final_real_images real images drawn at random, or when that is null the reference "
                   "statistics of every epoch."),
    "final_eval_kid": Measure("KID, final evaluation", "KID", "lower",
                   "KID of the same generated images against the real features kept for KID."),
}
WITHIN, OUTSIDE = "within the seed interval", "outside the seed interval"
REAL_COUNT = {"fid": "reference_images", "kid": "kid_real_samples"}  # run.json's final: the real images behind each


def final_evaluation(cfg: Config, run: str) -> dict | None:
    """run.json's "final" of a finished run (None: not finished, or no final evaluation)."""
    path = cfg.run_dir(run) / "run.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("final")


def reference_rows(cfg: Config, runs: Runs) -> list[dict]:
    """One claims row per published number (analysis.references): our final evaluation's mean over
    seeds and its t-interval across seeds against the published value; `within the seed interval`
    when the interval holds it. mean_versus is the published value, difference ours − published."""
    out = []
    for ref in cfg.analysis.references:
        measure = f"final_eval_{ref.measure}"
        m = FINAL_MEASURES[measure]
        published = f"published {ref.value:g}" + (f" ± {ref.std:g}" if ref.std is not None else "")
        row = {"claim": REFERENCE, "title": "published baseline", "gan": ref.gan,
               "measure": measure, "unit": m.unit, "better": m.better,
               "setting": label(ref.gan, ref.variant), "versus": published, "test": "within",
               "mean_versus": ref.value, "n_seeds": 0, "seeds": "", "notes": ref.source}
        trained = ref.gan in cfg.run.gans and ref.variant in cfg.run.variants
        finals = {s: final_evaluation(cfg, run_id(ref.gan, ref.variant, s)) for s in cfg.run.seeds} if trained else {}
        row.update(provenance(runs.metrics[runs.metrics.run.isin({run_id(ref.gan, ref.variant, s)
                                                                   for s in cfg.run.seeds})]))
        done = {s: f for s, f in finals.items() if f is not None}
        if done:  # the counts behind our number: the final evaluation's, not every epoch's
            for column, key in (("fid_samples", "fid_samples"), ("reference_images", REAL_COUNT[ref.measure])):
                row[column] = ", ".join(sorted({str(f[key]) for f in done.values() if f.get(key) not in (None, "")}))
        if not trained:
            row["verdict"] = NOT_TRAINED
        elif not done:
            row["verdict"] = ("no data: no finished run has a final evaluation" if cfg.metrics.final_samples
                              else "no final evaluation: set metrics.final_samples")
        else:
            values = np.array([f[ref.measure] for f in done.values()], dtype=float)
            row.update(mean_setting=values.mean(), difference=values.mean() - ref.value, n_seeds=len(values),
                       seeds=" ".join(map(str, done)))
            if len(values) == 1:
                row["verdict"] = ONE_SEED
            else:
                low, high = t_interval(values - ref.value, cfg.analysis.confidence)
                row.update(ci_low=low, ci_high=high, verdict=WITHIN if low <= 0 <= high else OUTSIDE)
        missing = [run_id(ref.gan, ref.variant, s) for s, f in finals.items() if f is None]
        if missing and trained:
            row["notes"] += "; no final evaluation yet: " + ", ".join(missing)
        out.append(row)
    return out


def reference_section(cfg: Config, result: pd.DataFrame) -> list[str]:
    """claims.md's first table: each published number beside ours, or nothing without references."""
    refs = result[result.claim == REFERENCE]
    if refs.empty:
        return []
    conf = percent(cfg.analysis.confidence)
    real = (f"{cfg.metrics.final_real_images:,} real images drawn at random (seed {cfg.metrics.final_real_seed})"
            if cfg.metrics.final_real_images else "the reference statistics of every epoch")
    lines = ["## Our baseline against published numbers", "",
             f"Read this first: the octave verdicts below stand on a baseline that reproduces. Ours: the mean over "
             f"seeds of the final evaluation ({cfg.metrics.final_samples or 'no'} generated images, the FID against "
             f"{real}, run.json's \"final\") with the {conf} t-interval of the mean across seeds; the verdict says "
             "whether the published value lies within it. FID's bias depends on both image counts: a comparison "
             "holds at equal counts.", "",
             "| GAN | measure | published | ours (mean) | ours − published [" + conf + " CI] | n | verdict | "
             "images, generated / real | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r, ref in zip(refs.itertuples(), cfg.analysis.references):  # reference_rows keeps their order
        lines.append("| " + " | ".join([
            r.setting, FINAL_MEASURES[r.measure].label, r.versus.removeprefix("published "),
            number(r.mean_setting, decimals(r)), interval_text(r), str(r.n_seeds), f"**{r.verdict}**",
            f"published {counts(ref.generated, ref.real)}; ours {counts(r.fid_samples, r.reference_images)}",
            r.notes]) + " |")
    return lines + [""]


def counts(generated, real) -> str:
    """"50,000 / 50,000": numbers of images (or comma-joined lists of them); "?" where unknown."""
    def one(v) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or str(v) in ("", "nan"):
            return "?"
        return ", ".join(f"{int(float(x)):,}" for x in str(v).split(","))
    return f"{one(generated)} / {one(real)}"


# --------------------------------------------------------------------------------------------------
# claims over runs pooled from several labs: ocbench/pool.py collects the runs, groups each row's seeds
# by lab and computes the pooled numbers; these give it each row's values per seed and judge a row again


def seed_values(cfg: Config, runs: Runs, result: pd.DataFrame) -> list[dict[int, tuple[float, float]]]:
    """Per row of `evaluate`'s result, {seed: (setting's value, versus's value)} over the seeds the row
    rests on (its `seeds`); on a row of a published number (claim R), (our final evaluation's, the
    published value)."""
    table = measure_table(cfg, runs).set_index(["gan", "variant", "seed"])
    claims, references = {c.id: c for c in CLAIMS}, iter(cfg.analysis.references)  # R rows: in their order
    out = []
    for r in result.itertuples():
        seeds = [int(s) for s in str(r.seeds).split()] if r.n_seeds else []
        if r.claim == REFERENCE:
            ref = next(references)
            out.append({s: (float(final_evaluation(cfg, run_id(ref.gan, ref.variant, s))[ref.measure]), ref.value)
                        for s in seeds})
        else:
            c = claims[r.claim]
            out.append({s: (float(table.loc[(r.gan, c.setting, s), r.measure]),
                            float(table.loc[(r.gan, c.versus, s), r.measure])) for s in seeds})
    return out


def rejudge(result: pd.DataFrame, numbers: dict) -> pd.DataFrame:
    """`result` with the rows in `numbers` (row index -> (mean_setting, mean_versus, difference, ci_low,
    ci_high)) judged again on those: their margin (from the new mean_versus), verdict, and FID against
    KID."""
    result = result.copy()
    for i, (mean_setting, mean_versus, difference, low, high) in numbers.items():
        r = result.loc[i]
        if r.claim == REFERENCE:
            margin, judged = math.nan, WITHIN if low <= 0 <= high else OUTSIDE
        else:
            margin = r.margin_rel * abs(mean_versus) if pd.notna(r.margin_rel) else None
            judged = verdict(r.test, r.better, low, high, margin, int(r.n_seeds))
        result.loc[i, ["mean_setting", "mean_versus", "difference", "ci_low", "ci_high", "margin", "verdict"]] = [
            mean_setting, mean_versus, difference, low, high, margin, judged]
    result["fid_kid_agree"] = fid_kid_agreement(result)
    return result


# --------------------------------------------------------------------------------------------------
# claims.md


def significant(v, digits: int = 3) -> str:
    """`v` with about `digits` significant digits ("" for a missing or infinite value)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits - 2, 1)}f}" if abs(v) < 1000 else f"{v:.0f}"


def significant_decimals(v: float, digits: int = 3) -> int:
    """Decimals that show `digits` significant digits of v (0 for v = 0)."""
    return max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else 0


def decimals(r) -> int:
    """One number of decimals for a row's means, difference, interval and margin, so that the
    difference reads as the difference of the means shown (to the last digit's rounding): three
    significant digits of the difference, at least three of the smaller mean, and at most two
    decimals more than that mean needs (a difference far below it shows as 0)."""
    means = [abs(v) for v in (r.mean_setting, r.mean_versus) if pd.notna(v) and np.isfinite(v) and v]
    of_means = significant_decimals(min(means)) if means else 0
    diff = r.difference if pd.notna(r.difference) and np.isfinite(r.difference) else 0.0
    return min(max(significant_decimals(diff), of_means), of_means + 2) if means else significant_decimals(diff)


def number(v, places: int) -> str:
    if v is None or pd.isna(v) or not np.isfinite(v):
        return ""
    return f"{v:.{places}f}"


def percent(x: float) -> str:
    """0.95 -> '95%', 0.975 -> '97.5%' (a confidence level or a test's size in the prose)."""
    return f"{100 * x:g}%"


def interval_text(r) -> str:
    if r.n_seeds == 0:
        return ""
    places = decimals(r)
    d = number(r.difference, places)
    return f"{d} [{number(r.ci_low, places)}, {number(r.ci_high, places)}]" if pd.notna(r.ci_low) else d


def variant_name(variant: str) -> str:
    return "the baseline" if variant == "baseline" else variant.upper()


def markdown(cfg: Config, runs: Runs, result: pd.DataFrame) -> str:
    """claims.md: the smoke label when there is one, which weights and sample counts made the numbers,
    our baseline against published ones (`reference_section`), the table of every tested claim,
    what was not tested and why, FID against KID, the runs left out, then each claim's test and each
    measure in words."""
    seeds = ", ".join(map(str, cfg.run.seeds))
    words, conf = measures_for(cfg), cfg.analysis.confidence
    head = ["claim", "GAN", "measure", "setting", "versus", "mean setting", "mean versus",
            f"difference [{percent(conf)} CI]", "margin", "n", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    claims_rows = result[result.claim != REFERENCE]
    tested = claims_rows[claims_rows.verdict != NOT_TRAINED]
    for r in tested.itertuples():
        places = decimals(r)  # one per row: the difference reads as the difference of the means shown
        lines.append("| " + " | ".join([
            f"{r.claim} {r.title}", r.gan.upper(), words[r.measure].label, r.setting, r.versus,
            number(r.mean_setting, places), number(r.mean_versus, places), interval_text(r),
            number(r.margin, places), str(r.n_seeds), f"**{r.verdict}**",
        ]) + " |")
    untested = claims_rows[claims_rows.verdict == NOT_TRAINED]
    not_trained = sorted(set(f"{r.claim} ({r.gan.upper()})" for r in untested.itertuples()),
                         key=lambda s: (s.split()[0], s))
    notes = list(dict.fromkeys(f"- {r.claim} {r.gan.upper()}: {r.notes}" for r in tested.itertuples() if r.notes))
    claims = []
    for c in CLAIMS:
        test = TESTS[c.test].format(versus=variant_name(c.versus), margin=margin_of(cfg, c) or 0)
        claims.append(f"- **{c.id} {c.title}** ({c.where}): “{c.words}”. Tested: {variant_name(c.setting)} "
                      f"{test}; on {', '.join(words[m].label for m in c.measures)}; "
                      f"for {', '.join(g.upper() for g in gans_of(cfg, c))}."
                      + (f" Reading: {c.reading}" if c.reading else ""))
    measures = [f"- {m.label} ({m.better} is better): {m.how}" for m in words.values()]
    sections = [
        f"# The paper's claims: {cfg.name}", "",
        *smoke_paragraph(cfg, runs.metrics),
        weights_header(runs), "",
        provenance_line(runs), "",
        *reference_section(cfg, result),
        f"{len(runs.runs)} configured runs, seeds {seeds}, {cfg.train.epochs} epochs each. For each claim, "
        "GAN and measure: the means of the two settings over the seeds where both runs finished, and their "
        f"difference (setting − versus, in the measure's units) paired by seed with a {percent(conf)} "
        "t-interval of the mean difference across seeds (scipy.stats.t, n − 1 degrees of freedom). Margins "
        "are absolute, in the measure's units, from the fraction of the versus setting's mean the claim states. With one "
        "seed there is a difference but no interval; with few seeds, intervals are wide and a claim may "
        f"stay not resolved. The same {percent(conf)} interval decides the `similar` test too (stricter than "
        f"the usual two one-sided tests at {percent(1 - conf)}, which use a {percent(2 * conf - 1)} interval).", "",
        *lines, "",
    ]
    if cfg.train.epochs != 50:
        sections += [f"Runs here have {cfg.train.epochs} epochs, not the paper's 50: \"epoch 20\" in the measures is "
                  f"epoch {collapse_epoch(cfg.train.epochs)} (the same fraction of training).", ""]
    if not_trained:
        sections += [f"Not tested, because config '{cfg.name}' does not train the settings they compare: "
                  f"{', '.join(not_trained)}.", ""]
    disagree = disagreements(cfg, result)
    sections += ["## FID and KID", "",
              "Each claim judged on FID is judged on KID too (same test, same margin as a fraction of the "
              "compared setting's mean). KID is unbiased by the sample count, FID is not: a verdict that "
              "holds on one and not the other depends on the metric or on the number of samples. "
              + agreement_sentence(result, disagree), "", *disagree, ""]
    if notes:
        sections += ["## Runs left out or qualified", "", *notes, ""]
    sections += ["## The claims and their tests", "", *claims, "", "## Measures", "", *measures, ""]
    return "\n".join(sections)


# --------------------------------------------------------------------------------------------------
# the forest plot


# The verdict beside each row of the forest plot; a row of one seed has none (a note says why, once).
SHORT = {SUPPORTED: "supported", CONTRADICTED: "contradicted", ONE_SEED: ""}
VERDICT_COLORS = {SUPPORTED: "tab:green", CONTRADICTED: "tab:red"}
REL_LIMIT = 100.0  # % : the axis stops here; a difference beyond it is drawn at the edge with its value


def relative(r) -> tuple[float, float, float]:
    """(difference, ci_low, ci_high) of a claims row in % of the compared setting's mean, turned so that
    positive means the claim's setting is better: FIDs, KIDs, recall and images/s on one axis."""
    sign = -1.0 if MEASURES[r.measure].better == "lower" else 1.0
    scale = 100.0 * sign / abs(r.mean_versus) if r.mean_versus else math.nan
    lo, hi = sorted((r.ci_low * scale, r.ci_high * scale)) if pd.notna(r.ci_low) else (math.nan, math.nan)
    return r.difference * scale, lo, hi


def relative_axis(ax) -> None:
    """A forest plot's x axis: the difference in % of the compared mean, 0 marked, ±REL_LIMIT."""
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(-REL_LIMIT * 1.05, REL_LIMIT * 1.05)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:+.0f}%" if v else "0")
    ax.set_xlabel("difference to the compared setting, % of its mean   (← claim's setting worse | better →)",
                  fontsize=8)
    ax.tick_params(axis="x", labelsize=7.5)
    ax.grid(True, axis="x", alpha=0.3)


def forest_plot(cfg: Config, runs: Runs, result: pd.DataFrame):
    """One forest plot of every claim: a row per claim, GAN and measure, grouped by claim, the paired
    difference and its t-interval (analysis.confidence) in % of the compared setting's mean (right:
    the claim's setting better), each claim's margin as a shaded band, the verdict beside the row.
    Fits one page."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from ocbench.plots import Notes, notes_below, weights_notes

    notes = Notes()
    words = measures_for(cfg)
    references, result = result[result.claim == REFERENCE], result[result.claim != REFERENCE]
    shown = result[result.n_seeds > 0]
    claims = {c.id: c for c in CLAIMS}
    groups = [(cid, shown[shown.claim == cid]) for cid in dict.fromkeys(shown.claim)]
    n_rows = len(shown) + len(groups)  # a heading line per claim
    fig, ax = plt.subplots(figsize=(8.0, min(9.0, 0.8 + 0.19 * n_rows)))  # A4 with the notes below
    if not groups:
        ax.axis("off")
        ax.text(0.5, 0.5, "No claim can be tested yet: no pair of finished runs.", ha="center", va="center")
    else:
        right = blended_transform_factory(ax.transAxes, ax.transData)
        y, ticks, labels, clipped = n_rows - 1, [], [], False
        for cid, rows in groups:
            claim = claims[cid]
            ax.text(-0.01, y, f"{claim.id} {claim.title}: {claim.setting.upper()} vs {variant_name(claim.versus)}",
                    transform=right, ha="right", va="center", fontsize=7.5, fontweight="bold")
            top, y = y - 0.5, y - 1
            for r in rows.itertuples():
                diff, lo, hi = relative(r)
                c = VERDICT_COLORS.get(r.verdict, "0.25")
                if np.isfinite(lo):
                    ax.plot(np.clip([lo, hi], -REL_LIMIT, REL_LIMIT), [y, y], color=c, lw=1.8)
                x = float(np.clip(diff, -REL_LIMIT, REL_LIMIT))
                out = abs(diff) > REL_LIMIT
                clipped |= out
                ax.plot([x], [y], (">" if diff > 0 else "<") if out else "o", color=c, ms=4.5)
                if out:  # the value on the row itself, inside the axis
                    ax.annotate(f"{diff:+.0f}%", (x, y), xytext=(-6 if diff > 0 else 6, 0), textcoords="offset points",
                                ha="right" if diff > 0 else "left", va="center", fontsize=6.5, color=c)
                if not np.isfinite(diff):
                    ax.text(0, y, "  compared mean is 0: no relative difference", va="center", fontsize=6.5, color="0.4")
                ticks.append(y)
                labels.append(f"{r.gan.upper()} {words[r.measure].label}")
                ax.text(1.01, y, SHORT.get(r.verdict, r.verdict), transform=right, ha="left", va="center",
                        fontsize=7, color=c)
                y -= 1
            if claim.margin is not None:  # the claim's margin: how much worse (or different) still passes
                m = 100 * margin_of(cfg, claim)
                x0, x1 = (-m, m) if claim.test == "similar" else (-m, 0)
                ax.fill_betweenx([y + 0.5, top], x0, x1, color="tab:blue", alpha=0.12, lw=0)
            ax.axhline(y + 0.5, color="0.85", lw=0.6)
        ax.set_yticks(ticks, labels, fontsize=7)
        ax.set_ylim(y + 0.5, n_rows - 0.5)
        relative_axis(ax)
        if clipped:
            notes.add(f"Triangles: a difference beyond ±{REL_LIMIT:.0f}% of the compared mean, its value beside it; "
                      "intervals reaching beyond end at the edge.")
    ax.set_title("The paper's claims: difference to the compared setting, by claim", fontsize=10, loc="left")
    if len(cfg.run.seeds) > 1:
        notes.add(f"Dots: mean difference over seeds, paired by seed; bars: its {percent(cfg.analysis.confidence)} "
                  "t-interval across seeds. "
                  "Shaded: the claim's margin (how much worse, or for 'similar' how different, still passes).")
    else:
        notes.add("One seed: each dot is the single run's difference; no interval, and so no verdict, is possible. "
                  "Shaded: the claim's margin.")
    if len(cfg.run.seeds) > 1 and (result.verdict == ONE_SEED).any():
        notes.add("A row without a verdict beside it: only one seed has both runs finished, so it has no interval.")
    untested = result[result.verdict == NOT_TRAINED]
    if len(untested):
        notes.add(f"Not trained by config '{cfg.name}', so not tested: claims "
                  + ", ".join(dict.fromkeys(f"{r.claim} {r.gan.upper()}" for r in untested.itertuples())) + ".")
    if cfg.train.epochs != 50:
        notes.add(f"\"Epoch 20\" (of the paper's 50) is epoch {collapse_epoch(cfg.train.epochs)} of "
                  f"{cfg.train.epochs} here.")
    disagree = result[result.fid_kid_agree.map(lambda v: pd.notna(v) and not v)]
    if len(disagree):
        # in verdict, or (one seed, no interval) in where their differences alone fall: claims.md says which
        notes.add("FID and KID point different ways (claims.md says how) on: "
                  + ", ".join(dict.fromkeys(f"{r.claim} {r.gan.upper()} {words[r.measure].label}"
                                            for r in disagree.itertuples())) + ".", warn=True)
    p = provenance(runs.metrics)
    if any(p.values()):
        notes.add(f"Scored on {p['fid_samples'] or '?'} generated samples per epoch against {p['reference_images'] or '?'} "
                  f"real images (split {p['reference_split'] or '?'}).")
    left = [r.notes for r in result.itertuples() if r.notes and r.verdict != NOT_TRAINED]
    for text in dict.fromkeys("; ".join(left).split("; ")) if left else []:
        notes.add(text + ".")
    for r in references.itertuples():  # the baseline against its published number, in words
        ours = f"{significant(r.mean_setting, 4)} over {r.n_seeds} seed(s)" if r.n_seeds else "none yet"
        notes.add(f"{r.setting} {FINAL_MEASURES[r.measure].label}: {r.versus}, ours "
                  f"{ours}: {r.verdict} ({r.notes.split(';')[0]}).", warn=r.verdict == OUTSIDE)
    weights_notes(notes, runs.metrics)
    notes.first(smoke_settings(cfg, runs.metrics))
    return notes_below(fig, notes, tight=True)


# --------------------------------------------------------------------------------------------------


def output_paths(cfg: Config) -> list[Path]:
    """What `write` produces (and the workflow declares)."""
    return [cfg.results_dir / "claims.md", cfg.results_dir / "claims.csv",
            *(cfg.figures_dir / f"claims.{fmt}" for fmt in cfg.figures.formats)]


def write(cfg: Config, allow_partial: bool = False, config_args: str = "") -> list[Path]:
    """claims.csv, claims.md and the forest plot; returns the files written."""
    from ocbench.plots import save_all

    runs = collect(cfg)
    require_finished(runs, allow_partial, config_args)
    result = evaluate(cfg, runs)
    md, csv, *figures = output_paths(cfg)
    md.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(csv, result.to_csv(index=False))
    atomic_write(md, markdown(cfg, runs, result))
    save_all(forest_plot(cfg, runs, result), figures)
    return [md, csv, *figures]
