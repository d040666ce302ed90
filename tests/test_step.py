"""The training step's fast paths against the eager step: torch.compile on the CPU (and a new beta
every epoch without recompiling), CUDA graphs where a GPU is present (skipped otherwise: never a
test that needs a GPU to pass), and the refusal of CUDA graphs without one."""

import pytest
import torch
from torch._inductor import config as inductor_config

from ocbench import config as config_mod
from ocbench.errors import OcbenchError
from ocbench.nn import Discriminator, Generator
from ocbench.train import CudaGraphStep, TrainingStep, beta_tensor, make_optimizer

WIDTH, BATCH, LATENT = 4, 4, 100


def setup(device, gan_name="wgan", compiled=False, graphs=False):
    """A RAMP (beta changes every epoch) G/D pair, its optimisers and step, seeded identically."""
    cfg = config_mod.load(overrides=[f"train.batch_size={BATCH}", f"train.width={WIDTH}"])
    gan = cfg.gans[gan_name]
    torch.manual_seed(0)
    G = Generator(0.5, WIDTH, LATENT).to(device)
    D = Discriminator(0.5, WIDTH).to(device)
    opt_g = make_optimizer(G.parameters(), gan.optimizer, device, capturable=graphs)
    opt_d = make_optimizer(D.parameters(), gan.optimizer, device, capturable=graphs)
    noise = torch.Generator(device).manual_seed(0)
    autocast = lambda: torch.autocast(device.type, enabled=False, cache_enabled=not graphs)  # noqa: E731
    G_fwd, D_fwd = (torch.compile(G), torch.compile(D)) if compiled else (G, D)
    kind = CudaGraphStep if graphs else TrainingStep
    step = kind(G_fwd, D_fwd, opt_g, opt_d, gan, noise, batch_size=BATCH, latent_dim=LATENT, device=device,
                autocast=autocast, D_plain=D)
    beta = beta_tensor({"kind": "ramp"}, device)
    return G, D, step, beta


def run(step, beta, device, schedule):
    """Iterations of `step` on fixed real batches; `schedule` lists (beta_h, g_turn) per iteration."""
    data = torch.Generator().manual_seed(1)
    losses = []
    for beta_h, g_turn in schedule:
        beta.copy_(torch.tensor((beta_h, 1 - beta_h)))
        real = (torch.rand(BATCH, 3, 128, 128, generator=data) * 2 - 1).to(device)
        loss_d, loss_g = step(real, beta, g_turn)
        losses.append((loss_d.item(), None if loss_g is None else loss_g.item()))
    return losses


# Other kernels sum in another order, so gradients differ in their last bits. Adam divides by the
# gradient's own scale: a weight whose gradient is near 0 moves by about lr either way, so a last-bit
# difference can flip its direction. Weights may differ by a few lr (2e-4); losses only by rounding.
# WGAN's losses are differences of means of D's outputs that nearly cancel (terms ~4e-3, losses down
# to 3e-4): their error is the terms' (seen up to 7e-6 on an Intel Xeon, where oneDNN's compiled
# kernels differ from the AMD EPYC the test was written on), hence an absolute floor of 2e-5; a wrong
# step is off by the losses' own size (1e-3).
# The weights' bound is the worst case of that flip: every one of the schedule's steps moving a weight
# by lr one way in one run and the other way in the other (2 lr per step; seen 1.07e-3 after 6 steps on
# the Intel Xeon, in 23 of 102,400 weights). A wrong step moves weights by far more, everywhere.
SCHEDULE = [(0.5, True), (0.5, False), (0.6, True), (0.6, True), (0.7, False), (0.7, True)]
LR, LOSS_REL, LOSS_ABS = 2e-4, 1e-3, 2e-5


def assert_close(a: torch.nn.Module, b: torch.nn.Module, steps: int) -> None:
    """Weights after `steps` iterations of each: at most 2 lr apart per step (see above)."""
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.is_floating_point():
            torch.testing.assert_close(x, y, rtol=1e-3, atol=2 * LR * steps)
        else:
            assert torch.equal(x, y), name  # BatchNorm's batch counters


def assert_same_losses(expected, got) -> None:
    assert len(expected) == len(got)
    for (d0, g0), (d1, g1) in zip(expected, got):
        assert d1 == pytest.approx(d0, rel=LOSS_REL, abs=LOSS_ABS)
        assert (g0 is None) == (g1 is None) and (g0 is None or g1 == pytest.approx(g0, rel=LOSS_REL, abs=LOSS_ABS))


# Inductor's C++ backend without vector instructions (cpp.vec_isa_ok): choosing the vectorised
# kernels' tiling is symbolic index algebra, about a minute of this test's CPU on a cold compile cache
# (CI's; BENCHMARKS.md), and which kernels inductor writes is inductor's business. What is the
# step's own runs the same either way: the graphs dynamo captures from it, their guards (a new beta, a
# D-only iteration: no recompilation), AOT autograd's functionalised BatchNorm and optimiser
# updates, and the fused kernels' numerics against eager. (A GPU compiles Triton kernels instead:
# `make gpu-check` runs the compiled step there.)
@inductor_config.patch({"cpp.vec_isa_ok": False})
def test_compiled_step_matches_eager_and_a_new_beta_does_not_recompile():
    torch._dynamo.reset()
    G0, D0, eager, beta0 = setup(torch.device("cpu"))
    G1, D1, compiled, beta1 = setup(torch.device("cpu"), compiled=True)
    expected = run(eager, beta0, torch.device("cpu"), SCHEDULE[:2])
    got = run(compiled, beta1, torch.device("cpu"), SCHEDULE[:2])  # compiles (training and D-only)
    # From here on, any recompilation (a new beta value, a D-only iteration) is an error.
    with torch._dynamo.config.patch(error_on_recompile=True):
        expected += run(eager, beta0, torch.device("cpu"), SCHEDULE[2:])
        got += run(compiled, beta1, torch.device("cpu"), SCHEDULE[2:])
    assert_same_losses(expected, got)
    assert_close(G0, G1, len(SCHEDULE))
    assert_close(D0, D1, len(SCHEDULE))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (none here)")
def test_cuda_graph_step_matches_eager_without_a_host_sync():
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    G0, D0, eager, beta0 = setup(device)
    G1, D1, graphed, beta1 = setup(device, graphs=True)
    long_schedule = SCHEDULE * 2  # 3 eager warm-up iterations, then captures and replays
    expected = run(eager, beta0, device, long_schedule)
    got = run(graphed, beta1, device, long_schedule)
    assert_same_losses(expected, got)
    assert_close(G0, G1, len(long_schedule))
    assert_close(D0, D1, len(long_schedule))
    # The replayed step never waits for the device.
    real = torch.zeros(BATCH, 3, 128, 128, device=device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for g_turn in (True, False, True):
            graphed(real, beta1, g_turn)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_graphs_without_a_gpu_are_refused_in_one_line():
    with pytest.raises(OcbenchError, match="train.cuda_graphs needs a CUDA device.*cuda_graphs=false"):
        setup(torch.device("cpu"), graphs=True)
