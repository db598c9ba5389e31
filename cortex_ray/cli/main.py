"""Entry point of the ``cortex-ray`` console script: one sub-command per module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cortex_ray import __version__
from cortex_ray.cli import build_config, deploy, get, logs, run, validate

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex-ray",
        description="Serve Cortex-style model APIs (cortex.yaml) on Ray Serve.",
    )
    parser.add_argument("--version", action="version", version=f"cortex-ray {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    validate.add_parser(subparsers)
    build_config.add_parser(subparsers)
    run.add_parser(subparsers)
    deploy.add_parsers(subparsers)
    get.add_parser(subparsers)
    logs.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
