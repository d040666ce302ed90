"""`ocbench bench protocol`: what the configured protocol costs on this device, before spending it.

For every (GAN, variant) the config trains, this times the real thing on this device (the real
`TrainingStep` on the real data path, and one per-epoch evaluation by the real Evaluator of
`metrics.fid_samples` samples) and projects the whole protocol from it (ocbench/projection.py's
arithmetic, which preflight's projection shares). The iteration counts follow training's own rule
(`CriticConfig.walk`) over every batch of every epoch, so n_critic schedules (the official WGAN's
20/5) are counted exactly, not averaged. The
batches per epoch come from `--projected-images` (e.g. CelebA's 202,599) while the timing runs on
whatever the prepared array holds: an iteration's time does not depend on the dataset's size, so a
synthetic CelebA of a few thousand images times the paper's protocol. The output says both.

The authors' route is measured in the same run on the same device: their DataLoader over a folder of
PNGs without workers (the loop `ocbench bench train` compares against), and per epoch
`metrics.fid_samples` PNG writes + `python -m pytorch_fid` in a new process. With
`gpus.runs_per_gpu` = k > 1, k processes time the same case at once on the device, as k training
jobs sharing it would run, and the projection uses their aggregate rate (the authors' route runs one
job per device).
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ocbench import config as config_mod
from ocbench.batches import load_images
from ocbench.bench.routes import authors_batches, authors_loader, our_batches, seconds_per_iteration
from ocbench.config import Config, run_id
from ocbench.device import cpu_name, resolve_device, runs_sharing_gpu, sync
from ocbench.errors import OcbenchError
from ocbench.formats import atomic_write, to_uint8
from ocbench.projection import Case, Timing, evaluations, project
from ocbench.train import build_run, configure_backends, eval_sampler, eval_seed, set_beta


# --------------------------------------------------------------------------------------------------
# timing


def first_epoch(cfg: Config, gan_name: str, variant_name: str, device: torch.device, images: torch.Tensor):
    """(G, step, beta) of the case's run with seed 0, as training builds it (`train.build_run`), beta
    that of its first epoch."""
    run = build_run(cfg, run_id(gan_name, variant_name, 0), device, images)
    set_beta(run, 0)
    return run.G, run.step, run.beta


def time_training(step, batches, beta, d_only: bool, device, iterations: int, warmup: int,
                  barrier=None) -> tuple[float, float | None]:
    """(s per iteration with a G step, s per D-only iteration or None), after `warmup` iterations.
    `barrier`: the jobs sharing the device start each timed stretch together."""
    for _ in range(warmup):
        step(next(batches), beta, True)
    if barrier is not None:
        barrier.wait()
    with_g = seconds_per_iteration(step, batches, device, iterations, beta, True)
    without_g = None
    if d_only:
        if barrier is not None:
            barrier.wait()
        without_g = seconds_per_iteration(step, batches, device, iterations, beta, False)
    return with_g, without_g


def time_our_evaluation(cfg: Config, evaluator, G, beta, device) -> float:
    """One per-epoch evaluation as training makes it, after a one-batch warm-up of G and Inception."""
    train_cfg = cfg.train
    G.eval()
    warmup = min(evaluator.batch_size, 2)  # one small batch: kernel selection, not the timed work
    sample = eval_sampler(G, beta, train_cfg.latent_dim, device, eval_seed(cfg, 0), warmup)
    evaluator.features([to_uint8(sample(0, warmup))], warmup)
    sync(device)
    start = time.perf_counter()
    evaluator.evaluate(eval_sampler(G, beta, train_cfg.latent_dim, device, eval_seed(cfg, 0), cfg.metrics.fid_samples),
                       cfg.metrics.fid_samples)
    sync(device)
    seconds = time.perf_counter() - start
    G.train()
    return seconds


def profile_iterations(step, batches, beta, device, iterations: int = 5, rows: int = 15) -> str:
    """torch.profiler's table of the ops and kernels that take the time of a few iterations."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            step(next(batches), beta, True)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def time_ours(cfg: Config, gan_name: str, variant_name: str, d_only: bool, iterations: int, warmup: int,
              images=None, evaluator=None, barrier=None, profile: bool = False, log=print) -> Timing:
    """One job's timing of a case on our route. `images` and `evaluator` are loaded when not given
    (a job in a process of its own, as when several share the device). `profile`: print the top
    ops of a few more iterations."""
    from ocbench.metrics import Evaluator

    train_cfg = cfg.train
    device = resolve_device(train_cfg.device)
    configure_backends(train_cfg, device)
    if images is None:
        images = load_images(cfg.data.prepared, device, train_cfg.data_on_device,
                             runs_sharing_gpu(cfg.gpus.runs_per_gpu))
    # the final evaluation is projected from the per-epoch one: its real statistics are not needed
    evaluator = Evaluator.from_config(cfg, device, final=False) if evaluator is None else evaluator
    G, step, beta = first_epoch(cfg, gan_name, variant_name, device, images)
    batches = our_batches(images, train_cfg.batch_size, device, train_cfg.channels_last)
    with_g, without_g = time_training(step, batches, beta, d_only, device, iterations, warmup, barrier)
    if profile:
        log(f"profile of {gan_name}/{variant_name}, 5 iterations:\n"
            + profile_iterations(step, batches, beta, device))
    if barrier is not None:
        barrier.wait()
    return Timing(with_g, without_g, time_our_evaluation(cfg, evaluator, G, beta, device))


def _shared_job(raw: dict, gan_name, variant_name, d_only, iterations, warmup, barrier, results) -> None:
    cfg = config_mod.from_dict(raw)
    results.put(asdict(time_ours(cfg, gan_name, variant_name, d_only, iterations, warmup, barrier=barrier)))


def time_ours_shared(cfg: Config, gan_name: str, variant_name: str, d_only: bool, iterations: int,
                     warmup: int, jobs: int) -> Timing:
    """`jobs` processes time the case at once on the device; each job's own times, averaged."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_shared_job, args=(cfg.raw, gan_name, variant_name, d_only, iterations,
                                                   warmup, barrier, results)) for _ in range(jobs)]
    for p in procs:
        p.start()
    timings = []
    while len(timings) < jobs:
        try:
            timings.append(Timing(**results.get(timeout=5)))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):  # a job died: stop the others
                for p in procs:
                    p.kill()
                raise OcbenchError(f"a benchmark job for {gan_name}/{variant_name} failed; "
                                   "rerun with --set gpus.runs_per_gpu=1 to see its error") from None
    for p in procs:
        p.join()
    mean = lambda xs: None if None in xs else float(np.mean(xs))  # noqa: E731
    return Timing(mean([t.with_g for t in timings]), mean([t.without_g for t in timings]),
                  mean([t.evaluation for t in timings]))


def time_authors(cfg: Config, gan_name: str, variant_name: str, d_only: bool, iterations: int, warmup: int,
                 loader, images: torch.Tensor, work: Path, fid_env: dict) -> Timing:
    """The authors' route: the PNG DataLoader without workers; per epoch, `metrics.fid_samples`
    PNGs written one by one, then `python -m pytorch_fid` in a new process."""
    from torchvision.utils import save_image

    train_cfg, m = cfg.train, cfg.metrics
    device = resolve_device(train_cfg.device)
    G, step, beta = first_epoch(cfg, gan_name, variant_name, device, images)
    with_g, without_g = time_training(step, authors_batches(loader, device), beta, d_only, device,
                                      iterations, warmup)

    out = work / f"samples_{gan_name}_{variant_name}"
    out.mkdir(parents=True)
    G.eval()
    sample = eval_sampler(G, beta, train_cfg.latent_dim, device, eval_seed(cfg, 0), m.fid_samples)
    sync(device)
    start = time.perf_counter()
    for s in range(0, m.fid_samples, m.batch_size):
        for i, image in enumerate(sample(s, min(m.batch_size, m.fid_samples - s))):
            save_image((image + 1) / 2, out / f"{s + i:06d}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "pytorch_fid", str(out), m.stats, "--device", str(device),
         "--dims", str(m.dims), "--batch-size", str(m.batch_size)],
        env={**os.environ, **fid_env}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise OcbenchError(f"python -m pytorch_fid failed: {proc.stderr.strip().splitlines()[-1]}")
    return Timing(with_g, without_g, seconds)


def pytorch_fid_env(cfg: Config, work: Path) -> dict:
    """TORCH_HOME under which pytorch-fid's CLI finds the weights our evaluator uses."""
    from ocbench.fid import locate_weights

    weights = locate_weights(cfg.metrics.weights_dir, cfg.metrics.placeholder_weights)
    home = work / "torch"
    (home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    link = home / "hub" / "checkpoints" / weights.path.name
    if not link.exists():
        link.symlink_to(weights.path.resolve())
    return {"TORCH_HOME": str(home)}


# --------------------------------------------------------------------------------------------------
# the command


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return {
        "date": datetime.date.today().isoformat(), "device": str(device), "device_name": name,
        "torch": torch.__version__,
        "precision": {
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }


def bench_protocol(cfg: Config, iterations: int = 20, warmup: int = 5, projected_images: int | None = None,
                   authors: bool = True, json_path: str | None = None, profile: bool = False, log=print) -> dict:
    """`ocbench bench protocol`: per configured (GAN, variant), `iterations` timed iterations (after
    `warmup`) and one per-epoch evaluation on our route, and on the authors' unless `authors` is
    False, projected to the protocol for `projected_images` images an epoch (default: the prepared
    array's); several jobs at once when gpus.runs_per_gpu > 1. Logs the markdown table, writes the
    JSON to `json_path`, returns it."""
    train_cfg = cfg.train
    device = resolve_device(train_cfg.device)
    timed_images = len(np.load(cfg.data.prepared, mmap_mode="r")) if Path(cfg.data.prepared).is_file() else 0
    if timed_images < train_cfg.batch_size:
        raise OcbenchError(f"{cfg.data.prepared} holds {timed_images} images, fewer than one batch of "
                           f"{train_cfg.batch_size}; run `ocbench data prepare` (or data synth + prepare) first")
    projected = projected_images or timed_images
    batches_per_epoch = projected // train_cfg.batch_size
    jobs = cfg.gpus.runs_per_gpu
    env = environment(device)
    log(f"ocbench bench protocol: config {cfg.name} on {env['device_name']} ({device}), torch {env['torch']}, "
        f"{env['date']}")
    log(f"timed on {timed_images:,} prepared images; projected for {projected:,} images = {batches_per_epoch:,} "
        f"batches of {train_cfg.batch_size} per epoch, {train_cfg.epochs} epochs, {len(cfg.run.seeds)} seed(s); "
        f"{jobs} run(s) sharing the device; {iterations} timed iterations after {warmup} warm-up")

    from ocbench.metrics import Evaluator

    cases = []
    configure_backends(train_cfg, device)
    images = (load_images(cfg.data.prepared, device, train_cfg.data_on_device, runs_sharing_gpu(jobs))
              if jobs == 1 else None)
    evaluator = Evaluator.from_config(cfg, device, final=False) if jobs == 1 else None
    with tempfile.TemporaryDirectory(prefix="bench_protocol_") as tmp:
        if authors:
            work = Path(tmp)
            fid_env = pytorch_fid_env(cfg, work)
            host_images = load_images(cfg.data.prepared, torch.device("cpu"), False)
            loader = authors_loader(host_images.numpy(), work / "train", train_cfg.batch_size)
        for gan_name in cfg.run.gans:
            with_g, without_g = cfg.gans[gan_name].critic.iterations(batches_per_epoch, train_cfg.epochs,
                                                                     train_cfg.g_steps)
            d_only = without_g > 0
            for variant_name in cfg.run.variants:
                if jobs > 1:
                    ours = time_ours_shared(cfg, gan_name, variant_name, d_only, iterations, warmup, jobs)
                else:
                    ours = time_ours(cfg, gan_name, variant_name, d_only, iterations, warmup, images, evaluator,
                                     profile=profile, log=log)
                theirs = (time_authors(cfg, gan_name, variant_name, d_only, iterations, warmup, loader, host_images,
                                       work, fid_env) if authors else None)
                case = Case(gan_name, variant_name, len(cfg.run.seeds), with_g, without_g, ours, theirs, jobs)
                case.projection = project(case, evaluations(cfg))
                cases.append(case)
                p = case.projection
                log(f"{gan_name}/{variant_name}: {p['ours_it_s']:.1f} it/s, evaluation {ours.evaluation:.2f} s"
                    + (f"; authors' route {p['authors_it_s']:.1f} it/s, evaluation {theirs.evaluation:.2f} s"
                       if theirs else ""))

    result = {
        **env, "config": cfg.name, "timed_images": timed_images, "projected_images": projected,
        "batch_size": train_cfg.batch_size, "batches_per_epoch": batches_per_epoch, "epochs": train_cfg.epochs,
        "seeds": len(cfg.run.seeds), "runs": len(cases) * len(cfg.run.seeds), "runs_per_gpu": jobs,
        "fid_samples": cfg.metrics.fid_samples, "fid_dims": cfg.metrics.dims,
        "speed_options": {k: getattr(train_cfg, k) for k in ("bf16", "channels_last", "compile", "cuda_graphs")},
        "iterations": iterations, "warmup": warmup,
        "cases": [asdict(c) for c in cases],
        "total": totals(cases),
    }
    log("")
    log(markdown(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(json_path), json.dumps(result, indent=2) + "\n")
        log(f"wrote {json_path}")
    return result


def totals(cases: list[Case]) -> dict:
    out = {"ours_device_h": sum(c.projection["ours_device_h"] for c in cases),
           "mean_ours_it_s": float(np.mean([c.projection["ours_it_s"] for c in cases]))}
    if all(c.authors is not None for c in cases):
        out["authors_device_h"] = sum(c.projection["authors_device_h"] for c in cases)
        out["mean_authors_it_s"] = float(np.mean([c.projection["authors_it_s"] for c in cases]))
        out["ratio"] = out["authors_device_h"] / out["ours_device_h"]
    return out


def markdown(r: dict) -> str:
    authors = "authors_device_h" in r["total"]
    head = ["GAN", "variant", "runs", "it/s", "eval s", "h per run", "device h"]
    if authors:
        head += ["authors it/s", "authors eval s", "authors device h", "ratio"]
    lines = [
        f"Config `{r['config']}` on {r['device_name']} ({r['device']}), torch {r['torch']}, {r['date']}; "
        f"TF32 matmul {r['precision']['cuda_matmul_allow_tf32']}, TF32 cuDNN {r['precision']['cudnn_allow_tf32']}; "
        f"speed options {', '.join(k for k, v in r['speed_options'].items() if v) or 'none'}.",
        f"Timed on {r['timed_images']:,} images, projected for {r['projected_images']:,} "
        f"({r['batches_per_epoch']:,} batches of {r['batch_size']} per epoch) x {r['epochs']} epochs, "
        f"{r['fid_samples']:,} FID samples ({r['fid_dims']}-d) per epoch; {r['runs_per_gpu']} run(s) per device "
        "(it/s is their aggregate).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 2 + "---:|" * (len(head) - 2),
    ]
    for c in r["cases"]:
        p = c["projection"]
        row = [c["gan"], c["variant"], str(c["runs"]), f"{p['ours_it_s']:.1f}", f"{c['ours']['evaluation']:.2f}",
               f"{p['ours_run_s'] / 3600:.2f}", f"{p['ours_device_h']:.2f}"]
        if authors:
            row += [f"{p['authors_it_s']:.1f}", f"{c['authors']['evaluation']:.2f}", f"{p['authors_device_h']:.2f}",
                    f"{p['ratio']:.1f}x"]
        lines.append("| " + " | ".join(row) + " |")
    t = r["total"]
    row = ["**total**", "", str(r["runs"]), f"{t['mean_ours_it_s']:.1f} (mean)", "", "", f"**{t['ours_device_h']:.2f}**"]
    if authors:
        row += [f"{t['mean_authors_it_s']:.1f} (mean)", "", f"**{t['authors_device_h']:.2f}**", f"**{t['ratio']:.1f}x**"]
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
