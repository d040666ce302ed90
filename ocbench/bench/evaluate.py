"""Per-epoch evaluation, in memory vs the authors' route (PNG files + the pytorch-fid CLI).

    ocbench bench eval --n 200 --width 8 --device cpu         # this CPU, a few minutes
    ocbench bench eval --n 10000 --width 32 --device cuda     # the paper's setting, on a GPU

In memory (ocbench.metrics.Evaluator, what training runs every epoch): generate n images in batches,
quantise to uint8, Inception pool3, float64 mu/sigma, pytorch-fid's Frechet distance, precision and
recall against the real features. The Inception network and the reference stats are loaded once
per run, not per epoch, so they are reported apart and not counted.

The authors' route: generate the same images, write them one by one with torchvision's save_image,
then `python -m pytorch_fid DIR STATS.npz` (a new process: it loads Inception and the stats again
every epoch). It computes no precision/recall.

Weights: the official file when torch.hub's cache has it, else seeded placeholder weights in a
temporary TORCH_HOME (same network, same cost; the FID values then mean nothing). Reference stats
are computed from a synthetic uint8 array of n images: only their shape matters for the timing.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ocbench import fid, prdc
from ocbench.device import resolve_device
from ocbench.bench import sync
from ocbench.metrics import Evaluator
from ocbench.nn import Generator


def bench_eval(n: int = 200, real: int | None = None, width: int = 8, batch_size: int = 200,
               device: str = "auto", workers: int | None = None) -> None:
    """Time one evaluation of `n` generated images both ways and print the comparison. `real`: real
    images for the stats and P/R (default n); `workers`: pytorch-fid's --num-workers (default its own)."""
    device = resolve_device(device)
    n_real, bs = real or n, batch_size

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    official = fid.weights_path()
    if official.exists() and fid.sha256_of(official).startswith(fid.OFFICIAL_SHA256_PREFIX):
        weights, torch_home = fid.Weights(official, fid.sha256_of(official)), os.environ.get("TORCH_HOME")
    else:
        torch_home = str(work / "torch")
        path = fid.write_placeholder_weights(Path(torch_home) / "hub" / "checkpoints" / fid.WEIGHTS_NAME)
        weights = fid.Weights(path, fid.sha256_of(path))

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, n {n}, real {n_real}, width {width}, "
          f"batch {bs}, weights {'official' if weights.official else 'placeholder'}")

    # ---- once per run: Inception, reference stats (timed for information only)
    t = time.perf_counter()
    net = fid.load_inception(weights, device)
    sync(device)
    t_load = time.perf_counter() - t
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(n_real, 128, 128, 3), dtype=np.uint8)
    t = time.perf_counter()
    ref = fid.compute_reference(real, net, bs, pr_samples=n_real, progress=False)
    t_stats = time.perf_counter() - t
    ref.weights_sha256 = weights.sha256
    stats = work / "stats.npz"
    fid.save_reference(ref, stats)
    t = time.perf_counter()
    ev = Evaluator(net, weights, ref, bs, pr_k=3)
    sync(device)
    t_radii = time.perf_counter() - t

    torch.manual_seed(0)
    g = Generator(0.5, width, 100).to(device).eval()
    z = torch.randn(n, 100, generator=torch.Generator().manual_seed(1)).to(device)

    def sample(start: int, count: int) -> torch.Tensor:
        return g(z[start : start + count])

    # ---- in memory: one pass as Evaluator.evaluate makes it, timed step by step
    with torch.no_grad():
        sample(0, min(bs, n))  # warm-up (kernel selection), as every epoch after the first sees it
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        feats = ev.features((fid.to_uint8(sample(s, min(bs, n - s))) for s in range(0, n, bs)), n)
        sync(device)
        t1 = time.perf_counter()
        mu, sigma = fid.statistics(feats)
        t2 = time.perf_counter()
        fid_mem = fid.frechet_distance(mu, sigma, ref.mu, ref.sigma)
        t3 = time.perf_counter()
        p, r = prdc.precision_recall(ev.real_features, feats, 3, ev.real_radii)
        sync(device)
        t4 = time.perf_counter()
    mem = {"generate+Inception": t1 - t0, "mu/sigma": t2 - t1, "FID (sqrtm)": t3 - t2, "P/R": t4 - t3}
    mem_total, mem_cpu = t4 - t0, time.process_time() - c0

    # ---- the authors' route: PNGs one by one, then pytorch-fid's CLI
    from torchvision.utils import save_image

    pngs = work / "png"
    pngs.mkdir()
    with torch.no_grad():
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        for s in range(0, n, bs):
            for i, img in enumerate(sample(s, min(bs, n - s))):
                save_image((img + 1) / 2, pngs / f"{s + i:06d}.png")
        t1 = time.perf_counter()
    png_cpu = time.process_time() - c0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "pytorch_fid", str(pngs), str(stats), "--device", str(device),
           "--batch-size", str(bs)] + (["--num-workers", str(workers)] if workers is not None else [])
    env = {**os.environ, **({"TORCH_HOME": torch_home} if torch_home else {})}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    t2 = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    fid_cli = float(re.search(r"FID:\s+(\S+)", out).group(1))
    png_s, cli_s = t1 - t0, t2 - t1
    authors_total = t2 - t0

    print(f"once per run: Inception load {t_load:.1f} s, reference stats {n_real / t_stats:.1f} img/s, "
          f"real radii {t_radii:.2f} s")
    print(f"in memory     : {mem_total:8.2f} s wall, {mem_cpu:8.2f} s CPU  = "
          + " + ".join(f"{k} {v:.2f}" for k, v in mem.items()))
    print(f"authors' route: {authors_total:8.2f} s wall, {png_cpu + cli_cpu:8.2f} s CPU  = "
          f"PNGs {png_s:.2f} ({png_cpu:.2f} CPU) + pytorch-fid CLI {cli_s:.2f} ({cli_cpu:.2f} CPU)")
    print(f"ratio         : {authors_total / mem_total:.2f}x wall, {(png_cpu + cli_cpu) / mem_cpu:.2f}x CPU")
    print(f"FID in memory {fid_mem!r}, CLI {fid_cli!r}, relative difference "
          f"{abs(fid_mem - fid_cli) / abs(fid_cli):.2g}; precision {p:.3f}, recall {r:.3f}")
