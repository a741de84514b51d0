"""The ``mtprune`` command: the parser, built from the subcommands in ``commands/``, and ``main``.

Library functions raise ``MtpruneError``; only this module turns errors into messages and exit
codes.  Nothing heavy (torch, transformers) is imported until a command runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from .commands.memory_check import check_command
from .options import LAYER_IDS_NOTE
from ..errors import MtpruneError

logger = logging.getLogger("mtprune")

# subcommands in mtprune/commands/, each with add_parser(subparsers) and run(args) (registered in this order)
COMMAND_MODULES: tuple[str, ...] = ("info", "prune", "translate", "evaluate", "search", "report", "quickstart",
                                    "trim_vocab", "synthesize", "heal", "finetune", "quantize", "bench", "run",
                                    "export_submission", "check_submission")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtprune",
        description="Make LLMs cheaper for machine translation by removing whole decoder layers: "
        "score each layer by translation quality, prune iteratively, export, evaluate. " + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with: mtprune quickstart   (packaged gemma-3-270m + bundled en-de sample)\n"
        "Each command has its own help: mtprune COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"mtprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mtprune").setLevel(level)
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _setup_logging(args)
    try:
        check_command(args)  # memory, before any weight loads
        return int(args.func(args) or 0)
    except MtpruneError as exc:
        print(f"mtprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
