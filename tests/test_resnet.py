"""SN-GAN's ResNet (train.arch: resnet). At alpha = 0 the networks are mimicry's SNGAN-128 as its code
runs (a reference written here from torch layers after mimicry's published files): the same forward in
train and eval mode and the same training, step for step. The `chainer` form of D is the plain ResNet
of SN-GAN's chainer code, written here apart too, initialised draw for draw as ours; other alphas build,
run and train, and apply mimicry's rule to each group."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ocbench import config as config_mod
from ocbench.config import REPO_ROOT
from ocbench.nn import ResNetDiscriminator, ResNetGenerator, discriminator, generator
from ocbench.train import build_step

WIDTH = 32  # ngf = ndf = 32: channels 32 -> 2, the topology of 1024 -> 64 at a CPU's cost
LATENT = 128


# --------------------------------------------------------------------------------------------------
# mimicry's SNGAN-128 as its code computes it, from torch layers: kwotsin/mimicry's
# nets/sngan/sngan_128.py (ResNetGenerator128, ResNetDiscriminator128), modules/resblocks.py (GBlock,
# DBlock, DBlockOptimized), modules/layers.py (SNConv2d, SNLinear: torch.nn.utils.spectral_norm, the
# hook API, wrapped around the layer when it is made) and nets/gan/gan.py with nets/modules/losses.py
# (each network's train_step, the hinge loss). Every ReLU is mimicry's `nn.ReLU(True)`, in place.


def sn(layer):
    return torch.nn.utils.spectral_norm(layer)


def up2(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class MimicryGBlock(nn.Module):  # GBlock(cin, cout, upsample=True)
    def __init__(self, cin, cout):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, padding=1), nn.Conv2d(cout, cout, 3, 1, padding=1)
        self.b1, self.b2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.c1.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c2.weight.data, math.sqrt(2.0))
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, padding=0)  # upsampling: always a learnable shortcut
        nn.init.xavier_uniform_(self.c_sc.weight.data, 1.0)

    def residual(self, x):
        h = self.activation(self.b1(x))
        h = self.c1(up2(h))
        return self.c2(self.activation(self.b2(h)))

    def forward(self, x):
        return self.residual(x) + self.c_sc(up2(x))


class MimicryG(nn.Module):  # ResNetGenerator128
    def __init__(self, ngf, nz=LATENT):
        super().__init__()
        self.l1 = nn.Linear(nz, 4 * 4 * ngf)
        self.block2 = MimicryGBlock(ngf, ngf)
        self.block3 = MimicryGBlock(ngf, ngf >> 1)
        self.block4 = MimicryGBlock(ngf >> 1, ngf >> 2)
        self.block5 = MimicryGBlock(ngf >> 2, ngf >> 3)
        self.block6 = MimicryGBlock(ngf >> 3, ngf >> 4)
        self.b7, self.c7 = nn.BatchNorm2d(ngf >> 4), nn.Conv2d(ngf >> 4, 3, 3, 1, padding=1)
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.l1.weight.data, 1.0)
        nn.init.xavier_uniform_(self.c7.weight.data, 1.0)

    def forward(self, z):
        h = self.l1(z).view(z.shape[0], -1, 4, 4)
        for block in (self.block2, self.block3, self.block4, self.block5, self.block6):
            h = block(h)
        return torch.tanh(self.c7(self.activation(self.b7(h))))


class MimicryDBlock(nn.Module):  # DBlock(cin, cout, downsample), spectral norm on
    def __init__(self, cin, cout, downsample):
        super().__init__()
        self.downsample, self.learnable_sc = downsample, cin != cout or downsample
        self.c1, self.c2 = sn(nn.Conv2d(cin, cin, 3, 1, 1)), sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.c1.weight.data, math.sqrt(2.0))  # the hook's `weight` shares weight_orig's storage
        nn.init.xavier_uniform_(self.c2.weight.data, math.sqrt(2.0))
        if self.learnable_sc:
            self.c_sc = sn(nn.Conv2d(cin, cout, 1, 1, 0))
            nn.init.xavier_uniform_(self.c_sc.weight.data, 1.0)

    def residual(self, x):
        h = x
        h = self.activation(h)  # in place: x itself becomes relu(x)
        h = self.c2(self.activation(self.c1(h)))
        return F.avg_pool2d(h, 2) if self.downsample else h

    def shortcut(self, x):
        if not self.learnable_sc:
            return x
        x = self.c_sc(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)  # left to right: the shortcut reads the rewritten x


class MimicryDBlockOptimized(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1, self.c2 = sn(nn.Conv2d(cin, cout, 3, 1, 1)), sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.c_sc = sn(nn.Conv2d(cin, cout, 1, 1, 0))
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.c1.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c2.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c_sc.weight.data, 1.0)

    def forward(self, x):
        h = F.avg_pool2d(self.c2(self.activation(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class MimicryD(nn.Module):  # ResNetDiscriminator128
    def __init__(self, ndf):
        super().__init__()
        self.block1 = MimicryDBlockOptimized(3, ndf >> 4)
        self.block2 = MimicryDBlock(ndf >> 4, ndf >> 3, downsample=True)
        self.block3 = MimicryDBlock(ndf >> 3, ndf >> 2, downsample=True)
        self.block4 = MimicryDBlock(ndf >> 2, ndf >> 1, downsample=True)
        self.block5 = MimicryDBlock(ndf >> 1, ndf, downsample=True)
        self.block6 = MimicryDBlock(ndf, ndf, downsample=False)
        self.l7 = sn(nn.Linear(ndf, 1))
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.l7.weight.data, 1.0)

    def forward(self, x):
        h = x
        for block in (self.block1, self.block2, self.block3, self.block4, self.block5, self.block6):
            h = block(h)
        return self.l7(torch.sum(self.activation(h), dim=(2, 3)))  # N x 1


def mimicry_d_step(G, D, opt_d, real, z):
    """BaseDiscriminator.train_step with the hinge loss; mimicry draws z inside, here it is given."""
    D.zero_grad()
    output_real = D(real)
    output_fake = D(G(z).detach())
    loss = F.relu(1.0 - output_real).mean() + F.relu(1.0 + output_fake).mean()
    loss.backward()
    opt_d.step()
    return loss.detach()


def mimicry_g_step(G, D, opt_g, z):
    """BaseGenerator.train_step with the hinge loss."""
    G.zero_grad()
    loss = -D(G(z)).mean()
    loss.backward()
    opt_g.step()
    return loss.detach()


LAYERS = {"l1": "fc", "b7": "bn.bn_h", "c7": "out.conv_hh", "l7": "fc", "c1": "conv1.conv_hh",
          "c2": "conv2.conv_hh", "c_sc": "shortcut.conv_hh", "b1": "bn1.bn_h", "b2": "bn2.bn_h"}
PARAMETRIZED = {"weight_orig": "parametrizations.weight.original", "weight_u": "parametrizations.weight.0._u",
                "weight_v": "parametrizations.weight.0._v"}


def by_meaning(theirs: nn.Module, ours: nn.Module) -> dict[str, str]:
    """Each tensor of mimicry's network -> the name of the tensor of ours at alpha = 0 that means the
    same: its blocks count from 2 (G) or 1 (D), ours from 0; one group, so every conv is its conv_hh and
    every BatchNorm its bn_h. Spectral norm's tensors (weight_orig, weight_u, weight_v) keep their
    names in our mimicry form and are the parametrization's in the chainer form."""
    first = 2 if isinstance(theirs, MimicryG) else 1
    names = {}
    for name in theirs.state_dict():
        parts = name.split(".")
        if parts[0].startswith("block"):
            parts[0] = f"blocks.{int(parts[0][5:]) - first}"
        if getattr(ours, "form", "mimicry") == "chainer" and parts[-1] in PARAMETRIZED:
            parts[-1] = PARAMETRIZED[parts[-1]]
        names[name] = ".".join(LAYERS.get(part, part) for part in parts)
    return names


def copy_by_meaning(theirs: nn.Module, ours: nn.Module) -> None:
    """Every tensor of mimicry's network (weights, biases, BatchNorm statistics, spectral norm's u and
    v) into ours; strict: none left over on either side."""
    names, state = by_meaning(theirs, ours), theirs.state_dict()
    ours.load_state_dict({names[k]: t.clone() for k, t in state.items()}, strict=True)


def assert_same_state(ours: nn.Module, theirs: nn.Module, atol: float = 1e-6) -> None:
    """Every tensor of the two networks (parameters and buffers), matched by meaning, equal to `atol`."""
    names, mine = by_meaning(theirs, ours), ours.state_dict()
    for name, tensor in theirs.state_dict().items():
        torch.testing.assert_close(mine[names[name]], tensor, rtol=0, atol=atol, msg=name)


# --------------------------------------------------------------------------------------------------
# SN-GAN's chainer ResNet (the `chainer` form of D), from torch layers


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


PRESET = REPO_ROOT / "workflow" / "config" / "sngan-resnet.yaml"


def mimicrys_and_ours(form: str = "mimicry"):
    """mimicry's G and D at width WIDTH and ours at alpha = 0 holding the same tensors."""
    torch.manual_seed(0)
    G_ref, D_ref = MimicryG(WIDTH), MimicryD(WIDTH)
    G, D = ResNetGenerator(0.0, WIDTH, LATENT), ResNetDiscriminator(0.0, WIDTH, form=form)
    copy_by_meaning(G_ref, G), copy_by_meaning(D_ref, D)
    return G, D, G_ref, D_ref


def test_alpha_zero_networks_compute_mimicrys_sngan_128_in_train_and_eval_mode(form="mimicry"):
    G, D, G_ref, D_ref = mimicrys_and_ours(form)
    z, x = torch.randn(4, LATENT), torch.rand(4, 3, 128, 128) * 2 - 1
    # Training mode: BatchNorm on batch statistics (its running ones updated), and every spectral norm
    # runs one power iteration a forward pass, from u and v as they were drawn at random.
    torch.testing.assert_close(G(z), G_ref(z), rtol=0, atol=1e-6)
    for _ in range(3):
        torch.testing.assert_close(D(x), D_ref(x.clone()).squeeze(1), rtol=0, atol=1e-6)
    assert_same_state(G, G_ref), assert_same_state(D, D_ref)  # running statistics, u and v after the passes
    # Evaluation mode: running statistics, and the stored u and v with no iteration.
    for net in (G, D, G_ref, D_ref):
        net.eval()
    torch.testing.assert_close(G(z), G_ref(z), rtol=0, atol=1e-6)
    torch.testing.assert_close(D(x), D_ref(x.clone()).squeeze(1), rtol=0, atol=1e-6)
    assert_same_state(D, D_ref)


def test_alpha_zero_networks_train_as_mimicrys_step_for_step(form="mimicry"):
    """The preset's GAN (hinge loss, Adam 2e-4 with betas (0, 0.9), 2 D steps per G step) through our
    TrainingStep, against mimicry's train_step of each network on the same batches and latents, in our
    order: a D step on every batch, a G step after it on every second (mimicry's Trainer runs G, D, D
    each step: the same steps, its D steps one earlier). Losses and every tensor equal after each."""
    cfg = config_mod.load([PRESET], [f"train.ngf={WIDTH}", f"train.ndf={WIDTH}", "train.batch_size=2",
                                     f"train.resnet={form}"])
    gan = cfg.gans["sngan"]
    assert (gan.loss, gan.optimizer.lr, gan.optimizer.betas, gan.critic.n) == ("hinge", 2e-4, (0.0, 0.9), 2)
    G, D, G_ref, D_ref = mimicrys_and_ours(form)
    step = build_step(G, D, gan, cfg.train, torch.device("cpu"), torch.Generator().manual_seed(1))
    opt_g = torch.optim.Adam(G_ref.parameters(), 2e-4, betas=(0.0, 0.9))  # mimicry's SNGAN examples'
    opt_d = torch.optim.Adam(D_ref.parameters(), 2e-4, betas=(0.0, 0.9))
    noise = torch.Generator().manual_seed(1)  # the latents our step draws, in its order
    batches = torch.rand(6, 2, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    g_updates = 0
    for i, real in enumerate(batches):
        g_turn = gan.critic.g_turn(i, g_updates)
        loss_d, loss_g = step(real, None, g_turn)
        theirs = mimicry_d_step(G_ref, D_ref, opt_d, real, torch.randn(2, LATENT, generator=noise))
        torch.testing.assert_close(loss_d, theirs, rtol=0, atol=1e-6)
        if g_turn:
            g_updates += 1
            theirs = mimicry_g_step(G_ref, D_ref, opt_g, torch.randn(2, LATENT, generator=noise))
            torch.testing.assert_close(loss_g, theirs, rtol=0, atol=1e-6)
        assert_same_state(G, G_ref), assert_same_state(D, D_ref)
    assert g_updates == 3


def test_at_every_alpha_mimicrys_shortcut_reads_each_groups_relu():
    """The octave form applies mimicry's rule per group: mimicry's block minus the chainer block (the
    same weights) is relu(x) - x in each group where the shortcut is the identity (the last block), and
    the shortcut conv of relu(x) minus that of x, pooled, where it is learnt."""
    torch.manual_seed(0)
    ours = ResNetDiscriminator(0.5, WIDTH, spectral_norm=False)
    torch.manual_seed(0)
    chainer = ResNetDiscriminator(0.5, WIDTH, spectral_norm=False, form="chainer")
    for index, channels, size in ((5, WIDTH, 8), (1, WIDTH // 16, 64)):
        half = channels // 2
        x = (torch.randn(2, channels - half, size, size), torch.randn(2, half, size // 2, size // 2))
        mimicry_out, chainer_out = ours.blocks[index](x), chainer.blocks[index](x)
        if index == 5:
            expected = [F.relu(t) - t for t in x]
        else:
            shortcut = ours.blocks[index].shortcut
            expected = [F.avg_pool2d(a - b, 2) for a, b in zip(shortcut(tuple(F.relu(t) for t in x)), shortcut(x))]
        for m, c, e in zip(mimicry_out, chainer_out, expected):
            torch.testing.assert_close(m - c, e, rtol=1e-5, atol=1e-5)


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
def test_alpha_zero_chainer_discriminator_is_the_plain_resnet_draw_for_draw(sn):
    torch.manual_seed(0)
    ours = ResNetDiscriminator(0.0, WIDTH, spectral_norm=sn, form="chainer")
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
