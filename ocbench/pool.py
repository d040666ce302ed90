"""One verdict from several labs: `ocbench claims --pool A B ...` judges the paper's claims on the runs of
several bundles (ocbench/bundle.py) and results folders, mixed, every lab's seeds as replicates.

Sources and labs. Each source is one lab, named by the --lab its bundle was made with (bundles made
with the same --lab NAME are one lab), else by the file or folder as given. A results folder is
described on the spot as `ocbench bundle` would describe it, from its config.yaml (the merged config
Snakemake writes there), its data and statistics where that config says (relative to the current
folder, as every ocbench command reads them).

Comparability. The first source sets the pool: its merged config, with the command's --config and
--set merged over it and the command's paths, is the config the claims are judged under. Every other
source must agree with the first on every key of bundle.COMPARABILITY (the Inception weights, the
prepared array, the reference statistics' real images and split, the sample counts, Inception's
precision), and every setting a source trained must have the pool's protocol (what a run records,
less its run id). A source that differs is refused in one line naming the key and both values; with
--allow-partial it is left out (only a setting's runs, when only that setting's protocol differs) and
named in claims.md. A key a source does not record agrees with nothing.

Shared run ids. A run id (`{gan}_{variant}_s{seed}`) in two sources is one run seen twice when their
metrics.csv agree on every column but the timing ones (formats.TIMING_COLUMNS) over the epochs both
hold (one bundle given twice, a partial bundle and the finished one, a bit-exact rerun): it is counted
once, the copy with more epochs kept, and claims.md says so. Otherwise it is refused: two runs of one
seed start from the same weights, see the data in the same order and draw the same latents, so they
are not independent replicates, and counting both would claim more evidence than there is. For the
same reason every run of one GAN at one seed comes from one lab (claims pair settings by seed, and a
pair across labs would mix two labs in one difference). The fix is seeds of its own for each lab
(--set run.seeds=[3,4,5]); with --allow-partial the later source's runs are left out and named.

The pooled interval. A row's paired difference d (setting − versus at one seed) is modelled in two
levels, d = μ + u_lab + e_seed, with u ~ N(0, τ²) what a lab adds (its GPU's arithmetic, its library
versions) and e ~ N(0, σ²) what a seed does; the verdict is about μ, what a new lab would see on
average. A lab's mean difference m_l = μ + u_l + ē_l has variance τ² + σ²/n_l, so where a row rests
on more than one lab its interval is the t-interval of the labs' means (L − 1 degrees of freedom,
claims.t_interval on them), centred on their mean, and its means are the labs' means' means. This is
exact when the labs have as many seeds each, and it needs no estimate of τ² or of each lab's
variance, which a few labs of a few seeds cannot give (a DerSimonian-Laird τ² from three labs is
mostly noise, and its interval is known to be too narrow; a lab of one seed has no variance). Labs
count equally, so a lab of many seeds cannot outvote the others on a difference of its own. With one
lab a row keeps the seeds' t-interval of `ocbench claims`; with one seed per lab the two intervals
are the same numbers. The price: two labs give one degree of freedom (t = 12.7 at 95%), so between-lab
spread shows as width until a third lab joins. Each row also carries every lab's own mean difference
and seed count (by_lab, the markers of the figure) and, where some lab has two seeds or more, a one-way
ANOVA of the differences by lab (labs_p, scipy.stats.f_oneway): whether labs differ by more than
their seeds do; below 1 − analysis.confidence claims.md says they do.

Outputs: paths.results/<config>/pooled/claims.csv and claims.md (the claims as `ocbench claims` writes
them, judged as above, with n_labs, labs, by_lab and labs_p per row, and every source with its
provenance), and paths.figures/<config>/pooled/claims.<format>: each row's pooled interval with each
lab's mean difference beside it.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ocbench import claims
from ocbench.aggregate import Runs, collect, provenance_line, smoke_settings
from ocbench.bundle import COMPARABILITY, CONFIG, describe, setting_protocols, unpack
from ocbench.config import (
    BASE_CONFIG,
    Config,
    PathsConfig,
    apply_set,
    as_yaml,
    deep_merge,
    from_dict,
    read_yaml,
)
from ocbench.errors import OcbenchError, UsageError
from ocbench.formats import TIMING_COLUMNS, atomic_write

POOLED = "pooled"  # the folder under results/<config>/ and figures/<config>/ the pooled claims go to
EXTRA_COLUMNS = ["n_labs", "labs", "by_lab", "labs_p"]


@dataclass
class Source:
    given: str  # as on the command line
    kind: str  # "bundle" or "results folder"
    root: Path  # holds config.yaml and runs/
    info: dict  # bundle.json's contents (a results folder's: described now)
    lab: str

    def config(self) -> dict:
        return read_yaml(self.root / CONFIG)

    def run_dirs(self) -> list[Path]:
        runs = self.root / "runs"
        return sorted(p for p in runs.iterdir() if (p / "metrics.csv").is_file()) if runs.is_dir() else []


def open_source(given: str, scratch: Path) -> Source:
    """A bundle (unpacked and checked into `scratch`) or a results folder (read where it is)."""
    path = Path(given)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise UsageError(f"{path} has no {CONFIG} (the merged config Snakemake writes to results/<config>/); "
                             "pass a results folder of the workflow, or a bundle of it "
                             "(`ocbench bundle --config ...`)")
        raw = read_yaml(path / CONFIG)
        # the folder as given, wherever it lies now and whatever it is called
        cfg = from_dict({**raw, "name": path.name, "paths": {**raw.get("paths", {}), "results": str(path.parent)}})
        info = describe(cfg, collect(cfg))
        info["config"] = raw.get("name", path.name)
        return Source(given, "results folder", path, info, given)
    root, info = unpack(path, scratch)
    return Source(given, "bundle", root, info, info.get("lab") or path.name)


# --------------------------------------------------------------------------------------------------
# comparability


def shown(value) -> str:
    """A key's value for a one-line message: sha256s cut to 16 digits, "not recorded" for None."""
    if value is None:
        return "not recorded"
    return " ".join(f"{v[:16]}…" if len(v) == 64 else v for v in str(value).split())


def first_difference(ours: dict, theirs: dict) -> tuple[str, str, str] | None:
    """(the key's words, their value, ours) for the first key of COMPARABILITY on which two bundles'
    keys differ (None: they agree on all)."""
    for key, words in COMPARABILITY.items():
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or str(a) != str(b):
            return words, shown(b), shown(a)
    return None


def protocol_difference(ours: dict, theirs: dict) -> str:
    """'train.epochs 3 vs 2' (theirs vs ours, and how many more keys differ) between two protocols."""
    missing = object()
    keys = [k for k in {**ours, **theirs} if ours.get(k, missing) != theirs.get(k, missing)]
    said = [f"{k} {as_yaml(theirs.get(k, 'absent'))} vs {as_yaml(ours.get(k, 'absent'))}" for k in keys[:2]]
    return ", ".join(said) + (f" and {len(keys) - 2} more" if len(keys) > 2 else "")


# --------------------------------------------------------------------------------------------------
# the pool


@dataclass
class Pool:
    cfg: Config  # judged under; paths: where the pooled claims go
    tree: Config  # the same, its results folder the scratch tree that holds the pooled runs
    sources: list[Source]
    origin: dict = field(default_factory=dict)  # run id -> the Source it is taken from
    lab_of: dict = field(default_factory=dict)  # (gan, seed) -> lab
    left_out: list[str] = field(default_factory=list)  # what --allow-partial left out, one line each
    once: list[str] = field(default_factory=list)  # runs given twice, counted once

    def labs(self) -> list[str]:
        return list(dict.fromkeys(self.lab_of[(gan, seed)] for gan, seed in self.lab_of))


def refuse_or_leave(message: str, allow_partial: bool, left_out: list[str]) -> None:
    if not allow_partial:
        raise OcbenchError(message + "; pass --allow-partial to pool what agrees and leave this out")
    left_out.append(message)


def rows_of(path: Path) -> list[dict]:
    """A metrics.csv as training wrote it, without the timing columns (the only ones two runs of the
    same computation may differ in)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def pool_config(first: Source, sources: list[Source], config_files: list, overrides: list) -> Config:
    """The first source's merged config with every source's GANs, variants and seeds, the command's
    paths (paper.yaml's, or its --config/--set), and its --config files and --set overrides over it."""
    raw = first.config()
    raw["paths"] = dict(read_yaml(BASE_CONFIG)["paths"])
    run = {key: list(dict.fromkeys(v for s in sources for v in s.config()["run"][key]))
           for key in ("gans", "variants", "seeds")}
    raw["run"] = {**run, "seeds": sorted(run["seeds"])}
    for path in config_files:
        raw = deep_merge(raw, read_yaml(path))
    for assignment in overrides:
        raw = apply_set(raw, assignment)
    return from_dict(raw)


def build(sources: list[Source], config_files: list, overrides: list, allow_partial: bool, scratch: Path) -> Pool:
    """Check the sources against the first, take their runs (each once) into a results tree under
    `scratch`, and return the pool."""
    first, left_out = sources[0], []
    agreeing = [first]
    for src in sources[1:]:
        differs = first_difference(first.info["comparability"], src.info["comparability"])
        if differs is None:
            agreeing.append(src)
        else:
            words, theirs, ours = differs
            refuse_or_leave(f"{src.given} cannot be pooled with {first.given}: {words} {theirs} ({src.given}) vs "
                            f"{ours} ({first.given})", allow_partial, left_out)
    cfg = pool_config(first, agreeing, config_files, overrides)
    ours = setting_protocols(cfg)
    tree = replace(cfg, paths=PathsConfig(results=str(scratch / "pool"), figures=cfg.paths.figures))
    pool = Pool(cfg, tree, agreeing, left_out=left_out)
    rows = {}  # run id -> its rows (for shared run ids)
    for src in agreeing:
        for run_dir in src.run_dirs():
            run = run_dir.name
            if run not in cfg.run_ids():  # a run its config no longer lists: ignored, as by every command
                continue
            gan, variant, seed = cfg.parse_run(run)
            theirs = src.info["protocols"].get(f"{gan}_{variant}")
            if theirs is None or theirs["fingerprint"] != ours[f"{gan}_{variant}"]["fingerprint"]:
                said = protocol_difference(ours[f"{gan}_{variant}"]["protocol"], theirs["protocol"]) if theirs \
                    else "it records no protocol for them"
                refuse_or_leave(f"{src.given}: its {gan}_{variant} runs were trained with other settings than the "
                                f"pool's ({first.given}'s config): {said}", allow_partial, left_out)
                continue
            mine = rows_of(run_dir / "metrics.csv")
            if run in rows:
                taken, n = rows[run], min(len(rows[run]), len(mine))
                if taken[:n] == mine[:n]:
                    pool.once.append(f"{run} is in {pool.origin[run].given} and in {src.given} with the same "
                                     "numbers: counted once")
                    if len(mine) > len(taken):
                        rows[run], pool.origin[run] = mine, src
                    continue
                refuse_or_leave(f"{run} is in {pool.origin[run].given} and in {src.given} with other numbers: two runs "
                                "of one seed share their initial weights, data order and latents, so they are not "
                                f"independent replicates; give each lab seeds of its own (--set run.seeds=[...])",
                                allow_partial, left_out)
                continue
            owner = pool.lab_of.get((gan, seed))
            if owner is not None and owner != src.lab:
                refuse_or_leave(f"{run} of {src.given} would be paired by seed with {gan} runs of seed {seed} from "
                                f"lab {owner}: one GAN's runs of one seed must come from one lab; give each lab "
                                "seeds of its own (--set run.seeds=[...])", allow_partial, left_out)
                continue
            rows[run], pool.origin[run], pool.lab_of[(gan, seed)] = mine, src, src.lab
    for run, src in pool.origin.items():  # the runs taken, into the tree `collect` reads
        dest = tree.run_dir(run)
        dest.mkdir(parents=True)
        for name in ("metrics.csv", "run.json"):
            if (src.root / "runs" / run / name).is_file():
                shutil.copyfile(src.root / "runs" / run / name, dest / name)
    return pool


# --------------------------------------------------------------------------------------------------
# judging: the claims with lab as a stratum


def labs_p(groups: dict[str, list[float]]) -> float:
    """One-way ANOVA of the differences by lab: the p-value of "the labs' means are equal" (NaN where
    it cannot be computed: one lab, or no lab with two seeds)."""
    from scipy import stats

    values = list(groups.values())
    if len(values) < 2 or sum(map(len, values)) <= len(values):
        return math.nan
    with warnings.catch_warnings():  # constant groups: an F of inf or nan, said as such
        warnings.simplefilter("ignore")
        return float(stats.f_oneway(*values).pvalue)


def judge(pool: Pool, runs: Runs) -> pd.DataFrame:
    """`ocbench claims`' rows over the pooled runs, each row with more than one lab judged on the labs'
    means (module docstring), and every row's labs."""
    cfg = pool.tree
    result = claims.evaluate(cfg, runs)
    numbers, extra = {}, []
    for r, values in zip(result.itertuples(), claims.seed_values(cfg, runs, result)):
        groups: dict[str, list] = {}
        for seed, pair in values.items():
            groups.setdefault(pool.lab_of[(r.gan, seed)], []).append(pair)
        means = {lab: np.mean(np.array(pairs), axis=0) for lab, pairs in groups.items()}  # (setting, versus)
        diffs = {lab: float(np.mean([a - b for a, b in pairs])) for lab, pairs in groups.items()}
        if len(groups) > 1:
            low, high = claims.t_interval(np.array(list(diffs.values())), cfg.analysis.confidence)
            setting, versus = np.mean(list(means.values()), axis=0)
            numbers[r.Index] = (float(setting), float(versus), float(np.mean(list(diffs.values()))), low, high)
        extra.append({"n_labs": len(groups), "labs": "; ".join(groups),
                      "by_lab": json.dumps({lab: {"difference": diffs[lab], "seeds": len(groups[lab])}
                                            for lab in groups}) if groups else "",
                      "labs_p": labs_p({lab: [a - b for a, b in pairs] for lab, pairs in groups.items()})})
    result = claims.rejudge(result, numbers)
    return pd.concat([result, pd.DataFrame(extra, index=result.index)], axis=1)


# --------------------------------------------------------------------------------------------------
# claims.md's pooled part


def machine_words(m: dict) -> str:
    commit = m.get("git_commit", "unknown")
    dirty = " with uncommitted changes" if m.get("git_dirty") is True else ""
    device = (f"{m['gpu_count']}× {', '.join(dict.fromkeys(m['gpus']))}, CUDA {m.get('cuda')}, "
              f"cuDNN {m.get('cudnn')}, driver {m.get('driver')}") if m.get("gpus") else f"CPU {m.get('cpu')}"
    return (f"ocbench {m.get('ocbench')} at {commit[:12]}{dirty}, Python {m.get('python')}, torch {m.get('torch')}, "
            f"{device}")


def source_lines(pool: Pool, runs: Runs) -> list[str]:
    """One item per contributing source: its lab, runs and seeds, machine, data and provenance."""
    lines = []
    for src in pool.sources:
        taken = sorted(run for run, s in pool.origin.items() if s is src)
        seeds = sorted({pool.cfg.parse_run(run)[2] for run in taken})
        info, p = src.info, src.info["provenance"]
        data, ref = p["data"], p["reference_statistics"]
        mine = Runs(metrics=runs.metrics[runs.metrics.run.isin(taken)], runs=runs.runs[runs.runs.run.isin(taken)])
        said = (f"prepared array sha256 {shown(data.get('sha256'))} ({data.get('count')} images, "
                f"crop {data.get('crop')}, {data.get('resize')}), source md5 {shown(data.get('source_md5'))}, "
                "partition md5 "
                f"{shown(data.get('partition_md5'))}; reference statistics sha256 {shown(ref.get('sha256'))} "
                f"({ref.get('images')} images, split {ref.get('split')}); Inception weights sha256 "
                f"{shown(p['inception_weights']['sha256'])}"
                + (" (official)" if p["inception_weights"]["official"] else " (not official)"))
        unfinished = f"; unfinished when bundled: {', '.join(info['unfinished'])}" if info.get("unfinished") else ""
        lines.append(f"- **{src.lab}** ({src.kind} `{src.given}`, config '{info['config']}'): {len(taken)} run(s), "
                     f"seeds {', '.join(map(str, seeds)) or 'none'}{unfinished}. "
                     f"Machine: {machine_words(info['machine'])}. "
                     f"Data: {said}. {provenance_line(mine)}")
    return lines


def by_lab_table(cfg: Config, result: pd.DataFrame, labs: list[str]) -> list[str]:
    words = {**claims.measures_for(cfg), **claims.FINAL_MEASURES}
    conf = claims.percent(cfg.analysis.confidence)
    head = ["claim", "GAN", "measure", f"pooled difference [{conf} CI]", "labs", "seeds", "verdict", *labs,
            "labs differ (p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    alpha = 1 - cfg.analysis.confidence
    for r in result[(result.n_seeds > 0)].itertuples():
        places = claims.decimals(r)
        per = json.loads(r.by_lab) if r.by_lab else {}
        cells = [f"{claims.number(per[lab]['difference'], places)} ({per[lab]['seeds']})" if lab in per else ""
                 for lab in labs]
        differ = "" if pd.isna(r.labs_p) else f"{'**yes**' if r.labs_p < alpha else 'no'} (p = {r.labs_p:.2g})"
        lines.append("| " + " | ".join([f"{r.claim} {r.title}", r.gan.upper(), words[r.measure].label,
                                         claims.interval_text(r), str(r.n_labs), str(r.n_seeds), f"**{r.verdict}**",
                                         *cells, differ]) + " |")
    return lines


def markdown(pool: Pool, runs: Runs, result: pd.DataFrame) -> str:
    """`ocbench claims`' claims.md of the pooled runs, then where they come from and how labs count."""
    cfg, labs = pool.cfg, pool.labs()
    conf = claims.percent(cfg.analysis.confidence)
    title, _, body = claims.markdown(pool.tree, runs, result).partition("\n")
    seeds = int(runs.runs.seed.nunique())
    parts = [f"{title}, pooled from {len(labs)} lab(s)", "",
             (f"Pooled from {len(labs)} lab(s) and {seeds} seed(s) (\"Pooled from several labs\", at the end, says "
              "from where). A row whose seeds come from more than one lab has the labs' means, difference and "
              "interval, not the seeds' that the paragraph before the table describes; its lab count is in the last "
              "table."), body,
             "## Pooled from several labs", "", "### Where the runs come from", "", *source_lines(pool, runs), ""]
    if pool.once:
        parts += ["Given twice, counted once:", "", *(f"- {line}" for line in pool.once), ""]
    if pool.left_out:
        parts += ["Left out (--allow-partial):", "", *(f"- {line}" for line in pool.left_out), ""]
    parts += ["### How the labs are pooled", "",
              ("Every lab's seeds are replicates, and lab is a stratum. A row whose seeds all come from one lab is "
              "judged as `ocbench claims` judges it. A row resting on more than one lab is judged on the labs' mean "
              "differences: its means are the means of the labs' means, and its interval the "
              f"{conf} t-interval of the labs' mean differences (L − 1 degrees of freedom, L the number of labs), "
              "which holds the spread between labs as well as between seeds (a two-level model: difference = μ + "
              "lab + seed, labs counting equally; docs/labs.md says why). With one seed per lab these are the seeds' "
              "own numbers; with two labs the interval has one degree of freedom and is wide. Each lab's column: its "
              "mean difference (its seeds). `labs differ`: a one-way ANOVA of the differences by lab, where some lab "
              f"has two seeds or more; **yes** below p = {1 - cfg.analysis.confidence:.2g}."), "",
              *by_lab_table(cfg, result, labs), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# the figure: pooled intervals with each lab's mean


MARKERS = "sD^vP*Xph"


def forest_by_lab(pool: Pool, runs: Runs, result: pd.DataFrame):
    """A row per claim, GAN and measure with a difference: the pooled difference and interval in % of
    the compared setting's mean (right: the claim's setting better), coloured by verdict, and each
    lab's own mean difference as a marker of its own."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from ocbench.plots import Notes, notes_below, weights_notes

    cfg, labs, notes = pool.cfg, pool.labs(), Notes()
    words = claims.measures_for(cfg)
    rows = result[(result.claim != claims.REFERENCE) & (result.n_seeds > 0)]
    fig, ax = plt.subplots(figsize=(8.0, min(10.0, 1.2 + 0.2 * len(rows))))
    limit = claims.REL_LIMIT
    if rows.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "No claim can be tested yet: no pair of finished runs.", ha="center", va="center")
    else:
        right = blended_transform_factory(ax.transAxes, ax.transData)
        colors = plt.get_cmap("tab10")
        ticks, labels = [], []
        for y, r in zip(range(len(rows) - 1, -1, -1), rows.itertuples()):
            diff, lo, hi = claims.relative(r)
            c = claims.VERDICT_COLORS.get(r.verdict, "0.25")
            if np.isfinite(lo):
                ax.plot(np.clip([lo, hi], -limit, limit), [y, y], color=c, lw=1.8, zorder=2)
            ax.plot([np.clip(diff, -limit, limit)], [y], "o", color=c, ms=4.5, zorder=3)
            if not np.isfinite(diff):
                ax.text(0, y, "  compared mean is 0: no relative difference", va="center", fontsize=6.5, color="0.4")
            per = json.loads(r.by_lab) if r.by_lab else {}
            for k, lab in enumerate(labs):
                if lab in per and len(per) > 1:
                    x = claims.relative(r._replace(difference=per[lab]["difference"], ci_low=math.nan))[0]
                    ax.plot([np.clip(x, -limit, limit)], [y + 0.22], MARKERS[k % len(MARKERS)], color=colors(k % 10),
                            ms=3.5, mfc="none", zorder=4)
            ticks.append(y)
            labels.append(f"{r.claim} {r.gan.upper()} {words[r.measure].label}")
            short = claims.SHORT.get(r.verdict, r.verdict.split(" at ")[0])  # "not resolved at 4 seeds": said beside
            counts = f"({r.n_labs} lab{'s' * (r.n_labs != 1)}, {r.n_seeds} seed{'s' * (r.n_seeds != 1)})"
            ax.text(1.01, y, f"{short} {counts}".lstrip(), transform=right, ha="left", va="center", fontsize=6.5,
                    color=c)
        for k, lab in enumerate(labs):
            ax.plot([], [], MARKERS[k % len(MARKERS)], color=colors(k % 10), mfc="none", label=lab)
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=min(3, len(labs)), fontsize=6.5, frameon=False,
                  title="each lab's mean difference", title_fontsize=6.5, alignment="left")
        ax.set_yticks(ticks, labels, fontsize=6.5)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        claims.relative_axis(ax)
    ax.set_title(f"The paper's claims pooled from {len(labs)} lab(s), with each lab's mean", fontsize=10, loc="left",
                 pad=8 + 11 * (1 + math.ceil(len(labs) / 3)))  # above the legend of the labs
    notes.add(f"Dots and bars: the pooled difference and its {claims.percent(cfg.analysis.confidence)} interval: the "
              "t-interval of the labs' mean differences where a row rests on more than one lab, else of its seeds' "
              "(claims.md says how). Open markers: each lab's own mean difference. Differences beyond "
              f"±{limit:.0f}% are drawn at the edge.")
    weights_notes(notes, runs.metrics)
    notes.first(smoke_settings(pool.tree, runs.metrics))
    return notes_below(fig, notes, tight=True)


# --------------------------------------------------------------------------------------------------


def output_paths(cfg: Config) -> list[Path]:
    return [cfg.results_dir / POOLED / "claims.md", cfg.results_dir / POOLED / "claims.csv",
            *(cfg.figures_dir / POOLED / f"claims.{ext}" for ext in cfg.figures.formats)]


def require_finished(pool: Pool, runs: Runs, allow_partial: bool) -> None:
    if allow_partial or runs.unfinished().empty:
        return
    names = [f"{line} in {pool.origin[line.split()[0]].given}" if line.split()[0] in pool.origin else line
             for line in runs.describe_unfinished()]
    raise OcbenchError(f"{len(names)} run(s) of the pool not finished: {', '.join(names)}; pass --allow-partial to "
                       "judge the claims on the runs that finished (claims.md names the others)")


def write(sources: list[str], config_files: list | None = None, overrides: list | None = None,
          allow_partial: bool = False) -> list[Path]:
    """`ocbench claims --pool SOURCE ...`: the pooled claims.csv, claims.md and figure; returns the files."""
    from ocbench.plots import save_all

    if not sources:
        raise UsageError("--pool needs at least one bundle or results folder")
    with tempfile.TemporaryDirectory(prefix="ocbench-pool-") as scratch:
        opened = [open_source(given, Path(scratch) / f"source{i}") for i, given in enumerate(sources)]
        pool = build(opened, config_files or [], overrides or [], allow_partial, Path(scratch))
        runs = collect(pool.tree)
        require_finished(pool, runs, allow_partial)
        result = judge(pool, runs)
        md, csv_path, *figures = output_paths(pool.cfg)
        md.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(csv_path, result.reindex(columns=claims.COLUMNS + EXTRA_COLUMNS).to_csv(index=False))
        atomic_write(md, markdown(pool, runs, result))
        if figures:
            save_all(forest_by_lab(pool, runs, result), figures)
    return [md, csv_path, *figures]
