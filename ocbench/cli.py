"""`ocbench`: one command with subcommands, a thin layer over the library's plain functions.

Every subcommand takes `--config FILE` (repeatable; merged over workflow/config/paper.yaml in order,
as Snakemake's --configfile) and `--set dotted.key=value` overrides.
"""

from __future__ import annotations

import argparse
import os
import sys

from ocbench import config as config_mod
from ocbench.errors import OcbenchError, UsageError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML merged over workflow/config/paper.yaml (repeatable, later wins)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one key, e.g. --set train.epochs=3 (repeatable)",
    )


def load_config(args) -> config_mod.Config:
    return config_mod.load(args.config, args.overrides)


# --------------------------------------------------------------------------------------------------
# commands


def cmd_config(args) -> None:
    print(load_config(args).dump(), end="")


def cmd_model_info(args) -> None:
    from ocbench.info import table

    print(table(load_config(args)))


def cmd_train(args) -> None:
    from ocbench.lock import run_lock

    cfg = load_config(args)
    cfg.parse_run(args.run)  # a bad run id fails before any data is read
    # The run's lock before torch and pytorch-fid are imported (seconds): a second trainer of a run
    # that is training is refused at once. Held until train() returns or fails.
    with run_lock(cfg.results_dir / "state" / args.run, args.run, cfg.name):
        from ocbench.train import train

        train(cfg, args.run)


def cmd_preflight(args) -> None:
    from ocbench.preflight import preflight, write_json

    report = preflight(load_config(args), args.iterations, args.fid_images)
    print(report.table(), flush=True)
    if args.json:
        write_json(report, args.json)
    if report.failed:
        names = ", ".join(f"{c.section} {c.name}" for c in report.failed)
        raise OcbenchError(f"preflight: {len(report.failed)} check(s) failed ({names}); each fix is in the table above")


def cmd_status(args) -> None:
    import time

    from ocbench.status import overview

    if args.watch is not None and not args.watch > 0:
        raise UsageError(f"--watch {args.watch:g}: the seconds between redraws must be positive, e.g. --watch 60")
    cfg = load_config(args)
    while True:
        text = overview(cfg, others=not args.config)  # no --config: name the other configs' results too
        if not args.watch:
            print(text)
            return
        print("\033[H\033[J" + time.strftime("%H:%M:%S ") + text, flush=True)  # clear the screen, redraw
        time.sleep(args.watch)


def cmd_fid_weights(args) -> None:
    from ocbench import fid

    m = load_config(args).metrics
    w = fid.ensure_weights(m.weights_dir, m.placeholder_weights)
    kind = "official" if w.official else "placeholder (seeded random; FIDs not comparable to published ones)"
    print(f"{w.path}\nsha256 {w.sha256} ({kind})")


def cmd_fid_stats(args) -> None:
    from ocbench.metrics import make_reference

    cfg = load_config(args)
    print(make_reference(cfg, args.device))


def cmd_fid_score(args) -> None:
    from ocbench.metrics import Evaluator

    cfg = load_config(args)
    ev = Evaluator.from_config(cfg, args.device, stats=args.stats, final=args.final)
    if args.images:
        scores = ev.evaluate_images(args.images, final=args.final)
    else:
        scores = ev.evaluate_generator(args.generator, args.n, args.seed, final=args.final)
    print(f"FID {scores['fid']:.6f}  KID {scores['kid']:.6f} ± {scores['kid_std']:.6f}  "
          f"precision {scores['precision']:.4f}  recall {scores['recall']:.4f}")
    print(f"weights sha256 {scores['weights_sha256']} ({'official' if scores['weights_official'] else 'NOT official'}), "
          f"Frechet distance by {scores['frechet']}")


def cmd_sample(args) -> None:
    from ocbench.device import resolve_device
    from ocbench.sample import GRID_IMAGES, write_grid, write_images

    device = resolve_device(args.device or load_config(args).train.device)
    if args.grid:
        print(f"wrote {write_grid(args.generator, args.grid, args.n or GRID_IMAGES, args.seed, device)}")
        return
    paths = write_images(args.generator, args.out, args.n, args.seed, device)
    print(f"wrote {len(paths)} PNG files to {args.out}")


def cmd_data_fetch(args) -> None:
    from ocbench.data import fetch

    fetch(load_config(args), only=args.only)


def cmd_data_prepare(args) -> None:
    from ocbench.data import prepare

    prepare(load_config(args), skip_corrupt=args.skip_corrupt, workers=args.workers)


def cmd_data_verify(args) -> None:
    from ocbench.data import verify_prepared

    verify_prepared(load_config(args))


def cmd_data_synth(args) -> None:
    from ocbench.synth import write_synthetic

    if args.out:  # explicit form: no config needed
        if args.n is None:
            raise UsageError("ocbench data synth --out PATH needs --n N (number of images)")
        zip_path, part = write_synthetic(args.out, None, args.n, args.seed or 0)
    else:
        if args.n is not None or args.seed is not None:
            raise UsageError("--n/--seed go with --out; with --config use --set data.synthetic.n=N")
        d = load_config(args).data
        if d.synthetic is None:
            raise UsageError("this config has no data.synthetic {n, seed}; pass --out PATH --n N --seed S, "
                             "or a synthetic config")
        if not d.images.endswith(".zip"):
            raise UsageError(f"data.images {d.images} must be a .zip path for a synthetic dataset")
        zip_path, part = write_synthetic(d.images, d.partition, d.synthetic["n"], d.synthetic["seed"])
    print(f"wrote {zip_path} and {part}")


def cmd_with_gpu(args) -> None:
    from pathlib import Path

    from ocbench import gpus

    cfg = load_config(args)
    g = cfg.gpus
    if args.devices is not None:
        devices = [d for d in args.devices.split(",") if d.strip()]
    else:
        devices = None if g.devices == "auto" else [str(d) for d in g.devices]
    lock_dir = Path(args.lock_dir or g.lock_dir or gpus.DEFAULT_LOCK_DIR)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    runs_per_gpu = g.runs_per_gpu if args.runs_per_gpu is None else args.runs_per_gpu
    gpus.exec_with_gpu(command, devices, runs_per_gpu, lock_dir, args.timeout, cfg.train.device)


def cmd_bench_prepare(args) -> None:
    from ocbench.bench.prepare import bench_prepare

    bench_prepare(args.n, args.workers, args.workdir)


def cmd_bench_eval(args) -> None:
    from ocbench.bench.evaluate import bench_eval

    bench_eval(args.n, args.real, args.width, args.batch_size, args.device, args.workers, not args.no_cli, args.cpu_check)


def cmd_bench_train(args) -> None:
    from ocbench.bench.train import bench_train

    bench_train(load_config(args), args.iterations, args.warmup, args.rounds)


def cmd_bench_protocol(args) -> None:
    from ocbench.bench.protocol import bench_protocol

    bench_protocol(load_config(args), args.iterations, args.warmup, args.projected_images,
                   not args.no_authors, args.json, args.profile)


def config_args(args) -> str:
    """The --config/--set options as given, for commands that an error message suggests."""
    return " ".join([*(f"--config {c}" for c in args.config), *(f"--set {o}" for o in args.overrides)])


def cmd_aggregate(args) -> None:
    from ocbench.aggregate import write

    print(f"wrote {write(load_config(args), args.allow_partial, config_args(args))}")


def cmd_figures(args) -> None:
    from ocbench.figures import render

    render(load_config(args), args.allow_partial, config_args(args))


def cmd_summary(args) -> None:
    from ocbench.summary import write

    print("wrote " + ", ".join(map(str, write(load_config(args), args.allow_partial, config_args(args)))))


def cmd_claims(args) -> None:
    if args.pool:
        from ocbench.pool import write as write_pooled

        print("wrote " + ", ".join(map(str, write_pooled(args.pool, args.config, args.overrides, args.allow_partial))))
        return
    from ocbench.claims import write

    print("wrote " + ", ".join(map(str, write(load_config(args), args.allow_partial, config_args(args)))))


def cmd_bundle(args) -> None:
    from ocbench.bundle import write_bundle

    print(f"wrote {write_bundle(load_config(args), args.out, args.format, args.with_snapshots, args.lab)}")


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """`ocbench COMMAND ...`: one subcommand per job, each calling one plain function (cmd_* above),
    registered by group below."""
    parser = argparse.ArgumentParser(
        prog="ocbench", description="Reproduce 'Stabilizing GANs with Octave Convolutions'."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (add_run_commands, add_data_commands, add_fid_commands, add_report_commands,
                         add_gpu_commands, add_bench_commands):
        add_commands(sub)
    return parser


def add_run_commands(sub) -> None:
    """A run and its config: config, model-info, train, preflight, status, sample."""
    p = sub.add_parser("config", help="print the merged, validated config")
    add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("model-info", help="parameters and conv FLOPs of each variant's G and D")
    add_config_args(p)
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("train", help="train one run {gan}_{variant}_s{seed}; rerun to resume")
    add_config_args(p)
    p.add_argument("--run", required=True, help="run id, e.g. dcgan_oct_s0")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("preflight", help="prove this machine for the config in minutes: environment, data, "
                       "training and its speed options, resume, FID on the device, the projected time")
    add_config_args(p)
    p.add_argument("--iterations", type=int, default=None, metavar="K",
                   help="batches per epoch of the training checks (default 3 on a GPU, 2 on the CPU)")
    p.add_argument("--fid-images", type=int, default=None, metavar="M",
                   help="generated images of the FID check (default 256 on a GPU, 8 on the CPU)")
    p.add_argument("--json", metavar="PATH", help="also write the checks as JSON")
    p.set_defaults(func=cmd_preflight)

    p = sub.add_parser("status", help="every run of the config: state, epoch, FID, speed, time left, lock")
    add_config_args(p)
    p.add_argument("--watch", type=float, nargs="?", const=60.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 60) until Ctrl-C")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sample", help="PNG files (or one grid) from a generator, with the FID's latents and pixels")
    add_config_args(p)
    p.add_argument("--generator", required=True, metavar="CKPT", help="a generator_epoch_EEE.pt")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="DIR", help="write N PNG files 000000.png ... there (for python -m pytorch_fid)")
    out.add_argument("--grid", metavar="FILE", help="write the N images as one PNG grid instead")
    p.add_argument("-n", type=int, default=None,
                   help="number of images (default: as many as its epoch's evaluation; a grid has 64)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the latents, as `ocbench fid score --seed` (default: its epoch's evaluation's)")
    p.add_argument("--device", default=None, help="default: train.device (auto: GPU when there is one)")
    p.set_defaults(func=cmd_sample)


def add_data_commands(sub) -> None:
    """CelebA: data fetch, prepare, verify, synth."""
    p = sub.add_parser("data", help="CelebA: fetch, prepare, or write a synthetic one")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    q = data_sub.add_parser("fetch", help="download img_align_celeba.zip (data.sources, then the known mirrors), "
                                          "write list_eval_partition.txt; verify both")
    add_config_args(q)
    q.add_argument("--only", choices=["images", "partition"], default=None,
                   help="fetch/check just data.images or just data.partition (one file per workflow rule)")
    q.set_defaults(func=cmd_data_fetch)
    q = data_sub.add_parser("prepare", help="crop + resize every image of the split into one uint8 .npy")
    add_config_args(q)
    q.add_argument("--skip-corrupt", action="store_true",
                   help="leave out JPEGs that fail to decode (recorded in the JSON) instead of failing")
    q.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    q.set_defaults(func=cmd_data_prepare)
    q = data_sub.add_parser("verify", help="check the prepared array against the sha256 prepare recorded")
    add_config_args(q)
    q.set_defaults(func=cmd_data_verify)
    q = data_sub.add_parser("synth", help="write a synthetic CelebA zip + partition file (tests, smoke runs)")
    add_config_args(q)
    q.add_argument("--out", metavar="ZIP", help="zip to write (partition file beside it); default: the config's")
    q.add_argument("--n", type=int, default=None, help="number of images (with --out)")
    q.add_argument("--seed", type=int, default=None, help="seed (with --out; default 0)")
    q.set_defaults(func=cmd_data_synth)


def add_fid_commands(sub) -> None:
    """Inception's weights, the reference statistics, a FID: fid weights, stats, score."""
    p = sub.add_parser("fid", help="Inception weights, reference statistics, FID and precision/recall")
    fid_sub = p.add_subparsers(dest="fid_command", required=True, metavar="FID_COMMAND")
    q = fid_sub.add_parser("weights", help="fetch and check pytorch-fid's Inception weights")
    add_config_args(q)
    q.set_defaults(func=cmd_fid_weights)
    q = fid_sub.add_parser("stats", help="reference mu/sigma and real features of the prepared images")
    add_config_args(q)
    q.add_argument("--device", default=None, help="default: train.device (auto: GPU when there is one)")
    q.set_defaults(func=cmd_fid_stats)
    q = fid_sub.add_parser("score", help="FID and precision/recall of a generator or an image folder")
    add_config_args(q)
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", metavar="CKPT", help="a generator_epoch_EEE.pt")
    src.add_argument("--images", metavar="DIR", help="a folder of images (as python -m pytorch_fid)")
    q.add_argument("--stats", metavar="NPZ", help="reference statistics (default: metrics.stats)")
    q.add_argument("-n", type=int, default=None,
                   help="samples from the generator (default: as many as its epoch's evaluation in training)")
    q.add_argument("--seed", type=int, default=None,
                   help="seed of the latents (default: its epoch's evaluation's, so the FID in metrics.csv)")
    q.add_argument("--final", action="store_true",
                   help="the FID as the final evaluation's, against metrics.final_real_images real images when "
                        "set (with run.json's final -n and --seed: its FID)")
    q.add_argument("--device", default=None, help="default: train.device (auto: GPU when there is one)")
    q.set_defaults(func=cmd_fid_score)


def add_report_commands(sub) -> None:
    """What the finished runs say: aggregate, figures, summary, claims, bundle."""
    partial_help = "use the runs that exist (missing ones are named) instead of failing"
    p = sub.add_parser("aggregate", help="every run's per-epoch metrics into results/<config>/metrics.csv")
    add_config_args(p)
    p.add_argument("--allow-partial", action="store_true", help=partial_help)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("figures", help="the paper's Figures 2-7 (and 8, beyond it) into figures/<config>/")
    add_config_args(p)
    p.add_argument("--allow-partial", action="store_true", help=partial_help + " (e.g. while training runs)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("summary", help="stability summary: results/<config>/summary.md and summary.csv")
    add_config_args(p)
    p.add_argument("--allow-partial", action="store_true", help=partial_help)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("claims", help="each paper claim as a verdict: results/<config>/claims.md, .csv, "
                                      "figures/<config>/claims.*")
    add_config_args(p)
    p.add_argument("--allow-partial", action="store_true",
                   help=partial_help + " (with --pool: also leave out what does not agree with the first source)")
    p.add_argument("--pool", nargs="+", metavar="BUNDLE_OR_FOLDER",
                   help="judge the claims on the runs of these bundles and results folders together, each a lab, "
                        "into results/<config>/pooled/ (--config/--set merge over the first one's config); "
                        "see docs/labs.md")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("bundle", help="one file to send another lab: every run's metrics.csv, run.json and snapshot "
                                      "epochs' grids, the merged config, provenance and a sha256 manifest")
    add_config_args(p)
    p.add_argument("--out", metavar="DIR", help="folder to write <config>-<hash>.<format> to (default: paths.results)")
    p.add_argument("--format", choices=["tar.gz", "zip"], default="tar.gz")
    p.add_argument("--with-snapshots", action="store_true",
                   help="also the generator snapshots of the snapshot epochs (checkpoints never)")
    p.add_argument("--lab", metavar="NAME", help="record this lab name (without it the bundle names no lab)")
    p.set_defaults(func=cmd_bundle)


def add_gpu_commands(sub) -> None:
    """A GPU slot of the job's own: with-gpu."""
    p = sub.add_parser("with-gpu", help="claim a free GPU slot, then run COMMAND on it (after --)")
    add_config_args(p)
    p.add_argument("--devices", help="comma-separated GPU ids (default: gpus.devices of the config)")
    p.add_argument("--runs-per-gpu", type=int, help="slots per GPU (default: gpus.runs_per_gpu)")
    p.add_argument("--lock-dir", help="folder of the slot locks (default: gpus.lock_dir)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up (exit 1) when no slot is free after this long (default: wait as long as it takes)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_with_gpu)


def add_bench_commands(sub) -> None:
    """The benchmarks (BENCHMARKS.md): bench prepare, eval, train, protocol."""
    p = sub.add_parser("bench", help="benchmarks (see BENCHMARKS.md)")
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    q = bench_sub.add_parser("prepare", help="data prepare images/s against the authors' one-PNG-per-image way")
    q.add_argument("--n", type=int, default=5000, help="synthetic CelebA images to build and prepare")
    q.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    q.add_argument("--workdir", default=None, help="working folder (default: a temporary one, removed after)")
    q.set_defaults(func=cmd_bench_prepare)
    q = bench_sub.add_parser("eval", help="the Frechet step and one per-epoch evaluation, scipy vs eigh, and against PNGs + the pytorch-fid CLI")
    q.add_argument("--n", type=int, default=200, help="generated images per evaluation")
    q.add_argument("--real", type=int, default=None, help="real images for the stats and P/R (default: n)")
    q.add_argument("--width", type=int, default=8, help="generator width d (the paper: 32)")
    q.add_argument("--batch-size", type=int, default=200)
    q.add_argument("--device", default="auto")
    q.add_argument("--workers", type=int, default=None, help="pytorch-fid --num-workers (default: its own)")
    q.add_argument("--no-cli", action="store_true", help="skip the authors' route (PNGs + the pytorch-fid CLI)")
    q.add_argument("--cpu-check", type=int, default=0, metavar="M",
                   help="also the FID of the first M images with Inception on the CPU, and on the device with TF32 off")
    q.set_defaults(func=cmd_bench_eval)
    q = bench_sub.add_parser("train", help="training it/s, ours against the authors' data loop")
    add_config_args(q)
    q.add_argument("--iterations", type=int, default=10, help="timed iterations per case")
    q.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    q.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    q.set_defaults(func=cmd_bench_train)
    q = bench_sub.add_parser("protocol", help="project the configured protocol's device-hours from timed "
                                              "iterations and evaluations, ours and the authors' route")
    add_config_args(q)
    q.add_argument("--iterations", type=int, default=20, help="timed iterations per case")
    q.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    q.add_argument("--projected-images", type=int, default=None, metavar="N",
                   help="images per epoch to project for, e.g. 202599 for CelebA (default: the prepared array's)")
    q.add_argument("--no-authors", action="store_true", help="skip the authors' route (PNG loader, pytorch-fid CLI)")
    q.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    q.add_argument("--profile", action="store_true", help="print the top ops/kernels of a few iterations per case")
    q.set_defaults(func=cmd_bench_protocol)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # here, so that a reader gone away (`ocbench status | head`) is caught below
    except OcbenchError as exc:
        print(f"ocbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ocbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout stopped reading: nothing more to say, and no traceback. Python's docs'
        # way (library/signal, "Note on SIGPIPE"): stdout onto devnull, so that the flush at exit
        # does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
