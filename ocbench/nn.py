"""Octave convolution and the paper's generator and discriminator (the authors' topology, width d).

A feature map is a pair (x_h, x_l): x_h at full resolution, x_l at half. A layer with c channels
at ratio alpha has c_l = floor(alpha * c) low-frequency and c_h = c - c_l high-frequency channels.
A group with 0 channels is `None`, and a branch whose input or output group is empty does not
exist, so alpha = 0 is exactly a plain CNN (the baseline) and alpha = 1 works too.

    y_h = conv_hh(x_h) + up(conv_lh(x_l))        y_l = conv_ll(x_l) + conv_hl(pool(x_h))

`up` is nearest 2x upsampling and `pool` 2x2 average pooling; every conv is 3x3, padding 1, no bias.
`ARCHS` names the two architectures (`train.arch`): the paper's (`dcgan`, `Generator` and
`Discriminator`) and, beyond the paper, SN-GAN's ResNet at 128 x 128 (`resnet`, `ResNetGenerator` and
`ResNetDiscriminator`, at the end of this file, its D in one of two forms, `RESNET_FORMS`);
`generator` and `discriminator` build either.

The discriminator's normalisation is a setting (`d_norm`, two per layer as the BatchNorms): the paper's
BatchNorm, none, or a per-sample layer norm; `spectral_norm` puts PyTorch's spectral normalisation on
every discriminator conv, each octave branch apart. The generator always uses BatchNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm as hooked_spectral_norm

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


def conv2d(cin: int, cout: int, kernel: int = 3, bias: bool = False) -> nn.Conv2d | None:
    """A kernel x kernel conv keeping the size (padding kernel // 2); None when a side has no channels."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias) if cin and cout else None


def apply(module: nn.Module | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return None if module is None or x is None else module(x)


class OctaveConv(nn.Module):
    """The four-branch octave convolution; `alpha_in = 0` is a single input group (first block).

    `kernel` and `bias` as a plain conv's (the paper's: 3, no bias). With `bias`, each output group has
    one bias, on its same-frequency branch (conv_hh, conv_ll) or, where that branch does not exist,
    on the other one: two biases summed into a group would be one parameter written twice, and at
    alpha = 0 the single conv_hh carries the plain conv's bias.
    """

    def __init__(self, cin: int, cout: int, alpha_in: float, alpha_out: float, kernel: int = 3,
                 bias: bool = False):
        super().__init__()
        in_h, in_l = split_channels(cin, alpha_in)
        out_h, out_l = split_channels(cout, alpha_out)
        self.channels_in, self.channels_out, self.kernel = (in_h, in_l), (out_h, out_l), kernel
        self.conv_hh = conv2d(in_h, out_h, kernel, bias)
        self.conv_hl = conv2d(in_h, out_l, kernel, bias and not in_l)
        self.conv_lh = conv2d(in_l, out_h, kernel, bias and not in_h)
        self.conv_ll = conv2d(in_l, out_l, kernel, bias)

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


# --------------------------------------------------------------------------------------------------
# Beyond the paper: SN-GAN's ResNet for 128 x 128 in octave form (`train.arch: resnet`)
#
# The architecture of Miyato et al. 2018 as mimicry's `sngan_128` implements it, the one its CelebA-128
# table (SNGAN FID 12.93) was measured with. At ratio alpha every conv, the 3x3s and the 1x1 shortcuts,
# is an `OctaveConv` (with bias, as SN-GAN's); BatchNorm, ReLU, resampling and the residual sum act on
# each group; beta weighs each block's output pair. alpha = 0 is exactly the plain ResNet (one group,
# every conv its conv_hh; tests/test_resnet.py builds mimicry's network from torch layers and compares).
#
# The discriminator comes in two forms (`train.resnet`), the same layers and parameters computing two
# functions:
# - `mimicry` (default): what mimicry's code computes, the network behind the number the preset is held
#   against. Its DBlock applies an in-place ReLU (`nn.ReLU(True)`) to the block's input before the
#   residual convs, and the shortcut, evaluated after, reads that rewritten tensor: relu(x), not x
#   (DBlockOptimized, the first block, puts its ReLU after a conv: unaffected). Spectral norm is
#   `torch.nn.utils.spectral_norm`, the hook API mimicry's SNConv2d/SNLinear use: u and v drawn at
#   random when the layer is made, and each training-mode forward v <- normalize(W^T u), then
#   u <- normalize(W v); eval mode uses the stored u, v.
# - `chainer`: SN-GAN's chainer block (pfnet-research/sngan_projection: F.relu makes a new array, the
#   shortcut reads x) with `torch.nn.utils.parametrizations.spectral_norm` (15 power iterations at
#   creation, then u first, v second): the networks ocbench's ResNet had before, kept so that its
#   earlier numbers can be reproduced.
# In octave form the rule holds per group: in `mimicry` each group's shortcut reads that group's relu.

RESNET_FORMS = ("mimicry", "chainer")


def each(f, pair: Pair) -> Pair:
    """`f` applied to each group of a pair; an empty group stays None."""
    return tuple(None if x is None else f(x) for x in pair)


def up_bilinear(x: torch.Tensor) -> torch.Tensor:
    """SN-GAN's 2x upsampling in G's blocks: bilinear, align_corners False (mimicry's, torchvision's)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def pool2(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def add_pair(a: Pair, b: Pair) -> Pair:
    """The residual sum, group by group."""
    return add(a[0], b[0]), add(a[1], b[1])


def weigh(pair: Pair, beta: Beta) -> Pair:
    """The paper's beta-weighting of a block's output pair."""
    return pair if beta is None else (weight(pair[0], beta[0]), weight(pair[1], beta[1]))


class PairBatchNorm(nn.Module):
    """BatchNorm2d on each group of a `channels`-channel map at ratio `alpha`."""

    def __init__(self, channels: int, alpha: float):
        super().__init__()
        high, low = split_channels(channels, alpha)
        self.bn_h = nn.BatchNorm2d(high) if high else None
        self.bn_l = nn.BatchNorm2d(low) if low else None

    def forward(self, x: Pair) -> Pair:
        return apply(self.bn_h, x[0]), apply(self.bn_l, x[1])


SQRT2 = math.sqrt(2.0)


def xavier_(conv: OctaveConv, gain: float) -> None:
    """SN-GAN's Xavier-uniform init of a conv, on every branch, with the fans of the whole (unsplit)
    convolution: a branch's weights are a block of the plain conv's matrix, so each layer starts at the
    plain layer's scale whatever alpha (a branch's own, smaller fans would double the output variance
    at alpha = 0.5). At alpha = 0 it is `nn.init.xavier_uniform_` of the plain conv, draw for draw."""
    area = conv.kernel * conv.kernel
    fan_in, fan_out = sum(conv.channels_in) * area, sum(conv.channels_out) * area
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))  # torch's formula, exactly
    with torch.no_grad():
        for branch in (conv.conv_hh, conv.conv_hl, conv.conv_lh, conv.conv_ll):
            if branch is not None:
                branch.weight.uniform_(-bound, bound)


class ResGenBlock(nn.Module):
    """G's up-block: residual BN, ReLU, 2x bilinear up, conv3x3, BN, ReLU, conv3x3; shortcut 2x up,
    conv1x1; summed per group, then beta. `alpha_in = 0`: a single input group (the first block)."""

    def __init__(self, cin: int, cout: int, alpha_in: float, alpha: float):
        super().__init__()
        self.bn1 = PairBatchNorm(cin, alpha_in)
        self.conv1 = OctaveConv(cin, cout, alpha_in, alpha, 3, bias=True)
        self.bn2 = PairBatchNorm(cout, alpha)
        self.conv2 = OctaveConv(cout, cout, alpha, alpha, 3, bias=True)
        self.shortcut = OctaveConv(cin, cout, alpha_in, alpha, 1, bias=True)
        xavier_(self.conv1, SQRT2), xavier_(self.conv2, SQRT2), xavier_(self.shortcut, 1.0)

    def forward(self, x: Pair, beta: Beta = None) -> Pair:
        h = self.conv1(each(up_bilinear, each(F.relu, self.bn1(x))))
        h = self.conv2(each(F.relu, self.bn2(h)))
        return weigh(add_pair(h, self.shortcut(each(up_bilinear, x))), beta)


class ResDisBlock(nn.Module):
    """D's block: residual ReLU, conv3x3 (to `cin` channels), ReLU, conv3x3, [2x2 avg-pool]; shortcut
    conv1x1 then [pool] where the channels change or it pools, else the identity; summed per group,
    then beta. The shortcut reads the block's input x (`form` chainer) or relu(x) (`form` mimicry: its
    in-place ReLU rewrote x). `first`: SN-GAN's optimised first block, on the image (a single group):
    conv3x3 (to `cout`), ReLU, conv3x3, pool, with the shortcut pool then conv1x1, and no ReLU before."""

    def __init__(self, cin: int, cout: int, alpha_in: float, alpha: float, downsample: bool = True,
                 first: bool = False, form: str = "mimicry"):
        super().__init__()
        hidden = cout if first else cin
        self.first, self.downsample, self.form = first, downsample, form
        self.conv1 = OctaveConv(cin, hidden, alpha_in, alpha, 3, bias=True)
        self.conv2 = OctaveConv(hidden, cout, alpha, alpha, 3, bias=True)
        learnable = first or downsample or cin != cout or alpha_in != alpha
        self.shortcut = OctaveConv(cin, cout, alpha_in, alpha, 1, bias=True) if learnable else None
        xavier_(self.conv1, SQRT2), xavier_(self.conv2, SQRT2)
        if self.shortcut is not None:
            xavier_(self.shortcut, 1.0)

    def forward(self, x: Pair, beta: Beta = None) -> Pair:
        r = x if self.first else each(F.relu, x)
        if self.form == "mimicry":
            x = r  # what mimicry's shortcut reads after its in-place ReLU
        h = self.conv2(each(F.relu, self.conv1(r)))
        if self.downsample:
            h = each(pool2, h)
        if self.first:
            s = self.shortcut(each(pool2, x))
        elif self.shortcut is None:
            s = x
        else:
            s = self.shortcut(x)
            s = each(pool2, s) if self.downsample else s
        return weigh(add_pair(h, s), beta)


class ResNetGenerator(nn.Module):
    """z (N x latent_dim) -> N x 3 x 128 x 128 in [-1, 1]: SN-GAN's ResNet generator, width ngf.

    Linear(latent -> 4 x 4 x ngf) -> five up-blocks ngf -> ngf -> ngf/2 -> ngf/4 -> ngf/8 -> ngf/16
    (`ResGenBlock`, the first on a single group) -> BN, ReLU per group -> output conv3x3 -> 3 merging
    the groups as the paper's output block does (y = conv_hh(x_h) + up(conv_lh(x_l))) -> tanh.
    Xavier-uniform init: gain sqrt(2) for the 3x3 convs, 1 for the shortcuts, the linear layer and the
    output conv; biases keep PyTorch's default.
    """

    def __init__(self, alpha: float, width: int = 1024, latent_dim: int = 128):
        super().__init__()
        self.alpha, self.width, self.latent_dim = alpha, width, latent_dim
        self.fc = nn.Linear(latent_dim, 4 * 4 * width)
        chans = [width, width, width // 2, width // 4, width // 8, width // 16]
        self.blocks = nn.ModuleList(ResGenBlock(cin, cout, 0.0 if i == 0 else alpha, alpha)
                                    for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])))
        self.bn = PairBatchNorm(chans[-1], alpha)
        self.out = OctaveConv(chans[-1], 3, alpha, 0.0, 3, bias=True)
        nn.init.xavier_uniform_(self.fc.weight, 1.0)
        xavier_(self.out, 1.0)

    def forward(self, z: torch.Tensor, beta: Beta = None) -> torch.Tensor:
        pair: Pair = (self.fc(z).view(z.shape[0], self.width, 4, 4), None)
        for block in self.blocks:
            pair = block(pair, beta)
        y, _ = self.out(each(F.relu, self.bn(pair)))
        return torch.tanh(y)


class ResNetDiscriminator(nn.Module):
    """N x 3 x 128 x 128 -> N logits: SN-GAN's ResNet discriminator, width ndf, no normalisation.

    The optimised first block 3 -> ndf/16 (a single input group), blocks ndf/16 -> ndf/8 -> ndf/4 ->
    ndf/2 -> ndf pooling 2x2 and ndf -> ndf without (`ResDisBlock`), ReLU, global sum pooling,
    Linear(ndf -> 1). `spectral_norm`: on every conv branch and on the linear layer. `form`, one of
    `RESNET_FORMS`: what the blocks' shortcuts read and which spectral norm (see above the classes).

    The octave form pools each group and the linear layer reads both, concatenated (ndf features, so
    the same weights as the plain network's at any alpha). The low group is summed over the grid of
    the high one it stands for: each of its positions covers 2 x 2 of the high group's, so its sum
    counts 4 times, as a plain sum over up(x_l) would (the octave convs merge the groups through `up`
    too). A plain sum would shrink the low-frequency features 4-fold against the high ones before a
    spectrally normalised layer, which cannot scale them back up.
    """

    def __init__(self, alpha: float, width: int = 1024, spectral_norm: bool = True, form: str = "mimicry"):
        super().__init__()
        if form not in RESNET_FORMS:
            raise ValueError(f"unknown ResNet form {form!r}; allowed: {', '.join(RESNET_FORMS)}")
        self.alpha, self.width, self.form = alpha, width, form
        chans = [3, width // 16, width // 8, width // 4, width // 2, width, width]
        self.blocks = nn.ModuleList(
            ResDisBlock(cin, cout, 0.0 if i == 0 else alpha, alpha, downsample=i < 5, first=i == 0, form=form)
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])))
        self.fc = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.fc.weight, 1.0)
        if spectral_norm:  # after the init: it normalises the weights the init drew
            apply_spectral_norm = hooked_spectral_norm if form == "mimicry" else parametrizations.spectral_norm
            for layer in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                apply_spectral_norm(layer)

    def forward(self, x: torch.Tensor, beta: Beta = None) -> torch.Tensor:
        pair: Pair = (x, None)
        for block in self.blocks:
            pair = block(pair, beta)
        x_h, x_l = each(F.relu, pair)
        sums = [x_h.sum((2, 3))] if x_h is not None else []
        if x_l is not None:
            sums.append(4.0 * x_l.sum((2, 3)))  # over the high grid: see the docstring
        return self.fc(torch.cat(sums, 1)).squeeze(1)


ARCHS = ("dcgan", "resnet")


def generator(arch: str, alpha: float, width: int, latent_dim: int, init: str = "pytorch") -> nn.Module:
    """The generator of `arch` (`train.arch`) at `alpha`; `init` is the paper network's setting (the
    ResNet has SN-GAN's own)."""
    if arch == "dcgan":
        return Generator(alpha, width, latent_dim, init=init)
    if arch == "resnet":
        return ResNetGenerator(alpha, width, latent_dim)
    raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")


def discriminator(arch: str, alpha: float, width: int, init: str = "pytorch", norm: str = "batch",
                  spectral_norm: bool = False, resnet: str = "mimicry") -> nn.Module:
    """The discriminator of `arch` at `alpha`; `init` and `norm` are the paper network's settings (the
    ResNet's D has no normalisation layers and SN-GAN's init), `resnet` the ResNet's form
    (`RESNET_FORMS`, `train.resnet`)."""
    if arch == "dcgan":
        return Discriminator(alpha, width, init=init, norm=norm, spectral_norm=spectral_norm)
    if arch == "resnet":
        return ResNetDiscriminator(alpha, width, spectral_norm=spectral_norm, form=resnet)
    raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
