"""What only runs on a CUDA device, tested on the CPU by separating it from the device: the
CUDA-graph step's warm-up with a stand-in for capture, an optimiser resumed under other speed
options, the random state a checkpoint keeps, a GPU job that gets no GPU, `cuda:N`, cuBLAS's
deterministic mode, Inception's precision, the host-to-GPU batches and the data's placement."""

import os
import subprocess
import sys

import pytest
import torch

from ocbench import config as config_mod
from ocbench import fid
from ocbench.bench.train import compare
from ocbench.device import check_ordinal, resolve_device
from ocbench.errors import OcbenchError
from ocbench.nn import Discriminator, Generator
from ocbench.batches import PinnedGather, batch_gatherer, fits_on_device
from ocbench.train import CudaGraphStep, TrainingStep, load_optimizer_state, make_optimizer, rng_state, set_rng_state

WIDTH, BATCH, LATENT = 4, 4, 100


class ReplayByCalling:
    """A stand-in for `train.CudaGraphs` on the CPU: a "replay" calls the captured function again on
    the same static inputs, which is what a CUDA graph replay computes. It logs every eager call and
    every capture, by half."""

    def __init__(self):
        self.log = []

    def eager(self, fn, *inputs):
        self.log.append(("eager", fn.__name__))
        return fn(*inputs)

    def capture(self, fn, *inputs):
        self.log.append(("capture", fn.__name__))
        return lambda: fn(*inputs).clone()


def networks(gan_name: str, device=torch.device("cpu")):
    cfg = config_mod.load(overrides=[f"train.batch_size={BATCH}", f"train.width={WIDTH}"])
    gan = cfg.gans[gan_name]
    torch.manual_seed(0)
    G, D = Generator(0.5, WIDTH, LATENT).to(device), Discriminator(0.5, WIDTH, norm=gan.d_norm).to(device)
    opt_g, opt_d = make_optimizer(G.parameters(), gan.optimizer), make_optimizer(D.parameters(), gan.optimizer)
    autocast = lambda: torch.autocast(device.type, enabled=False)  # noqa: E731
    sizes = {"batch_size": BATCH, "latent_dim": LATENT, "device": device, "autocast": autocast}
    return G, D, opt_g, opt_d, gan, sizes


def run(step, g_turns, beta=None):
    data = torch.Generator().manual_seed(1)
    out = []
    for g_turn in g_turns:
        real = torch.rand(BATCH, 3, 128, 128, generator=data) * 2 - 1
        loss_d, loss_g = step(real, beta, g_turn)
        out.append((loss_d.item(), None if loss_g is None else loss_g.item()))
    return out


def test_each_half_of_a_cuda_graph_step_runs_eagerly_before_it_is_captured():
    """WGAN-GP resumed in the middle of its critic schedule (5 D steps per G step): the first G step
    comes at the 5th iteration. Each half must have run eagerly its own warm-up count before its
    capture (cuDNN autotuning, Adam's lazily made state and torch.compile cannot run inside one),
    and the captured step computes what the eager step computes, draw for draw."""
    g_turns = [False, False, False, True] + [i % 5 == 0 for i in range(16)]
    G0, D0, opt_g0, opt_d0, gan, sizes = networks("wgan_gp")
    eager = TrainingStep(G0, D0, opt_g0, opt_d0, gan, torch.Generator().manual_seed(0), **sizes)
    expected = run(eager, g_turns)

    G1, D1, opt_g1, opt_d1, gan, sizes = networks("wgan_gp")
    graphs = ReplayByCalling()
    graphed = CudaGraphStep(G1, D1, opt_g1, opt_d1, gan, torch.Generator().manual_seed(0), **sizes,
                            warmup=3, graphs=graphs)
    assert run(graphed, g_turns) == expected
    for half in ("d_step", "g_step"):
        calls = [kind for kind, name in graphs.log if name == half]
        assert calls == ["eager"] * 3 + ["capture"], (half, graphs.log)
    for a, b in ((G0, G1), (D0, D1)):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)


def test_the_bench_loop_hands_a_cuda_graph_step_one_beta():
    """`bench train` timed its loops with a new (1.0, 1.0) tuple per call; a CUDA-graph step
    refuses that ("needs the same beta tensor")."""
    G, D, opt_g, opt_d, gan, sizes = networks("dcgan")
    step = CudaGraphStep(G, D, opt_g, opt_d, gan, torch.Generator().manual_seed(0), **sizes, warmup=1,
                         graphs=ReplayByCalling())

    def batches():
        while True:
            yield torch.zeros(BATCH, 3, 128, 128)

    rates = compare({"ours": batches()}, step, torch.device("cpu"), warmup=1, iterations=2, rounds=1)
    assert rates["ours"] > 0


def stepped_adam(memory_format=torch.contiguous_format, step=True, **flags):
    """A conv and its Adam, after one step unless `step` is False (a capturable Adam cannot step on
    the CPU: it is only built here, as resume builds it before loading)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=memory_format)
    opt = torch.optim.Adam(conv.parameters(), lr=1e-3, **flags)
    if step:
        conv(torch.randn(2, 3, 8, 8).contiguous(memory_format=memory_format)).square().mean().backward()
        opt.step()
    return conv, opt


def test_a_resumed_optimiser_takes_the_current_flags_and_its_state_follows_the_parameters():
    """A checkpoint of an unfused, non-capturable Adam with contiguous weights, resumed where the
    config now asks for fused Adam on channels-last weights: torch's load_state_dict keeps the saved
    flags and the saved memory format; ours takes the current ones and keeps every value."""
    _, saved = stepped_adam()
    saved_state = saved.state_dict()
    conv, opt = stepped_adam(torch.channels_last, fused=True)
    load_optimizer_state(opt, saved_state)
    group = opt.param_groups[0]
    assert group["fused"] is True and not group["capturable"]
    weight = conv.weight
    for name in ("exp_avg", "exp_avg_sq"):
        assert opt.state[weight][name].stride() == weight.stride()  # channels-last, as the weight
        assert torch.equal(opt.state[weight][name], saved.state[saved.param_groups[0]["params"][0]][name])
    assert opt.state[weight]["step"].item() == 1
    conv(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).sum().backward()
    opt.step()  # the fused kernel accepts the restored state

    # torch's own load_state_dict, for contrast: the saved flag comes back.
    _, plain = stepped_adam(torch.channels_last, fused=True)
    plain.load_state_dict(saved_state)
    assert plain.param_groups[0]["fused"] is None


def test_capturable_follows_the_config_and_puts_step_on_the_parameters_device():
    _, saved = stepped_adam()
    _, opt = stepped_adam(step=False, capturable=True)
    load_optimizer_state(opt, saved.state_dict())
    assert opt.param_groups[0]["capturable"] is True
    _, back = stepped_adam(step=False)
    load_optimizer_state(back, opt.state_dict())  # and back again: off, step on the CPU
    assert back.param_groups[0]["capturable"] is False
    assert all(s["step"].device.type == "cpu" for s in back.state.values())


def test_the_random_state_holds_the_runs_device_only():
    noise, data = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = rng_state(noise, data, torch.device("cpu"))
    assert set(state) == {"torch", "noise", "data"}  # no GPU's state: none is used
    set_rng_state(state, torch.Generator(), torch.Generator(), torch.device("cpu"))


def test_a_job_given_a_gpu_that_cuda_cannot_use_stops_instead_of_training_on_the_cpu(monkeypatch):
    """This machine has torch's CUDA build and no driver: what a driver mismatch looks like."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is usable here")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(OcbenchError) as err:
        resolve_device("auto")
    message = str(err.value)
    assert "given GPU 2" in message and "CUDA cannot start" in message and "train.device=cpu" in message
    assert "\n" not in message
    assert resolve_device("cpu") == torch.device("cpu")  # asking for the CPU on purpose still works
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a job given no GPU: the CPU, as before
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_n_is_checked_against_the_gpus_the_job_sees():
    check_ordinal("cuda:0", 1, {"CUDA_VISIBLE_DEVICES": "3"})
    with pytest.raises(OcbenchError, match=r"train.device is cuda:1 but this process sees 1 GPU "
                                           r"\(CUDA_VISIBLE_DEVICES=3\).*train.device=cuda"):
        check_ordinal("cuda:1", 1, {"CUDA_VISIBLE_DEVICES": "3"})


def test_deterministic_mode_sets_cublas_workspace_before_cuda_starts():
    code = ("import os, torch; from ocbench.train import configure_backends; from ocbench import config; "
            "train_cfg = config.load(overrides=['train.deterministic=true']).train; "
            "configure_backends(train_cfg, torch.device('cpu')); print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ":4096:8"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "CUBLAS_WORKSPACE_CONFIG": ":16:8"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ":16:8"  # a user's own setting stays


def test_inception_runs_in_full_fp32_whatever_training_set():
    """Training turns on cuDNN's autotuner (and may run under bf16 autocast); Inception must see
    neither, nor TF32, and training's settings come back afterwards."""
    seen = {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            seen.update(tf32=torch.backends.cudnn.allow_tf32, benchmark=torch.backends.cudnn.benchmark,
                        deterministic=torch.backends.cudnn.deterministic,
                        autocast=torch.is_autocast_enabled("cpu"))
            return [self.conv(x)]

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = fid.features(Net(), torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
        assert seen == {"tf32": False, "benchmark": False, "deterministic": True, "autocast": False}
        assert feats.dtype == torch.float32
        assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_pinned_batches_are_the_gathered_images_and_survive_the_next_gathers():
    images = torch.randint(0, 256, (40, 8, 8, 3), dtype=torch.uint8)
    gather = PinnedGather(images, 4, torch.device("cpu"), pin=False)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    batches = [gather(perm[i * 4:(i + 1) * 4]) for i in range(10)]
    for i, batch in enumerate(batches):  # each still holds its own images after the buffers were reused
        assert torch.equal(batch, images[perm[i * 4:(i + 1) * 4]])
    assert batch_gatherer(images, torch.device("cpu"), 4).__self__ is images  # the CPU: a plain index


def test_runs_sharing_a_gpu_budget_their_share_of_the_card():
    gib = 2**30
    assert fits_on_device(10 * gib, 80 * gib, 80 * gib, runs=1)
    assert not fits_on_device(10 * gib, 80 * gib, 80 * gib, runs=8)  # a share of 10 GB: no room beside the array
