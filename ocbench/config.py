"""The configuration: YAML files merged over the paper's protocol, validated, loaded into dataclasses.

The rules mirror Snakemake's, so that a config means the same thing to `snakemake` and to `ocbench`:
`workflow/config/paper.yaml` is always the base (the Snakefile's `configfile:`), every `--config FILE`
is merged over it in order (Snakemake's `--configfile`), dictionaries recursively and everything else
replaced, and `--set dotted.key=value` overrides come last. The merged dictionary is validated against
`workflow/schemas/config.schema.yaml`, the same schema the Snakefile validates with.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ocbench.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = REPO_ROOT / "workflow"
BASE_CONFIG = WORKFLOW_DIR / "config" / "paper.yaml"
SCHEMA = WORKFLOW_DIR / "schemas" / "config.schema.yaml"

# A GAN's name may hold underscores (wgan_gp), a variant's may not: the variant is the last part.
RUN_ID = re.compile(r"^(?P<gan>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<variant>[A-Za-z0-9-]+)_s(?P<seed>[0-9]+)$")


class ConfigError(UsageError):
    """A config that cannot run; the message is one line naming the key and the fix."""


# --------------------------------------------------------------------------------------------------
# dataclasses: one per section of the config


@dataclass(frozen=True)
class RunConfig:
    gans: list[str]
    variants: list[str]
    seeds: list[int]


@dataclass(frozen=True)
class PathsConfig:
    results: str
    figures: str


@dataclass(frozen=True)
class DataConfig:
    images: str
    partition: str
    prepared: str
    split: str
    subset: bool
    crop: str | None
    resize: str
    image_size: int
    synthetic: dict | None
    sources: list[str]  # copies of the zip tried before the built-in ones


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    lr: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class CriticConfig:
    """How many D steps per G step; see `n_critic`."""

    n: int
    warmup_g_updates: int
    warmup: int | None = None  # absent: n
    warmup_every: int | None = None  # absent: never

    def n_critic(self, g_updates: int) -> int:
        """D steps per G step, given the number of G updates made so far (official WGAN rule)."""
        warm = self.warmup if self.warmup is not None else self.n
        if g_updates < self.warmup_g_updates:
            return warm
        if self.warmup_every is not None and g_updates % self.warmup_every == 0:
            return warm
        return self.n

    def g_turn(self, batch_index: int, g_updates: int) -> bool:
        """Whether G steps after the D step on batch `batch_index` of the epoch (counted from 0)."""
        return batch_index % self.n_critic(g_updates) == 0

    def walk(self, batches_per_epoch: int, epochs: int | None = None,
             g_steps: int | None = None) -> list[tuple[int, int]]:
        """(iterations, G steps) of each epoch of a run, by training's own rule (`g_turn` on every
        batch): `epochs` epochs, or up to the `g_steps`-th G step, where the last epoch ends early.
        The one walk of the schedule: the run's length, epochs and iterations derive from it."""
        per_epoch, made = [], 0
        while (epochs is None or len(per_epoch) < epochs) and (g_steps is None or made < g_steps):
            start, iterations = made, 0
            for batch_index in range(batches_per_epoch):  # every epoch has a G step: on its batch 0
                iterations += 1
                made += self.g_turn(batch_index, made)
                if made == g_steps:
                    break
            per_epoch.append((iterations, made - start))
        return per_epoch

    def epochs_for(self, g_steps: int, batches_per_epoch: int) -> int:
        """The epochs in which the schedule reaches `g_steps` G updates (the last one partial): what
        `train.epochs` must be with `train.g_steps`."""
        return len(self.walk(batches_per_epoch, g_steps=g_steps))

    def iterations(self, batches_per_epoch: int, epochs: int, g_steps: int | None = None) -> tuple[int, int]:
        """(iterations with a G step, iterations without one) of a whole run."""
        per_epoch = self.walk(batches_per_epoch, epochs, g_steps)
        iterations, with_g = (sum(column) for column in zip(*per_epoch)) if per_epoch else (0, 0)
        return with_g, iterations - with_g


@dataclass(frozen=True)
class GanConfig:
    loss: str
    optimizer: OptimizerConfig
    critic: CriticConfig
    d_norm: str  # the discriminator's normalisation: batch (the paper's) | none | layer
    spectral_norm: bool  # on every discriminator conv (SN-GAN)
    gradient_penalty: float  # lambda of WGAN-GP's penalty; 0: none
    clamp: float | None = None  # absent: no clipping

    @property
    def stabilised(self) -> bool:
        """Uses one of the standard stabilisers the paper does not test (Figure 8 shows these GANs)."""
        return self.spectral_norm or self.gradient_penalty > 0


@dataclass(frozen=True)
class VariantConfig:
    alpha: float
    beta: dict


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    latent_dim: int
    width: int
    init: str
    arch: str  # dcgan (the paper's networks, `width`) | resnet (SN-GAN's ResNet, `ngf` and `ndf`)
    ngf: int
    ndf: int
    resnet: str  # arch resnet's discriminator: mimicry (its code, the preset's) | chainer (ocbench/nn.py)
    g_steps: int | None  # None: `epochs` whole epochs; N: stop at the N-th G update
    snapshot_epochs: list[int]
    grid_size: int
    checkpoint_minutes: float
    device: str
    deterministic: bool
    data_on_device: str | bool
    bf16: bool
    channels_last: bool
    compile: bool
    cuda_graphs: bool

    @property
    def snapshot_kept(self) -> list[int]:
        """The epochs whose generator snapshot training keeps: those of `snapshot_epochs` the run
        reaches, and the last."""
        return sorted({e for e in self.snapshot_epochs if e <= self.epochs} | {self.epochs})

    @property
    def g_width(self) -> int:
        """The generator's width: `width` for the paper's networks, `ngf` for the ResNet."""
        return self.width if self.arch == "dcgan" else self.ngf

    @property
    def d_width(self) -> int:
        return self.width if self.arch == "dcgan" else self.ndf


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool
    every: int


@dataclass(frozen=True)
class GpusConfig:
    devices: str | list
    runs_per_gpu: int
    lock_dir: str | None


@dataclass(frozen=True)
class MetricsConfig:
    stats: str
    fid_samples: int
    dims: int
    stats_images: int | None
    batch_size: int
    pr_k: int
    pr_real_samples: int
    weights_dir: str | None
    placeholder_weights: bool
    frechet: str
    kid_subsets: int
    kid_subset_size: int
    kid_real_samples: int | None  # None: as many as fid_samples
    fid_inf_points: int
    fid_inf_smallest: float
    eval_seed: int  # the FID samples after epoch index e use seed eval_seed + e
    final_samples: int | None  # after the last epoch, also score this many samples (run.json's "final")
    final_real_images: int | None  # the final FID against this many real images drawn at random; None: `stats`'
    final_real_seed: int  # the seed that draws them (fid.real_sample_indices)


@dataclass(frozen=True)
class FiguresConfig:
    grid_epochs: list[int]
    curve_sample_epochs: list[int]
    band: str
    metric: str
    formats: list[str]


@dataclass(frozen=True)
class MarginsConfig:
    """The claims' margins, as fractions of the compared setting's mean (ocbench/claims.py)."""

    similar: float  # "similar", "better or similar"
    not_dramatically_worse: float


@dataclass(frozen=True)
class Reference:
    """A published number for one (GAN, variant) of the config, set beside our final evaluation's."""

    gan: str
    variant: str
    measure: str  # fid | kid: of run.json's "final"
    value: float
    source: str
    std: float | None = None
    generated: int | None = None
    real: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """How `ocbench summary` and `ocbench claims` judge finished runs; no number training computes."""

    std_window: int  # last epochs whose FIDs give the summary's fid_std_last10
    confidence: float  # of the claims' paired t-intervals
    margins: MarginsConfig
    references: list[Reference]


@dataclass(frozen=True)
class Config:
    name: str
    run: RunConfig
    paths: PathsConfig
    data: DataConfig
    gans: dict[str, GanConfig]
    variants: dict[str, VariantConfig]
    train: TrainConfig
    gpus: GpusConfig
    metrics: MetricsConfig
    figures: FiguresConfig
    log: LogConfig
    analysis: AnalysisConfig
    raw: dict = field(repr=False, compare=False)  # the merged, validated dictionary

    @property
    def results_dir(self) -> Path:
        return Path(self.paths.results) / self.name

    @property
    def figures_dir(self) -> Path:
        return Path(self.paths.figures) / self.name

    def run_dir(self, run_id: str) -> Path:
        return self.results_dir / "runs" / run_id

    def run_ids(self) -> list[str]:
        """Every run `snakemake` trains for this config, in a stable order."""
        return [
            run_id(gan, variant, seed)
            for gan in self.run.gans
            for variant in self.run.variants
            for seed in self.run.seeds
        ]

    def parse_run(self, run: str) -> tuple[str, str, int]:
        """`dcgan_oct_s0` -> ("dcgan", "oct", 0), checked against what this config defines."""
        m = RUN_ID.match(run)
        if not m:
            raise ConfigError(
                f"run id {run!r} is not of the form {{gan}}_{{variant}}_s{{seed}}, e.g. dcgan_oct_s0"
            )
        gan, variant, seed = m["gan"], m["variant"], int(m["seed"])
        if gan not in self.gans:
            raise ConfigError(f"run id {run!r}: unknown GAN {gan!r}; allowed: {', '.join(self.gans)}")
        if variant not in self.variants:
            raise ConfigError(
                f"run id {run!r}: unknown variant {variant!r}; allowed: {', '.join(self.variants)}"
            )
        return gan, variant, seed

    def figure_numbers(self) -> list[int]:
        """The figures `ocbench figures` renders: the paper's 2-7, and 8 (beyond the paper: octave
        convolutions with spectral norm or a gradient penalty) when run.gans has such a GAN."""
        return [2, 3, 4, 5, 6, 7] + ([8] if any(self.gans[g].stabilised for g in self.run.gans) else [])

    def dump(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def run_id(gan: str, variant: str, seed: int) -> str:
    return f"{gan}_{variant}_s{seed}"


# --------------------------------------------------------------------------------------------------
# loading


def deep_merge(base: dict, overlay: dict) -> dict:
    """Snakemake's rule: dictionaries merge recursively, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def yaml_typed(value):
    """Snakemake's `--config key=VALUE` reads nested VALUEs with YAML's BaseLoader, all strings
    (`run={seeds: [0, 1]}` gives ['0', '1']); read those strings as YAML proper."""
    if isinstance(value, dict):
        return {k: yaml_typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_typed(v) for v in value]
    if isinstance(value, str) and value:
        return yaml.safe_load(value)
    return value


def apply_set(config: dict, assignment: str) -> dict:
    """`train.epochs=3` -> config["train"]["epochs"] = 3 (the value is parsed as YAML)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected dotted.key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: {text!r} is not a YAML value ({yaml_problem(exc)}); write a "
                          "number, a list like [0, 1], or quote text (e.g. --set 'key=\"@x\"')") from None
    overlay: Any = value
    for part in reversed(key.strip().split(".")):
        overlay = {part: overlay}
    return deep_merge(config, overlay)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong, in one line: 'found character '@' that cannot start any token'."""
    return getattr(exc, "problem", None) or str(exc).splitlines()[0]


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); pass a YAML file, saved as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; make it readable") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def schema_validator():
    """The schema's validator, which also fills in each `default:` of the schema where its key is
    absent, as Snakemake's validate() does (snakemake.utils.validate, set_default=True, after the FAQ
    of jsonschema): so a config loaded by `ocbench` and the one Snakemake merged and wrote to
    results/<config>/config.yaml are the same dictionary."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_defaults})(load_schema())


def validate(raw: dict) -> None:
    """Schema first (types, ranges, names; filling in the schema's defaults), then the
    cross-references a schema cannot express."""
    import jsonschema

    error = jsonschema.exceptions.best_match(schema_validator().iter_errors(raw))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        known = error.schema.get("properties", {})
        if error.validator == "additionalProperties" and error.schema["additionalProperties"] is False:
            # A misspelt key: name it, and the setting it likely means.
            key = next(k for k in error.instance if k not in known)
            prefix = f"{where}." if where else ""
            close = difflib.get_close_matches(key, known, n=1)
            takes = f"{where or 'the top level'} takes {', '.join(known)}"
            hint = f"did you mean {prefix}{close[0]}?" if close else takes
            raise ConfigError(f"config error at {prefix}{key}: no such setting; {hint}")
        raise ConfigError(f"config error at {where or '(top level)'}: {error.message}")

    for where, value in configured_paths(raw):
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ConfigError(f"config error at {where}: {value!r} holds a control character (a newline, a tab, "
                              "an escape: a pasting slip, or an attempt on the workflow's shell commands); "
                              "remove it")
    for gan in raw["run"]["gans"]:
        if gan not in raw["gans"]:
            raise ConfigError(
                f"config error at run.gans: unknown GAN {gan!r}; allowed: {', '.join(raw['gans'])}"
            )
    for variant in raw["run"]["variants"]:
        if variant not in raw["variants"]:
            raise ConfigError(
                f"config error at run.variants: unknown variant {variant!r}; "
                f"allowed: {', '.join(raw['variants'])}"
            )
    for name, gan in raw["gans"].items():
        if gan["loss"] == "hinge" and gan.get("clamp") is not None:
            raise ConfigError(
                f"config error at gans.{name}: loss hinge with clamp {gan['clamp']} conflicts (the clamp "
                "is WGAN's weight clipping); remove clamp, or use loss wgan"
            )
    train = raw["train"]
    if train["arch"] == "resnet":
        if train["init"] != "pytorch":
            raise ConfigError(f"config error at train.init: {train['init']!r} is the paper networks' init; arch "
                              "resnet has SN-GAN's own (Xavier-uniform): set train.init: pytorch")
        for gan in raw["run"]["gans"]:
            if raw["gans"][gan]["d_norm"] != "none":
                raise ConfigError(f"config error at gans.{gan}.d_norm: arch resnet's discriminator has no "
                                  f"normalisation layers (SN-GAN's); set gans.{gan}.d_norm: none")
    for i, ref in enumerate(raw["analysis"]["references"]):
        for key, known in (("gan", raw["gans"]), ("variant", raw["variants"])):
            if ref[key] not in known:
                raise ConfigError(f"config error at analysis.references[{i}].{key}: unknown {key} {ref[key]!r}; "
                                  f"allowed: {', '.join(known)}")
    for name, variant in raw["variants"].items():
        beta = variant["beta"]
        if beta["kind"] == "piecewise":
            knots = beta.get("knots")
            if not knots:
                raise ConfigError(
                    f"config error at variants.{name}.beta.knots: a piecewise schedule needs "
                    "knots [[t, beta_h, beta_l], ...]"
                )
            ts = [k[0] for k in knots]
            if ts != sorted(ts) or len(set(ts)) != len(ts):
                raise ConfigError(
                    f"config error at variants.{name}.beta.knots: t must increase strictly, got {ts}"
                )


# Every config key that names a file or folder (data.sources: each copy of the zip)
PATH_KEYS = [("paths", "results"), ("paths", "figures"), ("data", "images"), ("data", "partition"),
             ("data", "prepared"), ("data", "sources"), ("metrics", "stats"), ("metrics", "weights_dir"),
             ("gpus", "lock_dir")]


def configured_paths(raw: dict):
    """(where, value) of every path the config names."""
    for section, key in PATH_KEYS:
        value = raw.get(section, {}).get(key)
        for k, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(v, str):
                yield f"{section}.{key}" + (f"[{k}]" if k is not None else ""), v


def expand_home(raw: dict) -> dict:
    """`raw` with a leading ~ or ~user of every configured path expanded (os.path.expanduser): a
    literal folder named ~ in the working directory is never what was meant."""
    out = copy.deepcopy(raw)
    for section, key in PATH_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str):
            out[section][key] = os.path.expanduser(value)
        elif isinstance(value, list):
            out[section][key] = [os.path.expanduser(v) if isinstance(v, str) else v for v in value]
    return out


def from_dict(raw: dict) -> Config:
    """Validate a merged dictionary (a copy: its paths' ~ expanded, the schema's defaults filled in)
    and build the dataclasses."""
    raw = expand_home(raw)
    validate(raw)
    gans = {
        name: GanConfig(
            loss=g["loss"],
            optimizer=OptimizerConfig(**{**g["optimizer"], "betas": tuple(g["optimizer"]["betas"])}),
            critic=CriticConfig(**g["critic"]),
            d_norm=g["d_norm"],
            spectral_norm=g["spectral_norm"],
            gradient_penalty=float(g["gradient_penalty"]),
            clamp=g.get("clamp"),
        )
        for name, g in raw["gans"].items()
    }
    return Config(
        name=raw["name"],
        run=RunConfig(**raw["run"]),
        paths=PathsConfig(**raw["paths"]),
        data=DataConfig(**raw["data"]),
        gans=gans,
        variants={name: VariantConfig(**v) for name, v in raw["variants"].items()},
        train=TrainConfig(**raw["train"]),
        gpus=GpusConfig(**raw["gpus"]),
        metrics=MetricsConfig(**raw["metrics"]),
        figures=FiguresConfig(**raw["figures"]),
        log=LogConfig(**raw["log"]),
        analysis=analysis_config(raw["analysis"]),
        raw=raw,
    )


def analysis_config(raw: dict) -> AnalysisConfig:
    return AnalysisConfig(**{**raw, "margins": MarginsConfig(**raw["margins"]),
                             "references": [Reference(**r) for r in raw["references"]]})


def load(files: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """paper.yaml, then each file in `files`, then each `--set` override; validated."""
    raw = read_yaml(BASE_CONFIG)
    for path in files or []:
        raw = deep_merge(raw, read_yaml(path))
    for assignment in overrides or []:
        raw = apply_set(raw, assignment)
    return from_dict(raw)


# --------------------------------------------------------------------------------------------------
# what an output depends on: the settings of a step (the workflow's rules carry their digest as
# params, which Snakemake compares: a job reruns when they change) and a run's protocol (its
# checkpoint, checkpoint.json and run.json record it: a checkpoint resumes, and a run's results count,
# only under the same protocol)

# A run's outputs (metrics.csv, sample grids, snapshots, run.json) depend on its GAN's settings
# (gans.<gan>), its variant's (variants.<variant>), its seed and these; its width is train.width, or
# train.ngf and train.ndf with arch resnet (and its D's form, train.resnet). Not in it, so that a run resumes across them: what only
# changes how fast it goes or how it is watched (train.device, deterministic, data_on_device,
# channels_last, compile, cuda_graphs, checkpoint_minutes; metrics.batch_size and frechet, the same
# numbers by other kernels; log, gpus) and where files are (paths and the data's and weights' files).
RUN_SETTINGS = (
    "data.split", "data.crop", "data.resize", "data.image_size", "data.synthetic",
    "train.epochs", "train.batch_size", "train.latent_dim", "train.init", "train.arch", "train.g_steps",
    "train.snapshot_epochs", "train.grid_size", "train.bf16",
    "metrics.stats_images", "metrics.fid_samples", "metrics.dims", "metrics.pr_k", "metrics.pr_real_samples",
    "metrics.placeholder_weights", "metrics.kid_subsets", "metrics.kid_subset_size", "metrics.kid_real_samples",
    "metrics.fid_inf_points", "metrics.fid_inf_smallest", "metrics.eval_seed", "metrics.final_samples",
    "metrics.final_real_images", "metrics.final_real_seed",
)


def plain(value):
    """A config value as YAML and JSON spell it: dataclasses as mappings, tuples as lists."""
    if hasattr(value, "__dataclass_fields__"):
        value = {name: getattr(value, name) for name in value.__dataclass_fields__ if name != "raw"}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def settings(cfg: Config, keys) -> dict:
    """{dotted key: value} of every setting under `keys` ("figures", "variants.oct", "train.epochs"),
    as the loaded config has them (defaults filled in), mappings flattened to their leaves."""
    out = {}

    def leaves(key, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                leaves(f"{key}.{k}", v)
        else:
            out[key] = value

    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        leaves(key, plain(value))
    return out


def digest(mapping: dict) -> str:
    """A short hash of settings. Numbers count by value (alpha 0 and 0.0 are one setting)."""
    def canonical(v):
        if isinstance(v, dict):
            return {k: canonical(x) for k, x in v.items()}
        if isinstance(v, list):
            return [canonical(x) for x in v]
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    return hashlib.sha256(json.dumps(canonical(mapping), sort_keys=True).encode()).hexdigest()[:16]


def run_protocol(cfg: Config, run: str) -> dict:
    """What a run's outputs depend on, {dotted key: value} (see RUN_SETTINGS)."""
    gan, variant, _ = cfg.parse_run(run)
    widths = ["train.width"] if cfg.train.arch == "dcgan" else ["train.ngf", "train.ndf", "train.resnet"]
    return {"run": run, **settings(cfg, [f"gans.{gan}", f"variants.{variant}", *RUN_SETTINGS, *widths])}


def protocol_fingerprint(cfg: Config, run: str) -> str:
    return digest(run_protocol(cfg, run))


def as_yaml(value) -> str:
    """A value as a `--set key=VALUE` reads it back (YAML flow style)."""
    return value if isinstance(value, str) and yaml.safe_load(value) == value else json.dumps(value)


def protocol_changes(recorded: dict | None, current: dict) -> str:
    """Where a recorded protocol differs from this config's, for a one-line message:
    'variants.oct.alpha 0.5 (this config: 0.25)'. `recorded` None: made before protocols were recorded."""
    if recorded is None:
        return "settings it does not record (an older ocbench made it)"
    missing = object()
    keys = [k for k in {**recorded, **current} if recorded.get(k, missing) != current.get(k, missing)]
    changes = [f"{k} {as_yaml(recorded.get(k, 'absent'))} (this config: {as_yaml(current.get(k, 'absent'))})"
            for k in keys[:4]]
    return ", ".join(changes) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def set_options(recorded: dict, current: dict) -> str:
    """The `--set key=value` options that give this config a recorded protocol back."""
    return " ".join(f"--set {shlex.quote(f'{k}={as_yaml(v)}')}" for k, v in recorded.items()
                    if k != "run" and (k not in current or current[k] != v))
