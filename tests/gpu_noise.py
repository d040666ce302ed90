"""A CPU with a GPU's numerics: seeded last-bit noise on the kernels whose results a GPU does not
fix from run to run.

On a GPU two runs of the same step differ in their last bits: cuDNN's autotuner may pick another
algorithm, its fastest backward kernels and CUDA's bilinear-upsampling backward accumulate with
atomics (an order that changes every call), and torch.compile or CUDA graphs change which kernels run.
This CPU is deterministic, so a check written and tested here can silently encode "two runs are
bit-equal" and then stop a working GPU. `GpuNoise` gives the CPU that noise: every result of the
operations in NOISY gets a few units of fp32's last place, drawn from a generator of its own (the
run's random streams are untouched) and different on every call, as atomics are. With
deterministic algorithms on (`train.deterministic`), a GPU is deterministic too, and so is this.

    with GpuNoise(seed=1):
        ...   # everything here runs with a GPU's last-bit noise
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten

# The kernels whose summation order a GPU does not fix: convolutions forward and backward (cuDNN),
# the matrix products of Linear layers (cuBLAS split-K), BatchNorm's backward reductions and the
# bilinear upsampling backward (atomics).
NOISY = {
    aten.convolution.default, aten.convolution_backward.default,
    aten.mm.default, aten.addmm.default, aten.bmm.default,
    aten.native_batch_norm_backward.default,
    aten.upsample_bilinear2d.default, aten.upsample_bilinear2d_backward.default,
}


class GpuNoise(TorchDispatchMode):
    """Each floating result of an op in NOISY multiplied by (1 + r * 2^-23) with r a random integer in
    [-ulps, ulps] per element: about r units in fp32's last place, applied in fp32 and rounded back to
    the result's dtype (bf16's noise is then what fp32 accumulation noise leaves after rounding).
    The factors are a window of a pool drawn once, at a random offset for every result (drawing
    fresh ones per element cost more than the small networks the tests run). `calls` counts the
    perturbed results, so a test can see the noise was applied."""

    POOL = 1 << 22

    def __init__(self, ulps: int = 4, seed: int = 0):
        super().__init__()
        self.ulps, self.calls, self.generator = ulps, 0, torch.Generator().manual_seed(seed)
        r = torch.randint(-ulps, ulps + 1, (self.POOL,), generator=self.generator)
        self.factors = 1 + r.to(torch.float32) * 2.0 ** -23

    def perturb(self, t):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.device.type != "cpu":
            return t
        self.calls += 1
        n = t.numel()
        if n <= self.POOL:
            start = int(torch.randint(0, self.POOL - n + 1, (), generator=self.generator))
            factors = self.factors[start:start + n].view(t.shape)
        else:  # larger than the pool (full-width networks): factors of its own
            r = torch.randint(-self.ulps, self.ulps + 1, t.shape, generator=self.generator)
            factors = 1 + r.to(torch.float32) * 2.0 ** -23
        return (t.float() * factors).to(t.dtype)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in NOISY and not torch.are_deterministic_algorithms_enabled():
            out = tree_map(self.perturb, out)
        return out
