"""SN-GAN's ResNet (train.arch: resnet): alpha = 0 is exactly the plain ResNet, written here apart from
torch layers as issue #27 and mimicry's sngan_128 describe it; other alphas build, run and train."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ocbench.nn import ResNetDiscriminator, ResNetGenerator, discriminator, generator

WIDTH = 32  # ngf = ndf = 32: channels 32 -> 2, the topology of 1024 -> 64 at a CPU's cost
LATENT = 128


# --------------------------------------------------------------------------------------------------
# the plain networks, from torch layers


def xavier(layer, gain):
    nn.init.xavier_uniform_(layer.weight, gain)
    return layer


class PlainGBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.b1, self.c1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.b2, self.c2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0)
        xavier(self.c1, math.sqrt(2)), xavier(self.c2, math.sqrt(2)), xavier(self.c_sc, 1.0)

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        h = self.c2(F.relu(self.b2(self.c1(up(F.relu(self.b1(x)))))))
        return h + self.c_sc(up(x))


class PlainG(nn.Module):
    def __init__(self, ngf, nz=LATENT):
        super().__init__()
        self.ngf, self.l1 = ngf, nn.Linear(nz, 4 * 4 * ngf)
        chans = [ngf, ngf, ngf // 2, ngf // 4, ngf // 8, ngf // 16]
        self.blocks = nn.Sequential(*(PlainGBlock(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.b7, self.c7 = nn.BatchNorm2d(chans[-1]), nn.Conv2d(chans[-1], 3, 3, 1, 1)
        xavier(self.l1, 1.0), xavier(self.c7, 1.0)

    def forward(self, z):
        h = self.blocks(self.l1(z).view(len(z), self.ngf, 4, 4))
        return torch.tanh(self.c7(F.relu(self.b7(h))))


class PlainDBlock(nn.Module):
    def __init__(self, cin, cout, downsample=True, optimized=False):
        super().__init__()
        hidden = cout if optimized else cin
        self.optimized, self.downsample = optimized, downsample
        self.c1, self.c2 = nn.Conv2d(cin, hidden, 3, 1, 1), nn.Conv2d(hidden, cout, 3, 1, 1)
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0) if (optimized or downsample or cin != cout) else None
        xavier(self.c1, math.sqrt(2)), xavier(self.c2, math.sqrt(2))
        if self.c_sc is not None:
            xavier(self.c_sc, 1.0)

    def forward(self, x):
        h = self.c2(F.relu(self.c1(x if self.optimized else F.relu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.optimized:
            return h + self.c_sc(F.avg_pool2d(x, 2))
        if self.c_sc is None:
            return h + x
        s = self.c_sc(x)
        return h + (F.avg_pool2d(s, 2) if self.downsample else s)


class PlainD(nn.Module):
    def __init__(self, ndf, sn=True):
        super().__init__()
        chans = [3, ndf // 16, ndf // 8, ndf // 4, ndf // 2, ndf, ndf]
        self.blocks = nn.Sequential(*(PlainDBlock(a, b, downsample=i < 5, optimized=i == 0)
                                      for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))))
        self.l7 = xavier(nn.Linear(ndf, 1), 1.0)
        if sn:
            for layer in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                spectral_norm(layer)

    def forward(self, x):
        return self.l7(F.relu(self.blocks(x)).sum((2, 3))).squeeze(1)


def same_tensors(ours, plain):
    """Both state dicts hold the same tensors, in the same order, with the same values."""
    a, b = list(ours.state_dict().values()), list(plain.state_dict().values())
    assert [t.shape for t in a] == [t.shape for t in b]
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# --------------------------------------------------------------------------------------------------


def test_alpha_zero_generator_is_the_plain_resnet_draw_for_draw():
    torch.manual_seed(0)
    ours = ResNetGenerator(0.0, WIDTH, LATENT)
    torch.manual_seed(0)
    plain = PlainG(WIDTH)
    same_tensors(ours, plain)  # the same parameters, initialised by the same draws
    z = torch.randn(4, LATENT)
    out_ours, out_plain = ours(z), plain(z)  # train mode: batch statistics
    torch.testing.assert_close(out_ours, out_plain, rtol=0, atol=0)
    out_ours.square().sum().backward()
    out_plain.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    ours.eval(), plain.eval()
    torch.testing.assert_close(ours(z), plain(z), rtol=0, atol=0)


@pytest.mark.parametrize("sn", [True, False])
def test_alpha_zero_discriminator_is_the_plain_resnet_draw_for_draw(sn):
    torch.manual_seed(0)
    ours = ResNetDiscriminator(0.0, WIDTH, spectral_norm=sn)
    torch.manual_seed(0)
    plain = PlainD(WIDTH, sn=sn)
    same_tensors(ours, plain)  # spectral norm's u and v vectors too
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    for _ in range(2):  # training mode: each forward runs a power iteration of spectral norm
        torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=0)
    ours(x).sum().backward()
    plain(x).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("alpha", [0.5, 0.99, 1.0])
def test_octave_resnets_build_run_and_keep_the_plain_parameter_count(alpha):
    torch.manual_seed(0)
    G, D = generator("resnet", alpha, WIDTH, LATENT), discriminator("resnet", alpha, WIDTH, spectral_norm=True)
    G0, D0 = ResNetGenerator(0.0, WIDTH, LATENT), ResNetDiscriminator(0.0, WIDTH)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(G), count(D)) == (count(G0), count(D0))  # every conv split four ways, one bias a group
    beta = torch.tensor([0.7, 0.3])
    images = G(torch.randn(3, LATENT), beta)
    assert images.shape == (3, 3, 128, 128) and images.abs().max() <= 1
    logits = D(images, beta)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


def test_beta_weighs_every_block_and_one_one_is_no_weighting():
    torch.manual_seed(0)
    G = ResNetGenerator(0.5, WIDTH, LATENT).eval()
    z = torch.randn(2, LATENT)
    torch.testing.assert_close(G(z, torch.ones(2)), G(z), rtol=0, atol=0)
    assert not torch.allclose(G(z, torch.tensor([1.0, 0.5])), G(z))


def test_the_full_width_networks_have_sngan_128s_shapes():
    """ngf = ndf = 1024 on the meta device (shapes, no arithmetic): 128 x 128 out, one logit in."""
    with torch.device("meta"):
        for alpha in (0.0, 0.5):
            G, D = ResNetGenerator(alpha, 1024, 128), ResNetDiscriminator(alpha, 1024)
            assert [b.conv1.channels_in[0] + b.conv1.channels_in[1] for b in G.blocks] == [1024, 1024, 512, 256, 128]
            assert G(torch.empty(2, 128)).shape == (2, 3, 128, 128)
            assert D(torch.empty(2, 3, 128, 128)).shape == (2,)
