"""Parameter counts and convolution FLOPs of each variant's networks (`ocbench model-info`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ocbench.nn import discriminator, generator


@dataclass
class NetInfo:
    params: int
    flops: int  # forward FLOPs per image (multiply-add = 2)
    inner_flops: int  # the hidden blocks with octave input and output (alpha_in = alpha_out)


def forward_flops(net: torch.nn.Module, x: torch.Tensor, inner: list[str]) -> tuple[int, int]:
    """Total and inner-block FLOPs of one forward pass, per image."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    by_module = counter.get_flop_counts()
    total = counter.get_total_flops()
    prefix = type(net).__name__
    inner_total = sum(sum(by_module.get(f"{prefix}.{name}", {}).values()) for name in inner)
    n = x.shape[0]
    return total // n, inner_total // n


def describe(alpha: float, width: int, latent_dim: int, arch: str = "dcgan",
             d_width: int | None = None) -> tuple[NetInfo, NetInfo]:
    """(G, D) of `arch` at `alpha`: G of `width`, D of `d_width` (default: the same). Counted on the meta
    device (shapes only), so the full-width ResNet costs no arithmetic."""
    with torch.device("meta"):
        g = generator(arch, alpha, width, latent_dim).eval()
        d = discriminator(arch, alpha, width if d_width is None else d_width).eval()
        # blocks.0 has a single input group; the inner blocks are the rest of the hidden blocks.
        g_flops = forward_flops(g, torch.zeros(2, latent_dim), [f"blocks.{i}" for i in range(1, len(g.blocks))])
        d_flops = forward_flops(d, torch.zeros(2, 3, 128, 128), [f"blocks.{i}" for i in range(1, len(d.blocks))])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return NetInfo(count(g), *g_flops), NetInfo(count(d), *d_flops)


def table(cfg) -> str:
    t = cfg.train
    latent = t.latent_dim
    widths = f"width {t.width}" if t.arch == "dcgan" else f"ResNet (SN-GAN) ngf {t.ngf}, ndf {t.ndf}"
    lines = [
        f"networks: {widths}, latent {latent}; FLOPs per image, forward (1 multiply-add = 2)",
        f"{'variant':<10}{'alpha':>6}{'G params':>12}{'D params':>12}{'G GFLOP':>10}{'D GFLOP':>10}"
        f"{'inner G+D GFLOP':>17}",
    ]
    for name, variant in cfg.variants.items():
        g, d = describe(variant.alpha, t.g_width, latent, t.arch, t.d_width)
        lines.append(
            f"{name:<10}{variant.alpha:>6.2f}{g.params:>12,}{d.params:>12,}{g.flops / 1e9:>10.3f}"
            f"{d.flops / 1e9:>10.3f}{(g.inner_flops + d.inner_flops) / 1e9:>17.3f}"
        )
    return "\n".join(lines)
