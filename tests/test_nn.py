"""The octave networks: alpha = 0 is exactly the plain CNN of DESIGN; other alphas build and train."""

import pytest
import torch
from torch import nn

from ocbench.nn import Discriminator, Generator, OctaveConv, split_channels

WIDTH = 8  # narrow networks keep the tests fast; the topology is the same at any width


def plain_generator(d, latent=100):
    layers = [nn.Linear(latent, 16 * d * 16, bias=False), nn.BatchNorm1d(16 * d * 16), nn.ReLU(),
              nn.Unflatten(1, (16 * d, 4, 4))]
    chans = [16 * d, 8 * d, 4 * d, 2 * d, d]
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d, 3, 3, 1, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def plain_discriminator(d):
    layers = []
    chans = [3, d, 2 * d, 4 * d, 8 * d, 16 * d]
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.AvgPool2d(2), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                   nn.LeakyReLU(0.2)]
    layers += [nn.AvgPool2d(2), nn.Conv2d(16 * d, 1, 3, 1, 1, bias=False), nn.AvgPool2d(2), nn.Flatten(0)]
    return nn.Sequential(*layers)


def copy_weights(ours, plain):
    """Both state dicts list the same tensors in the same order; copy ours into the plain net."""
    src, dst = ours.state_dict(), plain.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()]
    plain.load_state_dict(dict(zip(dst.keys(), src.values())))


@pytest.mark.parametrize("init", ["pytorch", "dcgan"])
def test_alpha_zero_generator_is_the_plain_cnn(init):
    torch.manual_seed(0)
    ours, plain = Generator(0.0, WIDTH, init=init), plain_generator(WIDTH)
    copy_weights(ours, plain)
    z = torch.randn(4, 100)
    out_ours, out_plain = ours(z), plain(z)  # train mode: batch statistics
    torch.testing.assert_close(out_ours, out_plain, rtol=0, atol=0)
    out_ours.square().sum().backward()
    out_plain.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    ours.eval(), plain.eval()  # eval mode: the running statistics both nets just updated
    torch.testing.assert_close(ours(z), plain(z), rtol=0, atol=0)


@pytest.mark.parametrize("init", ["pytorch", "dcgan"])
def test_alpha_zero_discriminator_is_the_plain_cnn(init):
    torch.manual_seed(0)
    ours, plain = Discriminator(0.0, WIDTH, init=init), plain_discriminator(WIDTH)
    copy_weights(ours, plain)
    x = torch.randn(4, 3, 128, 128)
    out_ours, out_plain = ours(x), plain(x)
    assert out_ours.shape == (4,)
    torch.testing.assert_close(out_ours, out_plain, rtol=0, atol=0)
    out_ours.sum().backward()
    out_plain.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    ours.eval(), plain.eval()
    torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("alpha", [0.5, 0.99, 1.0])
def test_octave_networks_build_run_and_train(alpha):
    torch.manual_seed(0)
    g, d = Generator(alpha, WIDTH), Discriminator(alpha, WIDTH)
    z = torch.randn(2, 100)
    images = g(z, beta=(0.3, 0.7))
    assert images.shape == (2, 3, 128, 128)
    assert images.abs().max() <= 1
    logits = d(images, beta=(0.3, 0.7))
    assert logits.shape == (2,)
    logits.sum().backward()
    for net in (g, d):
        grads = [p.grad for p in net.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert any(gr.abs().sum() > 0 for gr in grads)


def test_alpha_one_has_no_high_frequency_branches():
    g = Generator(1.0, WIDTH)
    for block in g.blocks:
        assert block.conv.conv_hh is None and block.conv.conv_lh is None and block.bn_h is None
    assert g.out.conv_hh is None and g.out.conv_lh is not None


def test_alpha_zero_has_no_low_frequency_branches():
    d = Discriminator(0.0, WIDTH)
    assert all(b.conv.conv_hl is None and b.conv.conv_ll is None and b.bn_l is None for b in d.blocks)


def test_low_split_at_512_channels_is_506_low_6_high():
    assert split_channels(512, 0.99) == (6, 506)
    conv = OctaveConv(512, 512, 0.99, 0.99)
    assert conv.conv_ll.weight.shape[:2] == (506, 506)
    assert conv.conv_hh.weight.shape[:2] == (6, 6)
    assert conv.conv_lh.weight.shape[:2] == (6, 506)
    assert conv.conv_hl.weight.shape[:2] == (506, 6)


def test_octave_conv_computes_the_four_branch_formula():
    torch.manual_seed(0)
    conv = OctaveConv(8, 6, 0.5, 0.5)
    x_h, x_l = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)
    y_h, y_l = conv((x_h, x_l))
    up = lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3)  # noqa: E731
    pool = lambda t: t.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2))  # noqa: E731
    torch.testing.assert_close(y_h, conv.conv_hh(x_h) + up(conv.conv_lh(x_l)))
    torch.testing.assert_close(y_l, conv.conv_ll(x_l) + conv.conv_hl(pool(x_h)))


def test_beta_weights_the_groups():
    torch.manual_seed(0)
    g = Generator(0.5, WIDTH).eval()
    z = torch.randn(2, 100)
    assert not torch.equal(g(z, beta=(1.0, 1.0)), g(z, beta=(0.5, 1.0)))
    assert torch.equal(g(z), g(z, beta=(1.0, 1.0)))


@pytest.mark.parametrize("alpha", [-0.1, 1.1])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        Generator(alpha, WIDTH)


def test_dcgan_init_draws_conv_weights_from_n_0_002():
    torch.manual_seed(0)
    w = torch.cat([m.weight.flatten() for m in Generator(0.5, 32, init="dcgan").modules()
                   if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
