"""The config: paper.yaml holds the protocol; overlays and --set merge over it; bad values stop early."""

import copy
import dataclasses
import re

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
        ("gans.dcgan.loss=began", "gans.dcgan.loss: 'began' is not one of ['dcgan', 'lsgan', 'wgan', 'hinge']"),
        ("gans.wgan_gp.gradient_penalty=-10", "gans.wgan_gp.gradient_penalty: -10 is less than the minimum of 0"),
        ("gans.sngan.d_norm=instance", "gans.sngan.d_norm: 'instance' is not one of ['batch', 'none', 'layer']"),
        ("gans.sngan.clamp=0.01", "gans.sngan: loss hinge with clamp 0.01 conflicts"),
        ("variants.oct_2={alpha: 0.5, beta: {kind: constant}}", "variants: 'oct_2' does not match"),
        ("train.epochs=0", "train.epochs: 0 is less than the minimum of 1"),
        ("train.batch_size=-64", "train.batch_size: -64 is less than the minimum of 1"),
        ("train.epoch=3", "train.epoch: no such setting; did you mean train.epochs?"),
        ("variants.x.beta.kind=piecewise", "variants.x"),
        ("analysis.std_window=1", "analysis.std_window: 1 is less than the minimum of 2"),
        ("analysis.confidence=1", "analysis.confidence: 1 is greater than or equal to the maximum of 1"),
        ("analysis.margins.similr=0.1",
         "analysis.margins.similr: no such setting; did you mean analysis.margins.similar?"),
        ("train.speed=1", "train.speed: no such setting; train takes epochs, batch_size,"),
        ("metrics.eval_seed=-1", "metrics.eval_seed: -1 is less than the minimum of 0"),
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


def test_stabiliser_presets_follow_their_papers():
    cfg = config.load()
    sngan, wgan_gp = cfg.gans["sngan"], cfg.gans["wgan_gp"]
    # Miyato et al. 2018: spectral norm, no BatchNorm in D, hinge, Adam 2e-4 (0.5, 0.999), n_dis 1
    assert (sngan.loss, sngan.spectral_norm, sngan.d_norm, sngan.gradient_penalty, sngan.clamp) == (
        "hinge", True, "none", 0.0, None)
    assert (sngan.optimizer.name, sngan.optimizer.lr, sngan.optimizer.betas) == ("adam", 2e-4, (0.5, 0.999))
    assert sngan.critic.n_critic(1000) == 1
    # Gulrajani et al. 2017, Algorithm 1: lambda 10, n_critic 5, Adam 1e-4 (0, 0.9), no clamp, no BatchNorm
    assert (wgan_gp.loss, wgan_gp.gradient_penalty, wgan_gp.d_norm, wgan_gp.spectral_norm, wgan_gp.clamp) == (
        "wgan", 10.0, "none", False, None)
    assert (wgan_gp.optimizer.name, wgan_gp.optimizer.lr, wgan_gp.optimizer.betas) == ("adam", 1e-4, (0.0, 0.9))
    assert wgan_gp.critic.n_critic(1000) == 5
    # the paper's GANs keep the paper's discriminator, and the default DAG does not train the presets
    for gan in ("dcgan", "lsgan", "wgan"):
        g = cfg.gans[gan]
        assert (g.d_norm, g.spectral_norm, g.gradient_penalty) == ("batch", False, 0.0)
        # paper.yaml does not set them: the schema's defaults are the one home of a GAN's defaults
        assert not {"d_norm", "spectral_norm", "gradient_penalty"} & set(config.read_yaml(config.BASE_CONFIG)["gans"][gan])
    assert cfg.run.gans == ["dcgan", "lsgan", "wgan"] and cfg.figure_numbers() == [2, 3, 4, 5, 6, 7]


def test_stabilizers_overlay_and_figure_8():
    cfg = config.load([config.WORKFLOW_DIR / "config" / "stabilizers.yaml"])
    assert cfg.run.gans == ["dcgan", "sngan", "wgan_gp"] and cfg.run.variants == ["baseline", "oct"]
    assert cfg.run.seeds == [0, 1, 2] and len(cfg.run_ids()) == 18 and cfg.figure_numbers()[-1] == 8
    assert cfg.parse_run("wgan_gp_oct_s2") == ("wgan_gp", "oct", 2)  # a GAN name may hold underscores
    # any GAN with spectral norm or a gradient penalty brings Figure 8, on any loss
    cfg = config.load(overrides=["run.gans=[lsgan]", "gans.lsgan.spectral_norm=true"])
    assert cfg.gans["lsgan"].spectral_norm and cfg.figure_numbers()[-1] == 8
    cfg = config.load(overrides=["run.gans=[wgan]", "gans.wgan.gradient_penalty=1"])
    assert cfg.gans["wgan"].gradient_penalty == 1.0 and cfg.figure_numbers()[-1] == 8


def test_each_setting_has_one_home_and_a_config_without_one_is_refused_by_name():
    """Top-level settings: paper.yaml, the base of every config (no dataclass or schema default);
    a GAN's or a variant's: the schema's defaults, which ocbench and Snakemake fill in. A config
    that lacks a setting (e.g. a merged config.yaml written by an older checkout) is refused in one
    line naming it. What summary.py, claims.py and train.py once held as constants are paper.yaml's."""
    cfg = config.load()
    assert (cfg.analysis.std_window, cfg.analysis.confidence) == (10, 0.95)
    assert (cfg.analysis.margins.similar, cfg.analysis.margins.not_dramatically_worse) == (0.10, 0.25)
    assert (cfg.metrics.eval_seed, cfg.train.resnet, cfg.metrics.final_real_images) == (1_000_000, "mimicry", None)
    for section, key in (("train", "resnet"), ("metrics", "eval_seed"), ("analysis", "margins")):
        raw = copy.deepcopy(cfg.raw)
        del raw[section][key]
        with pytest.raises(config.ConfigError, match=f"^config error at {section}: '{key}' is a required property$"):
            config.from_dict(raw)
    raw = copy.deepcopy(cfg.raw)
    del raw["analysis"]
    with pytest.raises(config.ConfigError, match="'analysis' is a required property"):
        config.from_dict(raw)
    assert not any(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                   for cls in (config.TrainConfig, config.MetricsConfig, config.AnalysisConfig, config.MarginsConfig)
                   for f in dataclasses.fields(cls))
    cfg = config.load(overrides=["analysis.margins.similar=0.2", "metrics.eval_seed=7"])
    assert cfg.analysis.margins.similar == 0.2 and cfg.metrics.eval_seed == 7
    # a GAN an overlay adds takes the schema's defaults, as the paper's GANs do
    new = config.load(overrides=["gans.mine={loss: lsgan, optimizer: {name: adam, lr: 0.001}, critic: {n: 2}}"])
    mine = new.gans["mine"]
    assert (mine.d_norm, mine.spectral_norm, mine.gradient_penalty, mine.clamp) == ("batch", False, 0.0, None)
    assert (mine.optimizer.betas, mine.critic.warmup_g_updates, mine.critic.warmup) == ((0.5, 0.999), 0, None)
    assert new.variants["oct"].beta == {"kind": "constant", "beta_h": 1.0, "beta_l": 1.0}


def schema_keys(node, path=""):
    """(dotted key, its schema) for every key the schema defines, nested ones and $defs' included;
    `*` stands for a name of the user's (a GAN, a variant)."""
    if isinstance(node, list):
        for sub in node:
            yield from schema_keys(sub, path)
        return
    if not isinstance(node, dict):
        return
    for key, sub in node.get("properties", {}).items():
        yield path + key, sub
        yield from schema_keys(sub, f"{path}{key}.")
    for key, sub in node.items():
        if key == "$defs":
            for name, definition in sub.items():
                yield from schema_keys(definition, f"$defs.{name}.")
        elif key == "additionalProperties":
            yield from schema_keys(sub, path + "*.")
        elif key in ("oneOf", "anyOf", "allOf", "items"):
            yield from schema_keys(sub, path)


def test_every_schema_key_says_what_it_means():
    """The README: the schema "says what each key means". Every key has a non-empty description."""
    keys = dict(schema_keys(config.load_schema()))
    # the walk reaches the nested keys, those under user-named GANs and the $defs
    assert {"metrics.eval_seed", "gans.*.critic.warmup", "data.synthetic.seed", "$defs.beta_schedule.knots",
            "analysis.margins.not_dramatically_worse"} <= set(keys)
    undocumented = [k for k, sub in keys.items() if not str(sub.get("description") or "").strip()]
    assert not undocumented, f"schema keys without a description: {', '.join(undocumented)}"


@pytest.mark.parametrize("key, value", [("paths.results", "results\nrm -rf ~"), ("data.images", "data/\x1b[2Jx.zip"),
                                        ("data.sources", ["ok.zip", "bad\t.zip"])])
def test_a_control_character_in_a_configured_path_is_refused(key, value):
    raw = copy.deepcopy(config.read_yaml(config.BASE_CONFIG))
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(config.ConfigError, match=rf"^config error at {re.escape(key)}.*holds a control character"):
        config.from_dict(raw)


def test_ocbench_and_snakemake_read_one_protocol_from_a_config(tmp_path):
    """`ocbench --config workflow/config/smoke.yaml` and results/smoke/config.yaml, the merged config
    Snakemake writes after its validate() filled in the schema's defaults (every variant's beta_h and
    beta_l), are the same config with the same fingerprint for every run: a run started by either
    resumes under the other. (The smoke DAG's test compares the file Snakemake really wrote.)"""
    from snakemake.utils import validate

    smoke = config.WORKFLOW_DIR / "config" / "smoke.yaml"
    merged = config.deep_merge(config.read_yaml(config.BASE_CONFIG), config.read_yaml(smoke))
    validate(merged, str(config.SCHEMA))  # as the Snakefile does, defaults filled in
    written = tmp_path / "config.yaml"
    written.write_text(config.from_dict(merged).dump())  # as common.smk's onstart writes it
    ours, snakemakes = config.load([smoke]), config.load([written])
    assert ours.dump() == snakemakes.dump()
    assert [config.protocol_fingerprint(ours, run) for run in ours.run_ids()] == [
        config.protocol_fingerprint(snakemakes, run) for run in ours.run_ids()]
    # One protocol however a default is spelt: written out, or left to the schema and the dataclasses.
    spelt = config.load([smoke], ["variants.oct.beta={kind: constant, beta_h: 1, beta_l: 1.0}",
                                  "gans.dcgan.d_norm=batch", "variants.oct.alpha=0.50"])
    assert config.protocol_fingerprint(spelt, "dcgan_oct_s0") == config.protocol_fingerprint(ours, "dcgan_oct_s0")


def one_line_exit_2(argv, capsys) -> str:
    """`ocbench ARGV` in this process: exit status 2 and one error line, no traceback; the line."""
    from ocbench.cli import main

    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ocbench: error: "), err
    return err.strip()


@pytest.mark.parametrize("value, problem", [("[1", "expected ',' or ']'"),
                                            ("@x", "found character '@' that cannot start any token")])
def test_a_set_value_that_is_not_yaml_is_one_line_naming_it_and_the_fix(value, problem, capsys):
    line = one_line_exit_2(["config", "--set", f"train.epochs={value}"], capsys)
    assert f"--set 'train.epochs={value}': '{value}' is not a YAML value ({problem}" in line and "quote text" in line


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    line = one_line_exit_2(["config", "--config", path], capsys)
    assert f"config file {path} is not UTF-8 text (byte 0xe9 at offset 9)" in line and "saved as UTF-8" in line


def test_a_leading_tilde_of_every_configured_path_is_the_home_folder(tmp_path, monkeypatch):
    """`paths.results: ~/x` means the home folder's x, for ocbench and the workflow alike (both build
    the config with from_dict), never a folder named ~ in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    overrides = [f"{section}.{key}=~/{section}-{key}" for section, key in config.PATH_KEYS if key != "sources"]
    cfg = config.load(overrides=overrides + ["data.sources=[~/copy.zip, https://example.org/~x.zip]"])
    for where, value in config.configured_paths(cfg.raw):
        assert not value.startswith("~"), (where, value)
    assert cfg.results_dir == tmp_path / "paths-results" / "paper"
    assert (cfg.paths.figures, cfg.data.prepared, cfg.metrics.weights_dir, cfg.gpus.lock_dir) == (
        f"{tmp_path}/paths-figures", f"{tmp_path}/data-prepared", f"{tmp_path}/metrics-weights_dir",
        f"{tmp_path}/gpus-lock_dir")
    assert cfg.data.sources == [f"{tmp_path}/copy.zip", "https://example.org/~x.zip"]
    assert "~" not in config.load(overrides=["paths.results=~/x"]).dump().split("results:")[1].split("\n")[0]
