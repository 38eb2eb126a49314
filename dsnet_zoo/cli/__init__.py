"""The ``dsnet-zoo`` command line. Each subcommand lives in its own module of this package,
which defines ``add_parser(subparsers)`` and sets ``func`` (returning an exit code) on its parser."""
from __future__ import annotations

import argparse
import importlib
import sys

# module names of the subcommands, in the order ``--help`` lists them
COMMAND_MODULES = [
    "list_cmd",
    "info_cmd",
    "publish_cmd",
    "serve_hub_cmd",
    "verify_cmd",
    "train_cmd",
    "eval_cmd",
    "port_paper_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dsnet-zoo",
        description="Model zoo of structure-preserving (dynamical-systems based) neural networks.")
    parser.add_argument("--version", action="version", version=f"dsnet_zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{mod}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..hub import WeightsError
    from ..registry import UnknownModelError

    try:
        return int(args.func(args) or 0)
    except (UnknownModelError, WeightsError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"dsnet-zoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
