"""Results from several labs: `ocbench bundle` and `ocbench claims --pool` (ocbench/bundle.py, pool.py).

Two "labs" train DCGAN's baseline and OCT for real, in this process, at tiny size on one synthetic
CelebA: lab A seed 0, lab B seed 1, each in a results folder of its own; a third lab (W) trains seed 2
of the baseline with other placeholder Inception weights (their seed changed, so another sha256). The
folder of both seeds together is what one lab training both would have (the same runs: a seed's run
does not depend on which other seeds a config lists).
"""

import csv
import getpass
import gzip
import io
import json
import os
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ocbench import bundle as bundle_mod
from ocbench import claims as claims_mod
from ocbench import config as config_mod
from ocbench import pool as pool_mod
from ocbench.errors import OcbenchError

RUNS = {"A": [0], "B": [1]}


def lab_config(root: Path, name: str, seeds: list[int], variants=("baseline", "oct"), weights="w", stats="stats.npz"):
    """A lab's config file: its own results folder, the shared synthetic data."""
    data = root / "data"
    overlay = {
        "name": "labs",
        "paths": {"results": str(root / name), "figures": str(root / "figures" / name)},
        "run": {"gans": ["dcgan"], "variants": list(variants), "seeds": seeds},
        "data": {"images": str(data / "img_align_celeba.zip"), "partition": str(data / "list_eval_partition.txt"),
                 "prepared": str(data / "celeba128.npy"), "subset": True, "synthetic": {"n": 16, "seed": 0}},
        "train": {"epochs": 2, "batch_size": 4, "width": 4, "snapshot_epochs": [1], "device": "cpu",
                  "grid_size": 4},
        "metrics": {"stats": str(data / stats), "fid_samples": 8, "dims": 64, "batch_size": 8, "pr_real_samples": 8,
                    "weights_dir": str(root / weights), "placeholder_weights": True},
        "log": {"tensorboard": False},
        "figures": {"formats": ["png"]},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([path])
    return cfg


def train_lab(cfg, evaluator) -> None:
    """Every run of the lab's config, and its config.yaml as the workflow writes it."""
    from ocbench.train import train

    for run in cfg.run_ids():
        assert train(cfg, run, evaluator=evaluator, log=lambda *_: None)["status"] == "ok"
    (cfg.results_dir / "config.yaml").write_text(cfg.dump())


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    from ocbench import fid
    from ocbench.data import prepare
    from ocbench.metrics import Evaluator, make_reference
    from ocbench.synth import write_synthetic

    root = tmp_path_factory.mktemp("labs")
    cfgs = {lab: lab_config(root, f"lab{lab}", seeds) for lab, seeds in RUNS.items()}
    cfg = cfgs["A"]
    write_synthetic(cfg.data.images, cfg.data.partition, 16, 0)
    prepare(cfg, workers=1, progress=False)
    fid.ensure_weights(cfg.metrics.weights_dir, True)
    make_reference(cfg, "cpu", progress=False)
    evaluator = Evaluator.from_config(cfg, "cpu")  # the same weights and statistics for both labs
    for c in cfgs.values():
        train_lab(c, evaluator)

    # Lab W: other Inception weights (placeholder seed 1), its own statistics, seed 2 of the baseline.
    w = lab_config(root, "labW", [2], variants=("baseline",), weights="w1", stats="stats_w1.npz")
    fid.write_placeholder_weights(fid.weights_path(w.metrics.weights_dir), seed=1)
    make_reference(w, "cpu", progress=False)
    train_lab(w, Evaluator.from_config(w, "cpu"))

    # One folder over both seeds: the two labs' runs side by side.
    both = lab_config(root, "both", [0, 1])
    for c in cfgs.values():
        shutil.copytree(c.results_dir / "runs", both.results_dir / "runs", dirs_exist_ok=True)
    bundles = {"A": bundle_mod.write_bundle(cfgs["A"], root / "bundles"),
               "B": bundle_mod.write_bundle(cfgs["B"], root / "bundles", fmt="zip"),
               "W": bundle_mod.write_bundle(w, root / "bundles")}
    return {"root": root, "cfgs": cfgs, "both": both, "bundles": bundles, "W": w}


def pooled(labs, *sources, allow_partial=False, out="pooled-results") -> pd.DataFrame:
    """`ocbench claims --pool SOURCES` (in this process), its outputs under the lab root; claims.csv."""
    root = labs["root"]
    sets = [f"paths.results={root / out}", f"paths.figures={root / out / 'figures'}"]
    paths = pool_mod.write([str(s) for s in sources], [], sets, allow_partial)
    return pd.read_csv(paths[1]), paths


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------------------------------
# pooling


def test_two_labs_pooled_give_the_claims_of_one_folder_over_both_seeds(labs):
    both = labs["both"]
    runs = claims_mod.collect(both)
    expected = pd.read_csv(io.StringIO(claims_mod.evaluate(both, runs).to_csv(index=False)))
    for sources in ([labs["bundles"]["A"], labs["bundles"]["B"]],  # a .tar.gz and a .zip
                    [labs["cfgs"]["A"].results_dir, labs["bundles"]["B"]]):  # a results folder and a bundle
        table, (md, *_, figure) = pooled(labs, *sources)
        assert len(table) == len(expected)
        pd.testing.assert_frame_equal(table[claims_mod.COLUMNS], expected[claims_mod.COLUMNS])
        two = table[table.n_seeds == 2]
        assert len(two) and (two.n_labs == 2).all()
        lab_names = [Path(sources[0]).name if str(sources[0]).endswith("gz") else str(sources[0]),
                     labs["bundles"]["B"].name]
        by_lab = json.loads(two.by_lab.iloc[0])
        assert list(by_lab) == lab_names and [v["seeds"] for v in by_lab.values()] == [1, 1]
        text = md.read_text()
        for name in lab_names:  # each source, with its provenance line
            line = next(line for line in text.splitlines() if line.startswith(f"- **{name}**"))
            assert "Machine: ocbench" in line and "Every epoch scored 8 generated samples" in line, line
        assert figure.stat().st_size > 0
    # Claims with an interval came out of this pool (the comparison above is not of empty rows).
    assert table.ci_low.notna().sum() > 5


def test_the_lab_stratum_interval_is_the_t_interval_of_the_labs_means(tmp_path):
    """Hand-made runs of known FIDs (test_claims'): seeds 0 and 1 from lab X, seed 2 from lab Y."""
    from test_claims import FINAL, write_run

    published = 95.0  # and DCGAN's final evaluation (its final FID here) against a published number
    overlay = {"name": "strata", "paths": {"results": str(tmp_path)},
               "run": {"gans": ["dcgan"], "variants": ["baseline", "oct"], "seeds": [0, 1, 2]},
               "train": {"epochs": 6}, "metrics": {"final_samples": 16},
               "analysis": {"references": [{"gan": "dcgan", "variant": "baseline", "measure": "fid",
                                            "value": published, "source": "a test"}]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(overlay))
    cfg = config_mod.load([tmp_path / "c.yaml"])
    for run in cfg.run_ids():
        gan, variant, seed = cfg.parse_run(run)
        write_run(cfg.run_dir(run), gan, variant, seed)
        final = {"fid": FINAL[gan, variant][seed], "kid": FINAL[gan, variant][seed] / 1000}
        (cfg.run_dir(run) / "run.json").write_text(json.dumps({"status": "ok", "final": final}))
    lab_of = {("dcgan", 0): "X", ("dcgan", 1): "X", ("dcgan", 2): "Y"}
    pool = pool_mod.Pool(cfg, cfg, [], lab_of=lab_of)
    table = pool_mod.judge(pool, claims_mod.collect(cfg))
    r = table[(table.claim == "1") & (table.measure == "final_fid")].iloc[0]
    oct_, base = np.array(FINAL["dcgan", "oct"]), np.array(FINAL["dcgan", "baseline"])
    d = oct_ - base
    lab_means = [d[:2].mean(), d[2]]
    ci = stats.t.interval(0.95, 1, loc=np.mean(lab_means), scale=stats.sem(lab_means))
    assert (r.n_labs, r.n_seeds) == (2, 3)
    assert r.difference == pytest.approx(np.mean(lab_means)) and (r.ci_low, r.ci_high) == pytest.approx(ci)
    assert r.mean_setting == pytest.approx(np.mean([oct_[:2].mean(), oct_[2]]))
    assert r.margin == pytest.approx(0.10 * np.mean([base[:2].mean(), base[2]]))
    assert json.loads(r.by_lab) == {"X": {"difference": pytest.approx(d[:2].mean()), "seeds": 2},
                                    "Y": {"difference": pytest.approx(d[2]), "seeds": 1}}
    assert r.labs_p == pytest.approx(stats.f_oneway(d[:2], d[2:]).pvalue)
    # Judged on that interval; wider than the seeds' of one lab (the spread between labs counts).
    assert r.verdict == claims_mod.verdict("not_worse", "lower", *ci, r.margin, 3)
    single = claims_mod.evaluate(cfg, claims_mod.collect(cfg))
    s = single[(single.claim == "1") & (single.measure == "final_fid")].iloc[0]
    assert s.ci_high - s.ci_low < r.ci_high - r.ci_low
    # The published number against the labs' mean final evaluations, the same way.
    r = table[table.claim == claims_mod.REFERENCE].iloc[0]
    labs_final = [base[:2].mean() - published, base[2] - published]
    ci = stats.t.interval(0.95, 1, loc=np.mean(labs_final), scale=stats.sem(labs_final))
    assert (r.n_labs, r.mean_versus) == (2, published) and (r.ci_low, r.ci_high) == pytest.approx(ci)
    assert r.mean_setting == pytest.approx(np.mean([base[:2].mean(), base[2]]))
    assert r.verdict == ("within the seed interval" if ci[0] <= 0 <= ci[1] else "outside the seed interval")


def test_other_inception_weights_are_refused_by_name(labs):
    a, w = labs["bundles"]["A"], labs["bundles"]["W"]
    info = {k: json.loads(zipless_read(b, "bundle.json")) for k, b in (("A", a), ("W", w))}
    ours, theirs = (info[k]["comparability"]["inception_weights_sha256"] for k in ("A", "W"))
    assert ours != theirs
    with pytest.raises(OcbenchError) as excinfo:
        pooled(labs, a, w)
    text = one_line(excinfo)
    assert "Inception weights sha256" in text and "--allow-partial" in text
    assert f"{theirs[:16]}… ({w})" in text and f"{ours[:16]}… ({a})" in text
    table, (md, *_) = pooled(labs, a, labs["bundles"]["B"], w, allow_partial=True)
    assert table.n_labs.max() == 2 and "Left out (--allow-partial)" in md.read_text()
    assert w.name in md.read_text().split("Left out (--allow-partial)")[1]


def zipless_read(bundle: Path, name: str) -> bytes:
    """A member of a .tar.gz bundle."""
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/" + name))
        return tar.extractfile(member).read()


def test_a_partial_bundle_pools_with_allow_partial_and_names_what_is_missing(labs):
    """Lab B's folder as a kill after epoch 1 of dcgan_oct_s1 leaves it: one row, no run.json."""
    root, b = labs["root"], labs["cfgs"]["B"]
    partial = lab_config(root, "labB-partial", [1])
    shutil.copytree(b.results_dir, partial.results_dir)
    run = partial.run_dir("dcgan_oct_s1")
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:2]))
    for name in ("run.json", "samples/epoch_002.png", "generator_epoch_002.pt"):
        (run / name).unlink()
    made = bundle_mod.write_bundle(partial, root / "bundles")
    assert json.loads(zipless_read(made, "bundle.json"))["unfinished"] == ["dcgan_oct_s1 (incomplete: 1 of 2 epochs)"]
    with pytest.raises(OcbenchError) as excinfo:
        pooled(labs, labs["bundles"]["A"], made)
    text = one_line(excinfo)
    assert "dcgan_oct_s1 (incomplete: 1 of 2 epochs)" in text and made.name in text and "--allow-partial" in text
    table, (md, *_) = pooled(labs, labs["bundles"]["A"], made, allow_partial=True)
    r = table[(table.claim == "1") & (table.measure == "final_fid")].iloc[0]
    assert r.n_seeds == 1 and "dcgan_oct_s1 unfinished (1 of 2 epochs), left out" in r.notes
    assert "unfinished when bundled: dcgan_oct_s1 (incomplete: 1 of 2 epochs)" in md.read_text()


def test_a_run_given_twice_counts_once_and_another_run_of_one_seed_is_refused(labs):
    a_dir = labs["cfgs"]["A"].results_dir
    table, (md, *_) = pooled(labs, labs["bundles"]["A"], a_dir)  # the same runs, bundled and not
    assert set(table.n_seeds) <= {0, 1} and set(table.n_labs) == {0, 1}
    assert "dcgan_oct_s0 is in" in md.read_text() and "counted once" in md.read_text()

    # Another lab's dcgan_oct_s0 with other numbers: not an independent replicate of lab A's.
    other = labs["root"] / "labA2" / "labs"
    shutil.copytree(a_dir, other)
    metrics = other / "runs" / "dcgan_oct_s0" / "metrics.csv"
    rows = list(csv.DictReader(metrics.open()))
    rows[-1]["fid"] = str(float(rows[-1]["fid"]) + 1.0)
    with metrics.open("w", newline="") as f:
        writer = csv.DictWriter(f, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(OcbenchError) as excinfo:
        pooled(labs, labs["bundles"]["A"], other)
    text = one_line(excinfo)
    assert "dcgan_oct_s0 is in" in text and "not independent replicates" in text and "run.seeds" in text


# --------------------------------------------------------------------------------------------------
# the bundle


def test_a_bundle_holds_each_runs_files_and_nothing_personal(labs):
    root, a = labs["root"], labs["bundles"]["A"]
    assert a.name.startswith("labs-") and a.name.endswith(".tar.gz")
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    top = a.name.removesuffix(".tar.gz")
    names = sorted(m.name.removeprefix(top + "/") for m in members)
    per_run = ["metrics.csv", "run.json", "samples/epoch_001.png", "samples/epoch_002.png"]
    assert names == sorted(["MANIFEST.sha256", "bundle.json", "config.yaml",
                            *(f"runs/dcgan_{v}_s0/{f}" for v in ("baseline", "oct") for f in per_run)])
    # Nothing of who made it or where: no owner, time 0; no path of this machine, user or host name.
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert bundle_mod.write_bundle(labs["cfgs"]["A"], root / "again").read_bytes() == a.read_bytes()  # nor when
    raw = gzip.decompress(a.read_bytes())
    personal = [str(root), str(Path.home()), str(Path.cwd()), os.environ.get("USER", ""), getpass.getuser(),
                socket.gethostname()]
    for word in (w for w in personal if len(w) >= 4):
        assert word.encode() not in raw, word
    config = yaml.safe_load(zipless_read(a, "config.yaml"))
    assert config["data"]["prepared"] == "<withheld>/celeba128.npy"
    info = json.loads(zipless_read(a, "bundle.json"))
    assert info["lab"] is None and info["format"] == bundle_mod.FORMAT
    assert set(info["comparability"]) == set(bundle_mod.COMPARABILITY) and None not in info["comparability"].values()
    assert {"git_commit", "torch", "cuda", "cudnn", "driver", "gpus", "cpu", "precision"} <= set(info["machine"])
    assert info["runs"]["dcgan_oct_s0"]["fingerprint"] == json.loads(
        (labs["cfgs"]["A"].run_dir("dcgan_oct_s0") / "run.json").read_text())["fingerprint"]

    # --with-snapshots adds the generator snapshots, --lab the lab's name; still no checkpoint.
    named = bundle_mod.write_bundle(labs["cfgs"]["A"], root / "named", with_snapshots=True, lab="Lab Q")
    with tarfile.open(named) as tar:
        extra = sorted(m.name.split("/", 1)[1] for m in tar.getmembers())
    assert [n for n in extra if n.endswith(".pt")] == [
        f"runs/dcgan_{v}_s0/generator_epoch_00{e}.pt" for v in ("baseline", "oct") for e in (1, 2)]
    assert json.loads(zipless_read(named, "bundle.json"))["lab"] == "Lab Q"


def repack(bundle: Path, out: Path, edit) -> Path:
    """`bundle` unpacked, `edit(folder)` applied, packed again as .tar.gz under `out` (same name)."""
    work = out.parent / (out.name + ".work")
    with tarfile.open(bundle) as tar:
        tar.extractall(work, filter="data")
    top = next(work.iterdir())
    edit(top)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return out


def test_a_changed_cut_or_newer_bundle_is_refused_in_one_line(labs, tmp_path):
    a = labs["bundles"]["A"]

    def edit_metrics(top):
        path = top / "runs" / "dcgan_oct_s0" / "metrics.csv"
        path.write_text(path.read_text().replace(",ok,", ",ok ,", 1))

    def edit_and_remanifest(top):
        edit_metrics(top)
        contents = {p.relative_to(top).as_posix(): p for p in top.rglob("*")
                    if p.is_file() and p.name != "MANIFEST.sha256"}
        (top / "MANIFEST.sha256").write_text(bundle_mod.manifest(contents))

    def newer(top):
        info = json.loads((top / "bundle.json").read_text())
        (top / "bundle.json").write_text(json.dumps({**info, "format": bundle_mod.FORMAT + 1}))

    cut = tmp_path / a.name
    cut.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
    cases = {
        "edited": (repack(a, tmp_path / "edited" / a.name, edit_metrics), "does not match its manifest"),
        "re-manifested": (repack(a, tmp_path / "remanifest" / a.name, edit_and_remanifest), "re-packed after bundling"),
        "newer": (repack(a, tmp_path / "newer" / a.name, newer), f"format {bundle_mod.FORMAT + 1}, made by a newer"),
        "cut": (cut, "cannot be read as a bundle"),
    }
    for what, (path, said) in cases.items():
        with pytest.raises(OcbenchError) as excinfo:
            bundle_mod.unpack(path, tmp_path / "out" / what)
        assert said in one_line(excinfo) and str(path) in one_line(excinfo), what
    # The command says it in one line, exit 1.
    from ocbench.cli import main

    assert main(["claims", "--pool", str(cases["edited"][0])]) == 1


def tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("labs-000000000000/bundle.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def member(name: str, kind=tarfile.REGTYPE, target="") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("attack, said", [
    (member("labs-000000000000/../../evil"), "'labs-000000000000/../../evil', which would be written outside"),
    (member("/tmp/evil"), "'/tmp/evil', which would be written outside"),
    (member("labs-000000000000/evil", tarfile.SYMTYPE, "/etc/passwd"), "holds a symbolic link"),
    (member("labs-000000000000/evil", tarfile.LNKTYPE, "labs-000000000000/bundle.json"), "holds a hard link"),
    (member("labs-000000000000/evil", tarfile.CHRTYPE), "holds a device or pipe"),
    (member("labs-000000000000/evil", tarfile.FIFOTYPE), "holds a device or pipe"),
])
def test_unpacking_a_tar_refuses_members_that_reach_outside_its_folder(tmp_path, attack, said):
    bundle = tar_with(tmp_path / "attack.tar.gz", attack, b"evil")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(OcbenchError) as excinfo:
        bundle_mod.unpack(bundle, dest)
    assert said in one_line(excinfo)
    assert not list(tmp_path.rglob("evil")) and not list(dest.rglob("*"))  # nothing written anywhere


@pytest.mark.parametrize("name, mode, said", [
    ("labs-000000000000/../../evil", 0o100644, "which would be written outside"),
    ("/evil", 0o100644, "which would be written outside"),
    ("labs-000000000000/evil", 0o120777, "holds a symbolic link"),
])
def test_unpacking_a_zip_refuses_members_that_reach_outside_its_folder(tmp_path, name, mode, said):
    bundle = tmp_path / "attack.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("labs-000000000000/bundle.json", "{}")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, "/etc/passwd")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(OcbenchError) as excinfo:
        bundle_mod.unpack(bundle, dest)
    assert said in one_line(excinfo)
    assert not list(tmp_path.rglob("evil")) and not list(dest.rglob("*"))
