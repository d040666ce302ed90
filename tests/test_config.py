"""The config: paper.yaml holds the protocol; overlays and --set merge over it; bad values stop early."""

import pytest

from ocbench import config


def test_paper_config_is_the_protocol():
    cfg = config.load()
    assert cfg.name == "paper"
    assert cfg.train.epochs == 50 and cfg.train.batch_size == 64 and cfg.train.latent_dim == 100
    assert cfg.train.init == "pytorch"
    for gan in ("dcgan", "lsgan", "wgan"):
        opt = cfg.gans[gan].optimizer
        assert (opt.name, opt.lr, opt.betas) == ("adam", 2e-4, (0.5, 0.999))
        assert cfg.gans[gan].critic.n_critic(1000) == 1
    assert cfg.gans["wgan"].clamp == 0.05
    assert {v: cfg.variants[v].alpha for v in cfg.variants} == {
        "baseline": 0.0, "oct": 0.5, "low": 0.99, "ramp": 0.5, "combi": 0.5}
    assert len(cfg.run_ids()) == 15 and "dcgan_oct_s0" in cfg.run_ids()
    assert cfg.metrics.fid_samples == 10000 and cfg.metrics.pr_k == 3


def test_official_wgan_preset_overlays_the_paper():
    cfg = config.load([config.WORKFLOW_DIR / "config" / "official-wgan.yaml"])
    wgan = cfg.gans["wgan"]
    assert cfg.name == "official-wgan" and cfg.run.gans == ["wgan"]
    assert (wgan.optimizer.name, wgan.optimizer.lr) == ("rmsprop", 5e-5)
    # n_critic: 20 for the first 50 G updates and at every 500th, else 5.
    assert [wgan.critic.n_critic(g) for g in (0, 49, 50, 499, 500, 501, 1000)] == [20, 20, 5, 5, 20, 5, 20]
    assert cfg.train.epochs == 50  # everything else is the paper's


def test_set_overrides_parse_yaml_values():
    cfg = config.load(overrides=["train.epochs=3", "run.seeds=[0, 1, 2]", "variants.oct.alpha=0.25"])
    assert cfg.train.epochs == 3 and cfg.run.seeds == [0, 1, 2] and cfg.variants["oct"].alpha == 0.25
    assert len(cfg.run_ids()) == 45


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.gans=[dcgan, began]", "run.gans: unknown GAN 'began'; allowed: dcgan, lsgan, wgan"),
        ("run.variants=[octave]", "run.variants: unknown variant 'octave'"),
        ("variants.low.alpha=1.01", "variants.low.alpha: 1.01 is greater than the maximum of 1"),
        ("variants.oct.alpha=-0.5", "variants.oct.alpha: -0.5 is less than the minimum of 0"),
        ("variants.ramp.beta.kind=cosine", "variants.ramp.beta.kind: 'cosine' is not one of"),
        ("gans.dcgan.loss=hinge", "gans.dcgan.loss: 'hinge' is not one of ['dcgan', 'lsgan', 'wgan']"),
        ("train.epochs=0", "train.epochs: 0 is less than the minimum of 1"),
        ("train.batch_size=-64", "train.batch_size: -64 is less than the minimum of 1"),
        ("train.epoch=3", "train: Additional properties are not allowed ('epoch' was unexpected)"),
        ("variants.x.beta.kind=piecewise", "variants.x"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(config.ConfigError) as info:
        config.load(overrides=[override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_bad_config_in_one_line_with_exit_code_2(cli):
    proc = cli("model-info", "--set", "variants.oct.alpha=2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ocbench: error: config error at variants.oct.alpha: 2 is greater than the maximum of 1"]


def test_run_ids_are_checked_against_the_config():
    cfg = config.load()
    assert cfg.parse_run("lsgan_combi_s3") == ("lsgan", "combi", 3)
    with pytest.raises(config.ConfigError, match="unknown GAN 'began'"):
        cfg.parse_run("began_oct_s0")
    with pytest.raises(config.ConfigError, match="not of the form"):
        cfg.parse_run("dcgan-oct")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load([tmp_path / "nope.yaml"])
