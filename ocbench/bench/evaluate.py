"""Per-epoch evaluation: the Frechet step scipy vs eigh, the whole evaluation before (scipy) and
after (eigh), and in memory vs the authors' route (PNG files + the pytorch-fid CLI).

    ocbench bench eval --n 200 --width 8 --batch-size 50 --device cpu     # this CPU, a few minutes
    ocbench bench eval --n 10000 --width 32 --device cuda --cpu-check 1000   # the paper's setting, on a GPU

1. The Frechet step alone, 2048-d, on full-rank statistics (two sets of 4,096 synthetic features,
   as the protocol's 10,000 samples give): pytorch-fid's `calculate_frechet_distance` (scipy's
   `sqrtm`, on the CPU) against `fid.frechet_distance_eigh` on the device, the reference's square
   root (once per run) timed apart. Each is timed after a first call, which pays LAPACK's warm-up
   once per process (reported beside it): a training run computes 50 FIDs in one process.
2. One per-epoch evaluation as `ocbench.metrics.Evaluator` runs it, with `metrics.frechet: scipy`
   (before) and `eigh` (after), on the same images in the same run: generate n images in batches,
   quantise to uint8, Inception pool3, float64 mu/sigma, the Frechet distance, precision and recall
   against the real features, KID against them (100 seeded subsets). Each stage ends with a device
   sync before its timer stops. Inception, the reference stats, the real features' k-NN radii and
   KID's real-subset kernel sums are computed once per training run, so they are reported apart and
   not counted.
3. The authors' route (skip with --no-cli): the same images written one by one with torchvision's
   save_image, then `python -m pytorch_fid DIR STATS.npz` in a new process (it loads Inception and
   the stats again every epoch, and computes no precision/recall).
4. --cpu-check M: the first M generated images (the same uint8 pixels) through Inception on the CPU
   and on the device; the FIDs of both feature sets against the same reference. ocbench runs
   Inception in full fp32 on every device (`fid.full_fp32`: no TF32, which PyTorch uses for
   convolutions by default on Ampere and newer, and so does the pytorch-fid CLI on the same card).

Weights: the official file when torch.hub's cache has it, else seeded placeholder weights in a
temporary TORCH_HOME (same network, same cost; the FID values then mean nothing). Reference stats
are computed from a synthetic uint8 array of `real` images: only their shape matters for the timing.
"""

from __future__ import annotations

import copy
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ocbench import fid, prdc
from ocbench.device import resolve_device, sync
from ocbench.formats import sha256_of, to_uint8
from ocbench.metrics import Evaluator
from ocbench.nn import Generator


def timed(device: torch.device, fn, *args):
    """(fn(*args), seconds), the device synced before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def one_evaluation(ev: Evaluator, sample, n: int) -> tuple[dict, dict]:
    """What `ev.evaluate(sample, n)` does, stage by stage: (scores, seconds per stage)."""
    bs, device = ev.batch_size, ev.device
    seconds = {}
    with torch.no_grad():
        batches = (to_uint8(sample(s, min(bs, n - s))) for s in range(0, n, bs))
        feats, seconds["generate+Inception"] = timed(device, ev.features, batches, n)
        (mu, sigma), seconds["mu/sigma"] = timed(device, fid.statistics, feats, bs)
        value, seconds[f"FID ({ev.frechet})"] = timed(device, ev.frechet_distance, mu, sigma, n)
        (p, r), seconds["P/R"] = timed(device, prdc.precision_recall, ev.real_features, feats, ev.pr_k, ev.real_radii)
        (k, _), seconds["KID"] = timed(device, ev.kid, feats)
    return {"fid": value, "precision": p, "recall": r, "kid": k}, seconds


def frechet_step(device: torch.device, dim: int = fid.FEATURE_DIM, samples: int = 4096) -> None:
    """Time the Frechet distance alone, scipy vs eigh, on full-rank synthetic statistics."""
    gen = torch.Generator(device).manual_seed(0)
    scale = torch.logspace(0, -3, dim, dtype=torch.float64, device=device)  # a spectrum over 6 decades

    def stats(shift: float):
        x = torch.randn(samples, dim, dtype=torch.float64, device=device, generator=gen) * scale
        x = x + torch.randn(samples, 64, dtype=torch.float64, device=device, generator=gen) @ \
            torch.randn(64, dim, dtype=torch.float64, device=device, generator=gen) / 8
        return fid.statistics(x.abs() + 0.5 + shift)

    (mu1, s1), (mu2, s2) = stats(0.01), stats(0.0)

    def repeated(calls: int, fn, *args):
        """(result, first call's seconds, median seconds and mean CPU seconds of the calls after it):
        the first call in a process pays LAPACK's and the allocator's warm-up, which a training run
        pays once, not every epoch."""
        walls, cpus = [], []
        for _ in range(calls):
            c = time.process_time()
            out, seconds = timed(device, fn, *args)
            walls.append(seconds)
            cpus.append(time.process_time() - c)
        return out, walls[0], statistics.median(walls[1:]), statistics.mean(cpus[1:])

    theirs, first_scipy, t_scipy, cpu_scipy = repeated(2, fid.frechet_distance_scipy, mu1, s1, mu2, s2)
    root, first_root, t_root, cpu_root = repeated(2, fid.psd_root, s2)
    ours, first_eigh, t_eigh, cpu_eigh = repeated(4, fid.frechet_distance_eigh, mu1, s1, mu2, s2, samples, root)
    print(f"Frechet step ({dim}-d, full-rank statistics of {samples} samples each; per call after a first one, "
          f"whose time is in brackets): scipy sqrtm {t_scipy:.3f} s wall ({cpu_scipy:.2f} s CPU, on the CPU; "
          f"first {first_scipy:.3f}); eigh {t_eigh:.4f} s wall ({cpu_eigh:.2f} s CPU; first {first_eigh:.3f}) per FID "
          f"on {device}, + sqrt(reference sigma) {t_root:.3f} s wall ({cpu_root:.2f} s CPU; first {first_root:.3f}) "
          f"once per run; ratio {t_scipy / t_eigh:.1f}x wall, {cpu_scipy / cpu_eigh:.1f}x CPU; "
          f"FID {theirs!r} vs {ours!r}, relative {abs(ours - theirs) / theirs:.1e}")


def cpu_check(ev: Evaluator, sample, m: int, device: torch.device) -> None:
    """The same M uint8 images through Inception on the CPU and on `device`."""
    with torch.no_grad():
        images = torch.cat([to_uint8(sample(s, min(ev.batch_size, m - s))).cpu()
                            for s in range(0, m, ev.batch_size)])

    def score(net) -> tuple[float, torch.Tensor, float]:
        stats_only = fid.Reference(ev.reference.mu, ev.reference.sigma)  # no P/R: no real radii to compute
        other = Evaluator(net, ev.weights, stats_only, ev.batch_size, ev.pr_k, "eigh")
        feats, seconds = timed(other.device, other.features, images.split(ev.batch_size), m)
        mu, sigma = fid.statistics(feats, ev.batch_size)
        return other.frechet_distance(mu, sigma, m), feats.cpu(), seconds

    fid_dev, feats_dev, s_dev = score(ev.net)  # full fp32 on every device (fid.full_fp32)
    fid_cpu, feats_cpu, s_cpu = score(copy.deepcopy(ev.net).cpu())

    def line(name, value, feats, seconds):
        diff = (feats - feats_cpu).abs().max().item()
        return (f"  {name:34s} FID {value!r}  relative to CPU {abs(value - fid_cpu) / abs(fid_cpu):.1e}  "
                f"max |feature - CPU feature| {diff:.1e}  Inception {seconds:.2f} s")

    print(f"CPU check, the first {m} generated images (same uint8 pixels), FID against the same reference:")
    print(line(f"{device} (Inception in full fp32)", fid_dev, feats_dev, s_dev))
    print(line(f"cpu ({torch.get_num_threads()} threads)", fid_cpu, feats_cpu, s_cpu))


def bench_eval(n: int = 200, real: int | None = None, width: int = 8, batch_size: int = 200,
               device: str = "auto", workers: int | None = None, cli: bool = True, cpu_check_n: int = 0) -> None:
    """Time one evaluation of `n` generated images every way and print the comparison. `real`: real
    images for the stats and P/R (default n); `workers`: pytorch-fid's --num-workers (default its
    own); `cli`: also time the authors' route; `cpu_check_n`: compare M images' FID with the CPU's."""
    device = resolve_device(device)
    n_real, bs = real or n, batch_size

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    official = fid.weights_path()
    if official.exists() and sha256_of(official).startswith(fid.OFFICIAL_SHA256_PREFIX):
        weights, torch_home = fid.Weights(official, sha256_of(official)), os.environ.get("TORCH_HOME")
    else:
        torch_home = str(work / "torch")
        path = fid.write_placeholder_weights(Path(torch_home) / "hub" / "checkpoints" / fid.WEIGHTS_NAME)
        weights = fid.Weights(path, sha256_of(path))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"n {n}, real {n_real}, width {width}, batch {bs}, weights {'official' if weights.official else 'placeholder'}")
    print(f"TF32: torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} (training convolutions; Inception runs in full fp32), "
          f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} (matmuls), "
          f"float32_matmul_precision={torch.get_float32_matmul_precision()}"
          + ("" if device.type == "cuda" else " (CUDA switches: no effect on the CPU)"))

    # ---- once per run: Inception, reference stats, real radii, sqrt of the reference sigma
    net, t_load = timed(device, fid.load_inception, weights, device)
    rng = np.random.default_rng(0)
    real_images = rng.integers(0, 256, size=(n_real, 128, 128, 3), dtype=np.uint8)
    ref, t_stats = timed(device, lambda: fid.compute_reference(real_images, net, bs, pr_samples=n_real, progress=False))
    ref.weights_sha256 = weights.sha256
    stats = work / "stats.npz"
    fid.save_reference(ref, stats)
    before, t_before = timed(device, Evaluator, net, weights, ref, bs, 3, "scipy")  # the real radii
    after, t_after = timed(device, Evaluator, net, weights, ref, bs, 3, "eigh")  # radii + sqrt(sigma)
    for ev in (before, after):  # KID's seeded subsets of n generated features and their real kernel sums
        _, t_kid = timed(device, ev.kid, torch.zeros(n, net.feature_dim, device=device))
    print(f"once per run: Inception load {t_load:.1f} s, reference stats {n_real / t_stats:.1f} img/s, "
          f"real radii {t_before:.2f} s, real radii + sqrt(reference sigma) {t_after:.2f} s, "
          f"KID real kernel sums {t_kid:.2f} s")

    frechet_step(device)

    torch.manual_seed(0)
    g = Generator(0.5, width, 100).to(device).eval()
    z = torch.randn(n, 100, generator=torch.Generator().manual_seed(1)).to(device)

    def sample(start: int, count: int) -> torch.Tensor:
        return g(z[start : start + count])

    # ---- the per-epoch evaluation, before (scipy) and after (eigh), on the same images
    with torch.no_grad():
        sample(0, min(bs, n))  # warm-up (kernel selection), as every epoch after the first sees it
    results = {}
    for ev in (before, after):
        c0, t0 = time.process_time(), time.perf_counter()
        scores, seconds = one_evaluation(ev, sample, n)
        results[ev.frechet] = (scores, seconds, time.perf_counter() - t0, time.process_time() - c0)
    for route, (scores, seconds, wall, cpu) in results.items():
        print(f"per epoch, frechet {route:5s}: {wall:8.2f} s wall, {cpu:8.2f} s CPU  = "
              + " + ".join(f"{k} {v:.3f}" for k, v in seconds.items())
              + f"  (FID {scores['fid']!r}, precision {scores['precision']:.3f}, recall {scores['recall']:.3f})")
    (s_scipy, *_, wall_scipy, _), (s_eigh, *_, wall_eigh, _) = results["scipy"], results["eigh"]
    print(f"before/after  : {wall_scipy / wall_eigh:.2f}x wall; FID relative difference "
          f"{abs(s_eigh['fid'] - s_scipy['fid']) / abs(s_scipy['fid']):.1e}")

    if cli:
        authors_route(sample, n, bs, device, stats, torch_home, workers, wall_eigh, results["eigh"][3], s_eigh["fid"], work)
    if cpu_check_n:
        cpu_check(after, sample, min(cpu_check_n, n), device)


def authors_route(sample, n, bs, device, stats, torch_home, workers, mem_wall, mem_cpu, fid_mem, work) -> None:
    """PNGs one by one, then pytorch-fid's CLI; compared with the in-memory eigh evaluation."""
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
    authors_total = t2 - t0
    print(f"authors' route: {authors_total:8.2f} s wall, {png_cpu + cli_cpu:8.2f} s CPU  = "
          f"PNGs {t1 - t0:.2f} ({png_cpu:.2f} CPU) + pytorch-fid CLI {t2 - t1:.2f} ({cli_cpu:.2f} CPU)")
    print(f"authors' route / in memory (eigh): {authors_total / mem_wall:.2f}x wall, "
          f"{(png_cpu + cli_cpu) / mem_cpu:.2f}x CPU; FID CLI {fid_cli!r} vs in memory {fid_mem!r}, "
          f"relative {abs(fid_mem - fid_cli) / abs(fid_cli):.1e}")
