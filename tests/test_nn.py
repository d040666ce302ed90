"""The octave networks: alpha = 0 is exactly the plain CNN of DESIGN; other alphas build and train."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

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


def plain_discriminator(d, batch_norm=True, sn=False):
    conv = (lambda *a: spectral_norm(nn.Conv2d(*a, bias=False))) if sn else (lambda *a: nn.Conv2d(*a, bias=False))
    layers = []
    chans = [3, d, 2 * d, 4 * d, 8 * d, 16 * d]
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.AvgPool2d(2), conv(cin, cout, 3, 1, 1), *([nn.BatchNorm2d(cout)] if batch_norm else []),
                   nn.LeakyReLU(0.2)]
    layers += [nn.AvgPool2d(2), conv(16 * d, 1, 3, 1, 1), nn.AvgPool2d(2), nn.Flatten(0)]
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


# --------------------------------------------------------------------------------------------------
# the discriminator's normalisation and spectral norm (SN-GAN, WGAN-GP)


def branch_convs(d: Discriminator) -> list[nn.Conv2d]:
    """Every branch of every octave conv of D, the output layer's included (a branch that does not
    exist is None)."""
    convs = [b.conv for b in d.blocks] + [d.out]
    return [c for o in convs for c in (o.conv_hh, o.conv_hl, o.conv_lh, o.conv_ll) if c is not None]


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_spectral_norm_scales_every_branch_weight_to_largest_singular_value_one(alpha):
    torch.manual_seed(0)
    d = Discriminator(alpha, WIDTH, norm="none", spectral_norm=True)
    convs = branch_convs(d)
    assert len(convs) == (6 if alpha == 0 else 20)  # 5 blocks + output; with two groups 2 + 4*4 + 2
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert len([m for m in d.modules() if isinstance(m, nn.Conv2d)]) == len(convs)
    # In training mode every read of a weight (once per forward) runs one power iteration. Random
    # initial weights have close top singular values, so the estimate needs a few hundred iterations
    # here (in training, u carries over from step to step while the weights change slowly).
    with torch.no_grad():
        for conv in convs:
            for _ in range(300):
                conv.weight
    d.eval()  # the normalised weight from the u, v those iterations left
    for conv in convs:
        matrix = lambda w: w.reshape(w.shape[0], -1)  # noqa: E731  out x in*3*3
        assert torch.linalg.matrix_norm(matrix(conv.weight), 2).item() == pytest.approx(1.0, abs=1e-3)
        raw = conv.parametrizations.weight.original
        assert abs(torch.linalg.matrix_norm(matrix(raw), 2).item() - 1.0) > 0.05  # SN did the work


@pytest.mark.parametrize("batch_norm", [False, True])
def test_alpha_zero_spectral_norm_discriminator_is_the_plain_cnn_with_spectral_norm(batch_norm):
    torch.manual_seed(0)
    ours = Discriminator(0.0, WIDTH, norm="batch" if batch_norm else "none", spectral_norm=True)
    plain = plain_discriminator(WIDTH, batch_norm=batch_norm, sn=True)
    copy_weights(ours, plain)  # the raw weights and the power iteration's u and v
    x = torch.randn(4, 3, 128, 128)
    out_ours, out_plain = ours(x), plain(x)  # train mode: one power iteration each
    torch.testing.assert_close(out_ours, out_plain, rtol=0, atol=0)
    out_ours.sum().backward()
    out_plain.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    ours.eval(), plain.eval()  # eval mode: the u, v both nets just updated
    torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.99, 1.0])
def test_d_norm_none_and_layer_build_run_and_are_per_sample(norm, alpha):
    torch.manual_seed(0)
    d = Discriminator(alpha, WIDTH, norm=norm)
    norms = [m for m in d.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    groups = sum(c > 0 for b in d.blocks for c in b.conv.channels_out)  # one norm per non-empty group
    if norm == "none":
        assert norms == []
    else:
        assert len(norms) == groups and all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in norms)
    x = torch.randn(3, 3, 128, 128)
    logits = d(x, beta=(0.3, 0.7))
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    # Unlike BatchNorm in training mode, an image's logit does not depend on the rest of the batch
    # (what a per-sample gradient penalty needs).
    torch.testing.assert_close(d(x[:1], beta=(0.3, 0.7)), logits[:1], rtol=1e-5, atol=1e-6)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_batch_norm_discriminator_depends_on_the_batch():
    """The counterpart of the per-sample check above: it can tell BatchNorm apart."""
    torch.manual_seed(0)
    d, x = Discriminator(0.5, WIDTH), torch.randn(3, 3, 128, 128)
    assert not torch.allclose(d(x[:2]), d(x)[:2], rtol=1e-3, atol=1e-4)


def test_default_discriminator_keeps_its_checkpoint_keys():
    """Checkpoints of the paper's GANs written before d_norm and spectral_norm existed still load."""
    keys = set(Discriminator(0.5, WIDTH).state_dict())
    assert {"blocks.1.bn_h.weight", "blocks.1.bn_l.running_var", "blocks.1.conv.conv_lh.weight",
            "out.conv_lh.weight"} <= keys
    assert not any("parametrizations" in k for k in keys)
