"""beta schedules pinned against DESIGN's formulas, and the losses and the gradient penalty against their definitions."""

import pytest
import torch

from ocbench import losses, schedules


@pytest.mark.parametrize("epoch", [0, 4, 12, 24, 25, 37, 49])
def test_ramp_is_t_and_one_minus_t(epoch):
    t = (epoch + 1) / 50
    assert schedules.beta({"kind": "ramp"}, epoch, 50) == pytest.approx((t, 1 - t))


@pytest.mark.parametrize("epoch", [0, 4, 12, 23, 24, 25, 37, 49])
def test_combi_follows_the_official_code(epoch):
    t = (epoch + 1) / 50
    beta_h = t + 0.2 if t <= 0.5 else 0.7
    assert schedules.beta({"kind": "combi"}, epoch, 50) == pytest.approx((beta_h, 1 - beta_h))


def test_combi_pinned_values():
    b = lambda e: schedules.beta({"kind": "combi"}, e, 50)  # noqa: E731
    assert b(0) == pytest.approx((0.22, 0.78))
    assert b(24) == pytest.approx((0.7, 0.3))
    assert b(49) == pytest.approx((0.7, 0.3))


def test_constant_and_piecewise():
    from ocbench import config

    assert schedules.beta(config.load().variants["oct"].beta, 3, 10) == (1.0, 1.0)  # the schema's defaults
    assert schedules.beta({"kind": "constant", "beta_h": 0.5, "beta_l": 2.0}, 3, 10) == (0.5, 2.0)
    knots = {"kind": "piecewise", "knots": [[0.0, 0.0, 1.0], [0.5, 1.0, 1.0], [1.0, 1.0, 0.0]]}
    assert schedules.beta(knots, 1, 8) == pytest.approx((0.5, 1.0))  # t = 0.25
    assert schedules.beta(knots, 5, 8) == pytest.approx((1.0, 0.5))  # t = 0.75
    assert schedules.beta(knots, 7, 8) == pytest.approx((1.0, 0.0))


def test_epoch_outside_the_run_is_refused():
    with pytest.raises(ValueError):
        schedules.beta({"kind": "ramp"}, 50, 50)


def test_losses_follow_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    # BCE with logits: -log(sigmoid(x)) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x)
    assert losses.d_loss("dcgan", real, fake) == pytest.approx((sp(-real).mean() + sp(fake).mean()).item())
    assert losses.g_loss("dcgan", fake) == pytest.approx(sp(-fake).mean().item())
    assert losses.d_loss("lsgan", real, fake) == pytest.approx(((1.0 + 4.0) / 2 + (0.25 + 9.0) / 2))
    assert losses.g_loss("lsgan", fake) == pytest.approx((0.25 + 16.0) / 2)
    assert losses.d_loss("wgan", real, fake) == pytest.approx(-(0.5 - (-1.25)))
    assert losses.g_loss("wgan", fake) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.d_loss("gan", real, fake)


def test_wgan_clamp_bounds_every_parameter_including_batchnorm():
    from ocbench.nn import Discriminator

    d = Discriminator(0.5, 8)
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(100)
    losses.clamp_(list(d.parameters()), 0.05)
    assert all(p.abs().max() <= 0.05 for p in d.parameters())
    assert d.blocks[1].bn_h.weight.max().item() == pytest.approx(0.05)  # BatchNorm weights start at 1


def test_hinge_loss_follows_its_definition():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # D: mean relu(1 - D(x)) + mean relu(1 + D(G(z))) = (0 + 2) / 2 + (1.5 + 0) / 2; G: -mean D(G(z))
    assert losses.d_loss("hinge", real, fake) == pytest.approx(1.0 + 0.75)
    assert losses.g_loss("hinge", fake) == pytest.approx(1.25)


def linear_critic(w):
    return lambda x, beta: (x * w).sum((1, 2, 3))  # gradient w for every input


@pytest.mark.parametrize("norm", [0.25, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared(norm):
    torch.manual_seed(0)
    direction = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    w = (norm * direction / direction.norm()).requires_grad_(True)
    real, fake = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 4, 4, dtype=torch.float64)
    eps = losses.interpolation_weights(5, "cpu", torch.Generator().manual_seed(0)).double()
    penalty = losses.gradient_penalty(linear_critic(w), real, fake, (1.0, 1.0), eps)
    assert penalty.item() == pytest.approx((norm - 1.0) ** 2, abs=1e-12)  # zero where the norm is 1
    # Differentiable in the critic's weights, as a loss term must be: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    (grad,) = torch.autograd.grad(penalty, w)
    torch.testing.assert_close(grad, 2 * (norm - 1.0) * w.detach() / norm)


def test_gradient_penalty_is_taken_at_interpolates_drawn_from_the_given_generator():
    """A critic whose gradient is the input itself (D(x) = |x|^2 / 2): the penalty is the mean of
    (|x_hat| - 1)^2 at x_hat = eps real + (1 - eps) fake, eps ~ U[0, 1) per image from `rng`."""
    torch.manual_seed(0)
    real, fake = torch.randn(6, 3, 4, 4, dtype=torch.float64), torch.randn(6, 3, 4, 4, dtype=torch.float64)
    critic = lambda x, beta: 0.5 * x.square().sum((1, 2, 3))  # noqa: E731
    rng = torch.Generator().manual_seed(7)
    penalty = losses.gradient_penalty(critic, real, fake, (1.0, 1.0), losses.interpolation_weights(6, "cpu", rng))
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(7))
    x_hat = eps * real + (1 - eps) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-12)
