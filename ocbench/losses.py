"""The three GAN objectives on D's raw output (one logit per image), and the WGAN weight clamp."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("dcgan", "lsgan", "wgan")


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
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's logits on G(z); DCGAN's is the non-saturating one."""
    if kind == "dcgan":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    if kind == "wgan":
        return -fake.mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


@torch.no_grad()
def clamp_(params: list[torch.Tensor], bound: float) -> None:
    """WGAN's Lipschitz constraint: every D parameter (BatchNorm's too) into [-bound, bound], as two
    foreach operations over all of them rather than two kernels per tensor."""
    torch._foreach_clamp_min_(params, -bound)
    torch._foreach_clamp_max_(params, bound)
