"""Preflight's training checks with a GPU's numerics (tests/gpu_noise.py: seeded last-bit noise on
every convolution, matrix product and their gradients, different on every call).

Under that noise, at the iteration counts preflight uses on a GPU (k = 3, WGAN-GP's schedule
included), every case of the paper's protocol, of stabilizers.yaml and of sngan-resnet.yaml (at small
widths) passes, eagerly and with the speed options that run on a CPU; and with a defect planted, the
check that guards against it fails: a resume that loses Adam's state, a random stream not restored,
beta from the wrong epoch after the reload, a fast path that drops BatchNorm's statistics update.
Before these checks compared one iteration from one state, today's `preflight` failed here (the
resume check's 1e-3 over six chained iterations, the speed options' 1e-3 on chained losses)."""

import pytest
import torch

from gpu_noise import GpuNoise
from ocbench import config as config_mod
from ocbench import preflight, train

CPU = torch.device("cpu")
K = 3  # preflight's iterations per epoch on a GPU
SMALL = ["train.width=4", "train.batch_size=4", "train.device=cpu"]
PRESETS = config_mod.WORKFLOW_DIR / "config"


@pytest.fixture(autouse=True)
def gpu_noise(monkeypatch):
    """Every test here runs on a CPU with a GPU's numerics (tests/gpu_noise.py), torch's deterministic
    algorithms off (under them GpuNoise, as a GPU, adds no noise; conftest restores the mode after),
    and checks, not the projection's timing (one timed iteration a case)."""
    monkeypatch.setattr(preflight, "TIMED_ITERATIONS", {False: (1, 1), True: (1, 1)})
    torch.use_deterministic_algorithms(False)
    with GpuNoise(seed=1) as mode:
        yield mode


def check(cfg, cases, graphs=None) -> preflight.Report:
    """`check_training` of `cases` (under the fixture's noise); the report."""
    report = preflight.Report(cfg.name)
    preflight.check_training(cfg, CPU, K, report, graphs=graphs, cases=cases)
    return report


def every_case(cfg):
    return [(g, v) for g in cfg.run.gans for v in cfg.run.variants]


def assert_passes(report: preflight.Report, rows_per_case: int, cases) -> None:
    assert not report.failed, report.table()
    assert len(report.checks) == rows_per_case * len(cases), report.table()


def test_gpu_noise_makes_the_same_iteration_differ_from_itself(gpu_noise):
    """The harness is not a no-op: one iteration taken twice from one state differs (what an exact
    comparison would call a broken resume), and by no more than the fp32 tolerance."""
    cfg = config_mod.load(overrides=SMALL)
    images = preflight.random_images(2 * 4, 128, CPU)
    run = preflight.Trainer(cfg, "lsgan", "oct", cfg.train, CPU, images)
    run.warm_up()
    before, snapshot = run.state_now(), run.snapshot()
    first = run.step()
    run.rewind(snapshot)
    again = run.step()
    assert gpu_noise.calls > 0
    ok, measured, _ = preflight.compare_steps(first, again, before, preflight.EXACT)
    assert not ok and measured["update"] > 0
    assert preflight.compare_steps(first, again, before, preflight.FP32_TOLERANCE)[0]


def test_every_case_of_the_papers_protocol_passes_under_gpu_noise():
    cfg = config_mod.load(overrides=SMALL)
    cases = every_case(cfg)
    assert len(cases) == 15
    assert_passes(check(cfg, cases), 2, cases)  # eager, resume


@pytest.mark.parametrize("option, cases", [("channels_last", [("lsgan", "low"), ("wgan", "combi")]),
                                           ("bf16", [("dcgan", "ramp")])])
def test_the_speed_options_that_run_on_a_cpu_pass_under_gpu_noise(option, cases):
    """compile runs on a CPU too, but compiling takes minutes here (tests/test_step.py compiles once)."""
    cfg = config_mod.load(overrides=[*SMALL, f"train.{option}=true"])
    assert_passes(check(cfg, cases), 3, cases)  # eager, the option against eager, resume


def test_the_stabilisers_and_the_resnet_pass_under_gpu_noise():
    stabilizers = config_mod.load([PRESETS / "stabilizers.yaml"], SMALL)
    resnet = config_mod.load([PRESETS / "sngan-resnet.yaml"], [*SMALL, "train.ngf=16", "train.ndf=16"])
    for cfg, cases in ((stabilizers, [c for c in every_case(stabilizers) if c[0] != "dcgan"]),
                       (resnet, every_case(resnet))):
        assert_passes(check(cfg, cases), 2, cases)


def test_with_cuda_graphs_each_side_of_the_reload_captures_and_replays_both_halves():
    """WGAN-GP makes a G step every 5 iterations, once an epoch of 3: the trainers warm up until both
    halves replay (CudaGraphStep.WARMUP eager calls of each, then the capture), before the
    checkpoint and after the reload. The device side is the CPU stand-in for a CUDA graph."""
    from test_gpu_paths import ReplayByCalling

    cfg = config_mod.load([PRESETS / "stabilizers.yaml"], [*SMALL, "train.cuda_graphs=true"])
    report = check(cfg, [("wgan_gp", "oct")], graphs=ReplayByCalling)
    assert_passes(report, 3, [("wgan_gp", "oct")])
    resume = next(c for c in report.checks if c.name.endswith("resume"))
    assert "both halves captured and replayed before and after the reload" in resume.detail
    assert "checkpoint after epoch 4 " in resume.detail  # the G half captured in the 4th epoch


def test_deterministic_training_resumes_bit_for_bit():
    cfg = config_mod.load(overrides=[*SMALL, "train.deterministic=true"])
    train.configure_backends(cfg.train, CPU)
    try:
        report = check(cfg, [("dcgan", "combi")])
    finally:
        torch.use_deterministic_algorithms(False)
    assert_passes(report, 2, [("dcgan", "combi")])
    assert "bit for bit (deterministic)" in report.checks[-1].detail


# --------------------------------------------------------------------------------------------------
# planted defects: each fails the check that guards against it


def failed_rows(report: preflight.Report) -> dict[str, str]:
    return {c.name: c.detail for c in report.failed}


def test_a_resume_that_does_not_restore_adams_state_fails(monkeypatch):
    cfg = config_mod.load(overrides=SMALL)
    monkeypatch.setattr(train, "load_optimizer_state", lambda opt, saved: None)
    failed = failed_rows(check(cfg, [("dcgan", "oct")]))
    assert list(failed) == ["dcgan/oct resume"] and "D weights" in failed["dcgan/oct resume"]


@pytest.mark.parametrize("stream", ["noise", "data"])
def test_a_resume_that_does_not_restore_a_random_stream_fails(monkeypatch, stream):
    cfg = config_mod.load(overrides=SMALL)
    set_rng_state = train.set_rng_state

    def forgetting(state, noise_rng, data_rng, device):
        set_rng_state({**state, stream: (noise_rng if stream == "noise" else data_rng).get_state()},
                      noise_rng, data_rng, device)

    monkeypatch.setattr(train, "set_rng_state", forgetting)
    failed = failed_rows(check(cfg, [("lsgan", "baseline")]))
    assert list(failed) == ["lsgan/baseline resume"]
    assert f"{stream} stream" in failed["lsgan/baseline resume"] and "losses" in failed["lsgan/baseline resume"]


def test_beta_from_the_wrong_epoch_after_the_reload_fails(monkeypatch):
    """The checkpoint records the epoch the run is in, beta follows from it: read back one too low,
    the resumed RAMP run weights its groups with the previous epoch's beta."""
    cfg = config_mod.load(overrides=SMALL)
    from_dict = train.Position.from_dict

    def off_by_one(saved):
        return from_dict({**saved, "epoch": saved["epoch"] - 1})

    monkeypatch.setattr(train.Position, "from_dict", staticmethod(off_by_one))
    failed = failed_rows(check(cfg, [("wgan", "ramp")]))
    assert list(failed) == ["wgan/ramp resume"]
    assert "beta" in failed["wgan/ramp resume"] and "losses" in failed["wgan/ramp resume"]


def test_a_fast_path_that_drops_batchnorms_statistics_update_fails(monkeypatch):
    """channels_last whose step puts BatchNorm's running statistics back after every iteration (as
    a graph captured with a stale buffer would): eager's statistics move, the fast path's do not."""
    cfg = config_mod.load(overrides=[*SMALL, "train.channels_last=true"])
    build_step = train.build_step

    def dropping(G, D, gan_cfg, train_cfg, device, noise_rng, graphs=None):
        step = build_step(G, D, gan_cfg, train_cfg, device, noise_rng, graphs)
        if not train_cfg.channels_last:
            return step
        statistics = [b for net in (G, D) for name, b in net.named_buffers() if name.endswith(("mean", "var"))]

        def stale(*args):
            kept = [b.clone() for b in statistics]
            out = step(*args)
            for b, k in zip(statistics, kept):
                b.copy_(k)
            return out

        stale.opt_g, stale.opt_d = step.opt_g, step.opt_d
        return stale

    monkeypatch.setattr(train, "build_step", dropping)
    failed = failed_rows(check(cfg, [("dcgan", "oct")]))
    assert list(failed) == ["dcgan/oct channels_last"]
    assert "G statistics" in failed["dcgan/oct channels_last"] and "D statistics" in failed["dcgan/oct channels_last"]
