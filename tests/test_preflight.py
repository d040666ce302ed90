"""`ocbench preflight` on the CPU: the reduced run a CPU preset gets, the stop of a config that did
not ask for the CPU on a machine without a GPU, a GPU job whose CUDA cannot start, and a data check
that fails when what it checks is broken. The training checks under a GPU's last-bit noise, and
with defects planted in them: tests/test_preflight_noise.py."""

import json
import re

import numpy as np
import pytest
import yaml

from ocbench import config as config_mod
from ocbench import preflight


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
    """`make reproduce` on a CPU, before any download: auto finds no GPU; preflight fails on the
    projected time (days on a slow CPU), names `make mini` and `make smoke`, and `train.device=cpu`
    as the way to insist. No Inception weights yet: Inception is timed with placeholder weights, so
    the projection still shows (it did not, and the weeks-on-a-CPU guard never showed)."""
    root, config = setup
    proc = cli("preflight", "--config", config, "--set", "train.device=auto", "--set", "train.epochs=50",
               "--set", f"metrics.weights_dir={root / 'not-downloaded'}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "✘ data        inception" in proc.stdout
    line = next(li for li in proc.stdout.splitlines() if li.lstrip()[2:].startswith("projection"))
    assert line.lstrip().startswith("✘") and "CPU-hours" in line and "no GPU was found" in line
    # The unit follows the CPU's speed (days here, 40.4 hours on CI's machine): read the number in
    # any unit, and check it is the total's share of one run.
    total = re.search(r"(\d+) runs x .*: about ([\d.]+) CPU-hours", line)
    units = {"s": 1 / 3600, "min": 1 / 60, "hours": 1, "days": 24}  # preflight.duration's
    a_run = re.search(r"\(([\d.]+) (s|min|hours|days) a run, of which evaluation [\d.]+ (s|min|hours|days)\)", line)
    assert total and a_run, line
    unit = units[a_run[2]]
    rounding = 0.05 if a_run[2] == "hours" else unit / 2  # hours print to a tenth, the rest whole
    assert total[1] == "4" and abs(float(a_run[1]) * unit - float(total[2]) / 4) <= rounding + 0.05, line
    assert "make mini" in proc.stdout and "train.device=cpu" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("ocbench: error: preflight: 2 check(s) failed")


def test_a_gpu_job_whose_cuda_cannot_start_fails_at_once(setup, cli):
    root, config = setup
    proc = cli("preflight", "--config", config, "--set", "train.device=auto", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert proc.returncode == 1
    assert "✘ environment device" in proc.stdout and "CUDA cannot start" in proc.stdout
    assert "training" not in proc.stdout  # nothing ran on the CPU instead


def test_a_prepared_array_of_the_wrong_shape_fails_the_data_check(setup):
    root, config = setup
    cfg = config_mod.load([config], [f"data.prepared={root / 'small.npy'}"])
    np.save(root / "small.npy", np.zeros((5, 64, 64, 3), np.uint8))
    report = preflight.Report("tiny")
    preflight.check_data(cfg, report)
    check = next(c for c in report.checks if c.name == "prepared")
    assert check.status == "✘" and "(64, 64, 3)" in check.detail and "ocbench data prepare" in check.fix


def test_durations_read_in_the_unit_a_reader_takes_in():
    """The projection's per-run and evaluation times: seconds below 90 s (not "0 min"), then minutes,
    hours to a tenth below two days, then days."""
    assert [preflight.duration(s) for s in (40, 89, 90, 5399, 5400, 40.4 * 3600, 2 * 86400, 4.4 * 86400)] == \
        ["40 s", "89 s", "2 min", "90 min", "1.5 hours", "40.4 hours", "2 days", "4 days"]
