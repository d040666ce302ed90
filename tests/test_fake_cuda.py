"""Every CUDA-only line of ocbench, executed on this CPU machine through a fake driver.

tests/fake_cuda.py keeps torch's own Python side live (argument checks, the device and stream
contexts, `torch.cuda.graph`) and replaces only what needs a driver; CUDA tensors are FakeTensors
(shape, dtype and device, no values). `ocbench/device.py`'s docstring lists the default GPU path's
device-only lines; each runs in a test here.

The crash this module was written for: `configure_backends` called
`torch.cuda.set_device(torch.device("cuda"))`, which torch refuses ("Expected a torch.device with a
specified index") before any driver call. `test_the_default_gpu_path_sets_up_a_run_on_cuda_0` fails
with that line back (checked once: ValueError in configure_backends).

CUDA-only lines that still run in no test here, and why:
- `CudaGraphStep`'s captured training step itself, and any backward on a CUDA tensor: autograd's
  engine asks the driver for the device's context (`hasPrimaryContext`) from C++, below anything
  Python can replace. The step's capture logic runs on the CPU with a stand-in for the capture
  (tests/test_gpu_paths.py); `CudaGraphs` runs here with a forward-only function.
- `torch.compile` on a GPU (Inductor compiles Triton kernels for a real device).
- preflight's GPU-vs-CPU FID and its CUDA projection arithmetic past the environment check: they
  need values from the GPU's Inception features (FakeTensors have none). The CPU half of the same
  code runs in tests/test_preflight.py.
These are what `make gpu-check` runs on a real GPU.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_cuda import fake_cuda as _fake_cuda
from ocbench import config as config_mod
from ocbench import fid, preflight
from ocbench.device import sync
from ocbench.device import nvidia_driver, resolve_device, runs_sharing_gpu
from ocbench.errors import OcbenchError
from ocbench.bench.protocol import environment
from ocbench.batches import PinnedGather, fits_on_device, to_model_input
from ocbench.train import (CudaGraphs, CudaGraphStep, Position, configure_backends, load_optimizer_state,
                           make_optimizer, resume, rng_state, set_rng_state, set_up, training_state)

CUDA0 = torch.device("cuda", 0)
SMOKE = Path(__file__).resolve().parent.parent / "workflow" / "config" / "smoke.yaml"


@pytest.fixture
def fake_cuda(monkeypatch):
    """A process with one fake H100 (see tests/fake_cuda.py); `fake_cuda(**settings)` for others."""
    def make(**settings):
        return _fake_cuda(monkeypatch, **settings)
    return make


@pytest.fixture
def smoke_cfg(tmp_path):
    """The smoke preset with `auto` (the default device) and a tiny prepared array."""
    np.save(tmp_path / "images.npy", np.zeros((16, 128, 128, 3), np.uint8))
    return config_mod.load([SMOKE], overrides=[
        "train.device=auto", f"data.prepared={tmp_path / 'images.npy'}", "data.subset=true",
        f"paths.results={tmp_path / 'results'}"])


def test_the_default_gpu_path_sets_up_a_run_on_cuda_0(fake_cuda, smoke_cfg):
    """`train.device: auto` on a GPU machine: the run's device, data, networks, noise stream and
    fused optimisers all on cuda:0, and G and D run forward on a batch of the run's data. With
    `torch.cuda.set_device(torch.device("cuda"))` back in configure_backends this fails at once,
    as every GPU run did."""
    with fake_cuda() as driver:
        run = set_up(smoke_cfg, "dcgan_oct_s0")
        assert run.device == CUDA0
        assert torch.backends.cudnn.benchmark is True  # the autotuner, as configure_backends asks
        assert run.images.device == CUDA0  # 16 small images fit: the whole array on the GPU
        assert run.noise_rng.device == CUDA0
        assert {p.device for p in [*run.G.parameters(), *run.D.parameters()]} == {CUDA0}
        assert run.step.opt_g.param_groups[0]["fused"] and run.step.opt_d.param_groups[0]["fused"]
        real = to_model_input(run.gather(torch.arange(8)), run.device, False)
        assert real.device == CUDA0 and real.shape == (8, 3, 128, 128) and real.dtype == torch.float32
        fake = run.G(torch.randn(8, smoke_cfg.train.latent_dim, device=run.device, generator=run.noise_rng),
                     run.beta)
        assert fake.shape == real.shape and fake.device == CUDA0
        assert run.D(fake, run.beta).shape[0] == 8
        assert ("set_device", 0) not in driver.calls  # nothing relies on CUDA's "current device"
    torch.backends.cudnn.benchmark = False


def test_cuda_without_an_index_is_the_jobs_gpu_and_cuda_n_is_checked(fake_cuda):
    with fake_cuda(devices=2):
        assert resolve_device("auto") == CUDA0 and resolve_device("cuda") == CUDA0
        assert resolve_device("cuda:1") == torch.device("cuda", 1)
        torch.Generator(resolve_device("cuda:1"))  # torch's own check of the generator's device
    with fake_cuda(devices=1):
        with pytest.raises(OcbenchError, match="train.device is cuda:1 but this process sees 1 GPU"):
            resolve_device("cuda:1")


def test_deterministic_mode_on_a_gpu(fake_cuda, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    train_cfg = config_mod.load(overrides=["train.deterministic=true"]).train
    with fake_cuda():
        try:
            configure_backends(train_cfg, resolve_device("auto"))
            assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark is False
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        finally:
            torch.use_deterministic_algorithms(False)


def test_deterministic_resnet_training_on_a_gpu_is_refused_in_one_line_before_it_starts(fake_cuda):
    """CUDA's bilinear-upsampling backward (the ResNet's generator) has no deterministic kernel:
    torch would raise at G's first backward, and preflight would call it "report it". Refused where
    the backends are configured, which preflight's environment check runs first; the CPU runs it."""
    cfg = config_mod.load([SMOKE.parent / "sngan-resnet.yaml"], ["train.deterministic=true", "train.device=auto"])
    with fake_cuda():
        with pytest.raises(OcbenchError, match="train.deterministic with train.arch resnet cannot run on a GPU.*"
                                               "set train.deterministic=false"):
            configure_backends(cfg.train, resolve_device("auto"))
        assert not torch.are_deterministic_algorithms_enabled()
        report = preflight.Report(cfg.name)
        assert preflight.check_environment(cfg, report) is None
        check = report.failed[0]
        assert check.name == "device" and "bilinear" in check.detail and "deterministic=false" in check.fix
    configure_backends(cfg.train, torch.device("cpu"))  # the CPU is deterministic: allowed
    torch.use_deterministic_algorithms(False)


def test_an_array_too_big_for_the_gpu_comes_through_pinned_buffers(fake_cuda, smoke_cfg):
    """The host path: mem_get_info says no room, so batches are gathered into pinned buffers, copied
    asynchronously, and each buffer's copy event is recorded on the run's device's stream and
    waited for before the buffer is refilled."""
    with fake_cuda(free_memory=10**6, total_memory=10**6) as driver:
        run = set_up(smoke_cfg, "dcgan_baseline_s0")
        assert run.images.device.type == "cpu" and isinstance(run.gather, PinnedGather)
        batches = [run.gather(torch.arange(i, i + 4)) for i in range(0, 12, 4)]
        assert all(b.device == CUDA0 and b.shape == (4, 128, 128, 3) for b in batches)
        assert all(buffer.device.type == "cpu" for buffer in run.gather.buffers)  # pinned host memory
        records = [c for c in driver.calls if c[0] == "event.record"]
        waits = [c for c in driver.calls if c[0] == "event.synchronize"]
        assert len(records) == 3 and len(waits) == 1  # the third gather reuses the first buffer


@pytest.mark.parametrize("free, total, runs, fits", [
    (35e9, 80e9, 4, True),   # 3 of 4 runs resident: the fourth's share is a quarter of the card
    (80e9, 80e9, 8, False),  # a share of 10 GB leaves no room beside a 9.96 GB array
    (12e9, 80e9, 1, False),  # alone on the card, but only 12 GB free now
])
def test_the_data_on_the_gpu_budgets_the_cards_share_of_each_run(free, total, runs, fits):
    celeba = 202_599 * 128 * 128 * 3  # 9.96 GB
    assert fits_on_device(celeba, free, total, runs) is fits


def test_under_slurm_one_gpu_per_job_is_not_shared():
    assert runs_sharing_gpu(4, {}) == 4
    assert runs_sharing_gpu(4, {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0"}) == 1
    assert runs_sharing_gpu(4, {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0,1"}) == 4


def test_the_random_state_of_a_gpu_run_round_trips(fake_cuda):
    with fake_cuda():
        noise, data = torch.Generator(CUDA0).manual_seed(1), torch.Generator().manual_seed(2)
        state = rng_state(noise, data, CUDA0)
        assert set(state) == {"torch", "noise", "data", "cuda"}
        set_rng_state(state, noise, data, CUDA0)


def test_a_gpu_optimiser_resumed_from_a_cpu_checkpoint_keeps_its_state_on_the_gpu(fake_cuda):
    """The checkpoint is read with map_location="cpu"; fused Adam wants its moments and step on
    the parameters' device."""
    cfg = config_mod.load()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    cpu_opt = make_optimizer(conv.parameters(), cfg.gans["dcgan"].optimizer)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    cpu_opt.step()
    saved = cpu_opt.state_dict()
    with fake_cuda():
        gpu_conv = torch.nn.Conv2d(3, 4, 3).to(CUDA0)
        opt = make_optimizer(gpu_conv.parameters(), cfg.gans["dcgan"].optimizer, CUDA0)
        assert opt.param_groups[0]["fused"] is True
        load_optimizer_state(opt, saved)
        for state in opt.state.values():
            assert {v.device for v in state.values()} == {CUDA0}


def test_a_gpu_runs_checkpoint_resumes_into_a_new_gpu_run(fake_cuda, smoke_cfg):
    """What `resume` does after `torch.load(map_location="cpu")`: every tensor of the checkpoint on
    the CPU, the run's networks, optimisers and noise stream on the GPU."""
    with fake_cuda():
        first = set_up(smoke_cfg, "wgan_gp_oct_s0")
        state = training_state(first.G, first.D, first.step.opt_g, first.step.opt_d, first.noise_rng,
                               first.data_rng, first.device)
        on_cpu = torch.utils._pytree.tree_map(lambda v: v.cpu() if torch.is_tensor(v) else v, state)
        ckpt = {**on_cpu, "position": Position().as_dict(), "rows": []}
        assert ckpt["device"] == "cuda"
        again = set_up(smoke_cfg, "wgan_gp_oct_s0")
        said = []
        position, rows = resume(again, ckpt, None, said.append)
        assert position == Position() and rows == [] and said[0].startswith("wgan_gp_oct_s0: resuming at epoch 1")
        assert {p.device for p in again.G.parameters()} == {CUDA0}


def test_the_benchmarks_name_the_gpu(fake_cuda):
    with fake_cuda(name="NVIDIA H200"):
        assert environment(CUDA0)["device_name"] == "NVIDIA H200"


def test_cuda_graphs_warm_up_on_a_side_stream_and_capture_on_their_own(fake_cuda):
    with fake_cuda() as driver:
        graphs = CudaGraphs(CUDA0)
        x = torch.ones(4, device=CUDA0)
        assert graphs.eager(lambda t: t * 2, x).device == CUDA0
        replay = graphs.capture(lambda t: t * 3, x)
        assert replay().device == CUDA0 and replay().device == CUDA0
        began = [c for c in driver.calls if c[0] == "graph.capture_begin"]
        assert began == [("graph.capture_begin", graphs.capture_stream.stream_id)]
        assert graphs.capture_stream.stream_id not in (0, graphs.side.stream_id)
        assert [c[0] for c in driver.calls].count("graph.replay") == 2


def test_a_cuda_graph_step_is_built_on_the_gpu(fake_cuda, smoke_cfg):
    """Its static input buffers on the run's device and capturable optimisers, through the real
    `CudaGraphs` (running it needs autograd on the GPU: see the module docstring)."""
    cfg = config_mod.load([SMOKE], overrides=[
        "train.device=auto", "train.cuda_graphs=true", f"data.prepared={smoke_cfg.data.prepared}", "data.subset=true"])
    with fake_cuda():
        run = set_up(cfg, "wgan_gp_oct_s0")
        assert isinstance(run.step, CudaGraphStep) and isinstance(run.step.graphs, CudaGraphs)
        assert run.step.z_d.device == run.step.eps.device == CUDA0
        assert run.step.opt_d.param_groups[0]["capturable"] is True


def test_inception_on_a_gpu_runs_in_full_fp32(fake_cuda, tmp_path):
    weights = fid.ensure_weights(str(tmp_path), placeholder=True)
    net = fid.load_inception(weights, "cpu", dims=64)
    with fake_cuda():
        torch.backends.cudnn.benchmark = True
        try:
            seen = {}
            net.register_forward_hook(lambda *_: seen.update(tf32=torch.backends.cudnn.allow_tf32,
                                                              benchmark=torch.backends.cudnn.benchmark))
            feats = fid.features(net.to(CUDA0), torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
            assert feats.device == CUDA0 and feats.shape == (2, 64) and feats.dtype == torch.float32
            assert seen == {"tf32": False, "benchmark": False}
        finally:
            torch.backends.cudnn.benchmark = False


def test_full_fp32_falls_back_for_a_torch_without_fp32_precision():
    def old_flags(enabled=False, benchmark=False, benchmark_limit=10, deterministic=False, allow_tf32=True):
        pass

    assert "fp32_precision" not in fid.cudnn_full_fp32(old_flags)
    assert fid.cudnn_full_fp32()["fp32_precision"] == "ieee"  # this torch has it


def test_timers_wait_for_the_gpu(fake_cuda):
    with fake_cuda() as driver:
        sync(CUDA0)
        sync(torch.device("cpu"))
    assert driver.calls.count(("synchronize", 0)) == 1


def fake_nvidia_smi(folder: Path, body: str) -> dict:
    folder.mkdir(exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_preflight_names_the_gpu_and_its_driver(fake_cuda, smoke_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", "echo 570.86.15")["PATH"])
    report = preflight.Report(smoke_cfg.name)
    with fake_cuda(name="NVIDIA H200", total_memory=141 * 2**30):
        device = preflight.check_environment(smoke_cfg, report)
    torch.backends.cudnn.benchmark = False
    assert device == CUDA0 and report.device == "cuda:0 (NVIDIA H200)"
    checks = {c.name: c for c in report.checks}
    assert checks["device"].detail == "cuda:0: NVIDIA H200, 141.0 GiB, driver 570.86.15"
    assert "Inception: full fp32" in checks["precision"].detail
    assert not report.failed, report.table()


def test_a_hanging_nvidia_smi_is_a_line_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", "sleep 30")["PATH"])
    assert nvidia_driver(timeout=0.5) == "unknown (nvidia-smi did not answer in 0.5 s)"
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", "echo no devices >&2; exit 9")["PATH"])
    assert nvidia_driver() == "unknown (nvidia-smi failed: no devices)"
