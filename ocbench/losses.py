"""The GAN objectives on D's raw output (one logit per image), the WGAN weight clamp and the WGAN-GP
gradient penalty.

dcgan, lsgan and wgan are the paper's three; hinge is SN-GAN's (Miyato et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("dcgan", "lsgan", "wgan", "hinge")


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from the logits of a real batch and of a (detached) fake batch."""
    if kind == "dcgan":
        return F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    if kind == "lsgan":
        return ((real - 1) ** 2).mean() + (fake**2).mean()
    if kind == "wgan":
        return -(real.mean() - fake.mean())
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's logits on G(z); DCGAN's is the non-saturating one."""
    if kind == "dcgan":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    if kind in ("wgan", "hinge"):
        return -fake.mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


@torch.no_grad()
def clamp_(params: list[torch.Tensor], bound: float) -> None:
    """WGAN's Lipschitz constraint: every D parameter (BatchNorm's too) into [-bound, bound], as two
    foreach operations over all of them rather than two kernels per tensor."""
    torch._foreach_clamp_min_(params, -bound)
    torch._foreach_clamp_max_(params, bound)


def interpolation_weights(batch_size: int, device, rng: torch.Generator) -> torch.Tensor:
    """WGAN-GP's eps ~ U[0, 1), one per image (batch x 1 x 1 x 1), from `rng`: the run's noise
    generator, so that a resumed run draws the same weights."""
    return torch.rand(batch_size, 1, 1, 1, device=device, generator=rng)


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, beta, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty without its weight: mean over the batch of (||grad_x D(x_hat)||_2 - 1)^2 at
    x_hat = eps * real + (1 - eps) * fake (`eps` from `interpolation_weights`). Differentiable in
    D's parameters."""
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    # the gradient comes back in x_hat's dtype (float32 in training, under bf16 autocast too)
    (grad,) = torch.autograd.grad(D(x_hat, beta).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
