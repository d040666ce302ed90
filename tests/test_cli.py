"""The CLI where a newcomer falls: a second trainer of a running run, a closed pipe, `status` without
--config, a file that is not a generator. In this process where the behaviour is the same; a
subprocess only where the process itself is the point (what it imported, how it ends)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import checkout_env
from ocbench import config
from ocbench.cli import main
from ocbench.lock import current_holder, run_lock, try_lock

RUN = "dcgan_oct_s0"


def test_a_second_trainer_is_refused_before_torch_is_imported(tmp_path):
    """The run's lock comes before the imports that take seconds (torch, pytorch-fid)."""
    results = tmp_path / "results"
    state = results / "paper" / "state" / RUN
    state.mkdir(parents=True)
    fd = try_lock(state / "train.lock")  # a trainer of the run, alive: this process
    try:
        code = ("import sys; from ocbench.cli import main; rc = main(sys.argv[1:]); "
                "print(rc, *[m for m in ('torch', 'pytorch_fid') if m in sys.modules])")
        proc = subprocess.run([sys.executable, "-c", code, "train", "--set", f"paths.results={results}", "--run", RUN],
                              env=checkout_env(), capture_output=True, text=True, timeout=120)
    finally:
        os.close(fd)
    assert proc.stdout.split() == ["1"], proc.stdout + proc.stderr  # refused, and nothing heavy imported
    assert proc.stderr.splitlines() == [
        f"ocbench: error: run {RUN} of config paper is being trained by process {os.getpid()}, which holds "
        f"{state / 'train.lock'}; wait for it to end (or stop it), then rerun to resume"]


def test_the_run_lock_is_held_through_nested_blocks_and_released_on_an_error(tmp_path):
    """`ocbench train` holds the lock and train() takes it again inside: one lock, held to the end."""
    lock = tmp_path / "state" / "train.lock"
    with pytest.raises(RuntimeError):
        with run_lock(lock.parent, RUN, "c"):
            with run_lock(lock.parent, RUN, "c"):
                assert current_holder(lock) == str(os.getpid())
            assert current_holder(lock) == str(os.getpid())  # the inner block's end left it held
            raise RuntimeError("training failed")
    assert current_holder(lock) is None


def test_status_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    """`ocbench status | head`: the reader may go before ocbench writes; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "ocbench", "status"], cwd=tmp_path, env=checkout_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the child has imported anything
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 1


def test_status_without_config_names_every_results_folder_and_its_config(tmp_path, monkeypatch, capsys):
    """Right after `make smoke`, `ocbench status` (the paper's config) names the smoke results and the
    --config that shows them, instead of "paper: 15 not started" alone."""
    monkeypatch.chdir(tmp_path)
    smoke = config.load([config.WORKFLOW_DIR / "config" / "smoke.yaml"])
    (tmp_path / "results" / "smoke" / "runs" / RUN).mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "config.yaml").write_text(smoke.dump())  # as the workflow writes it
    (tmp_path / "results" / "smoke" / "runs" / RUN / "run.json").write_text(json.dumps({"status": "ok"}))
    (tmp_path / "results" / "mini" / "runs" / "dcgan_baseline_s0").mkdir(parents=True)  # `ocbench train` by hand

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "No results of config paper (the default without --config) in results/; found:" in out
    assert "  smoke: 14 not started, 1 finished  (ocbench status --config results/smoke/config.yaml)" in out
    assert "  mini: 1 run folder(s), no merged config.yaml  (ocbench status --config workflow/config/mini.yaml)" in out

    (tmp_path / "results" / "paper" / "state").mkdir(parents=True)  # the paper's own results come first
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.index("paper: 15 not started") < out.index("Other results in results/") < out.index("  smoke: ")

    assert main(["status", "--config", "results/smoke/config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "smoke: 14 not started, 1 finished" in out and "mini" not in out and "paper" not in out


def test_a_generator_file_holding_a_bare_tensor_is_one_line(tmp_path, capsys):
    import torch

    path = tmp_path / "weights.pt"
    torch.save(torch.zeros(3), path)
    assert main(["sample", "--generator", str(path), "--out", str(tmp_path / "png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ocbench: error: {path} holds a Tensor, not a generator "
                                                   "snapshot"), err
    assert "pass a generator_epoch_EEE.pt that training wrote" in err and not (tmp_path / "png").exists()
