"""Octave convolution and the paper's generator and discriminator (the authors' topology, width d).

A feature map is a pair (x_h, x_l): x_h at full resolution, x_l at half. A layer with c channels
at ratio alpha has c_l = floor(alpha * c) low-frequency and c_h = c - c_l high-frequency channels.
A group with 0 channels is `None`, and a branch whose input or output group is empty does not
exist, so alpha = 0 is exactly a plain CNN (the baseline) and alpha = 1 works too.

    y_h = conv_hh(x_h) + up(conv_lh(x_l))        y_l = conv_ll(x_l) + conv_hl(pool(x_h))

`up` is nearest 2x upsampling and `pool` 2x2 average pooling; every conv is 3x3, padding 1, no bias.

The discriminator's normalisation is a setting (`d_norm`, two per layer as the BatchNorms): the paper's
BatchNorm, none, or a per-sample layer norm; `spectral_norm` puts PyTorch's spectral normalisation on
every discriminator conv, each octave branch apart. The generator always uses BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

Pair = tuple["torch.Tensor | None", "torch.Tensor | None"]
# (beta_H, beta_L) as two floats or a 2-element tensor (training's, updated in place every epoch);
# None: no weighting, the same as (1, 1).
Beta = "tuple[float, float] | torch.Tensor | None"


def split_channels(channels: int, alpha: float) -> tuple[int, int]:
    """(high, low) channel counts: c_l = floor(alpha * c), as the authors' int(alpha * c)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    low = int(alpha * channels)
    return channels - low, low


def up(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else F.interpolate(x, scale_factor=2.0, mode="nearest")


def pool(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else F.avg_pool2d(x, 2)


def add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def conv3x3(cin: int, cout: int) -> nn.Conv2d | None:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False) if cin and cout else None


def apply(module: nn.Module | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return None if module is None or x is None else module(x)


class OctaveConv(nn.Module):
    """The four-branch octave convolution; `alpha_in = 0` is a single input group (first block)."""

    def __init__(self, cin: int, cout: int, alpha_in: float, alpha_out: float):
        super().__init__()
        in_h, in_l = split_channels(cin, alpha_in)
        out_h, out_l = split_channels(cout, alpha_out)
        self.channels_out = (out_h, out_l)
        self.conv_hh = conv3x3(in_h, out_h)
        self.conv_hl = conv3x3(in_h, out_l)
        self.conv_lh = conv3x3(in_l, out_h)
        self.conv_ll = conv3x3(in_l, out_l)

    def forward(self, x: Pair) -> Pair:
        x_h, x_l = x
        y_h = add(apply(self.conv_hh, x_h), up(apply(self.conv_lh, x_l)))
        y_l = add(apply(self.conv_ll, x_l), apply(self.conv_hl, pool(x_h)))
        return y_h, y_l


NORMS = ("batch", "none", "layer")


def norm2d(kind: str, channels: int) -> nn.Module | None:
    """The normalisation of one octave group: `batch` (the paper's), `none`, or `layer`: each sample
    normalised over its C x H x W with a per-channel affine, i.e. GroupNorm with one group (what
    Gulrajani et al. 2017 recommend for a critic with a gradient penalty, which BatchNorm breaks)."""
    if kind not in NORMS:
        raise ValueError(f"unknown normalisation {kind!r}; allowed: {', '.join(NORMS)}")
    if not channels:
        return None  # no group, no norm
    if kind == "none":
        return nn.Identity()
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(1, channels)


class OctaveBlock(nn.Module):
    """Resample both groups, octave conv, normalisation and activation per group, beta-weighting.

    `resample` is `up` (generator) or `pool` (discriminator: "stride 2" pools both inputs first).
    """

    def __init__(self, cin, cout, alpha_in, alpha_out, resample, activation, norm: str = "batch"):
        super().__init__()
        self.resample = resample
        self.conv = OctaveConv(cin, cout, alpha_in, alpha_out)
        out_h, out_l = self.conv.channels_out
        # named bn_* whatever the kind, so that the default networks keep their checkpoint keys
        self.bn_h = norm2d(norm, out_h)
        self.bn_l = norm2d(norm, out_l)
        self.act = activation

    def forward(self, x: Pair, beta: Beta = None) -> Pair:
        y_h, y_l = self.conv((self.resample(x[0]), self.resample(x[1])))
        y_h = apply(self.act, apply(self.bn_h, y_h))
        y_l = apply(self.act, apply(self.bn_l, y_l))
        if beta is None:
            return y_h, y_l
        return weight(y_h, beta[0]), weight(y_l, beta[1])


def weight(x: torch.Tensor | None, beta: float | torch.Tensor) -> torch.Tensor | None:
    # x * 1.0 is exact, so skipping it changes nothing but the work done. A tensor beta is always
    # multiplied: reading its value would make the host wait for the device.
    if x is None or (isinstance(beta, (int, float)) and beta == 1.0):
        return x
    return x * beta


def init_weights(module: nn.Module, scheme: str) -> None:
    """`pytorch`: leave PyTorch's defaults (what the paper's runs used: the official init_weights
    looped over parameters instead of modules and never fired). `dcgan`: N(0, 0.02) weights."""
    if scheme == "pytorch":
        return
    if scheme != "dcgan":
        raise ValueError(f"unknown init {scheme!r}; allowed: pytorch, dcgan")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (N x latent_dim) -> N x 3 x 128 x 128 in [-1, 1].

    Linear -> BN1d -> ReLU -> 16d x 4 x 4; four blocks 16d -> 8d -> 4d -> 2d -> d (up, octave conv,
    BN, ReLU, beta); output block d -> 3: up, y = conv_hh(x_h) + up(conv_lh(x_l)), tanh.
    """

    def __init__(self, alpha: float, width: int = 32, latent_dim: int = 100, init: str = "pytorch"):
        super().__init__()
        d = width
        self.alpha, self.width, self.latent_dim = alpha, width, latent_dim
        self.fc = nn.Linear(latent_dim, 16 * d * 4 * 4, bias=False)
        self.bn0 = nn.BatchNorm1d(16 * d * 4 * 4)
        chans = [16 * d, 8 * d, 4 * d, 2 * d, d]
        self.blocks = nn.ModuleList(
            OctaveBlock(cin, cout, 0.0 if i == 0 else alpha, alpha, up, nn.ReLU())
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.out = OctaveConv(d, 3, alpha, 0.0)
        init_weights(self, init)

    def forward(self, z: torch.Tensor, beta: Beta = None) -> torch.Tensor:
        x = F.relu(self.bn0(self.fc(z))).view(z.shape[0], 16 * self.width, 4, 4)
        pair: Pair = (x, None)
        for block in self.blocks:
            pair = block(pair, beta)
        y, _ = self.out((up(pair[0]), up(pair[1])))
        return torch.tanh(y)


class Discriminator(nn.Module):
    """N x 3 x 128 x 128 -> N logits.

    Five blocks 3 -> d -> 2d -> 4d -> 8d -> 16d, all stride 2 (pool both groups, octave conv, `norm`,
    LeakyReLU(0.2), beta); output block 16d -> 1, stride 2: pool both groups, then
    y = pool(conv_hh(x_h)) + conv_lh(x_l), which is 1 x 1: one logit. `spectral_norm`: every conv
    weight (each branch, as an out x in*3*3 matrix) divided by its largest singular value, estimated
    by one power iteration per forward pass in training mode (Miyato et al. 2018).
    """

    def __init__(self, alpha: float, width: int = 32, init: str = "pytorch", norm: str = "batch",
                 spectral_norm: bool = False):
        super().__init__()
        d = width
        self.alpha, self.width = alpha, width
        chans = [3, d, 2 * d, 4 * d, 8 * d, 16 * d]
        self.blocks = nn.ModuleList(
            OctaveBlock(cin, cout, 0.0 if i == 0 else alpha, alpha, pool, nn.LeakyReLU(0.2), norm)
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.out = OctaveConv(16 * d, 1, alpha, 0.0)
        init_weights(self, init)
        if spectral_norm:  # after the init: it reparametrises the weights the init drew
            for conv in [m for m in self.modules() if isinstance(m, nn.Conv2d)]:
                parametrizations.spectral_norm(conv)

    def forward(self, x: torch.Tensor, beta: Beta = None) -> torch.Tensor:
        pair: Pair = (x, None)
        for block in self.blocks:
            pair = block(pair, beta)
        x_h, x_l = pool(pair[0]), pool(pair[1])
        # pool(conv_hh(x_h) + up(conv_lh(x_l))) without the upsampling: avg-pooling a nearest
        # upsample is the identity, so the low branch is already at the output's 1 x 1.
        y = add(pool(apply(self.out.conv_hh, x_h)), apply(self.out.conv_lh, x_l))
        return y.flatten(1).squeeze(1)
