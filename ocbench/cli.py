"""`ocbench`: one command with subcommands, a thin layer over the library's plain functions.

Every subcommand takes `--config FILE` (repeatable; merged over workflow/config/paper.yaml in order,
as Snakemake's --configfile) and `--set dotted.key=value` overrides.
"""

from __future__ import annotations

import argparse
import sys

from ocbench import config as config_mod
from ocbench.errors import OcbenchError


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
    from ocbench.train import train

    cfg = load_config(args)
    cfg.parse_run(args.run)  # a bad run id fails before any data is read
    train(cfg, args.run)


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocbench", description="Reproduce 'Stabilizing GANs with Octave Convolutions'."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except OcbenchError as exc:
        print(f"ocbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ocbench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
