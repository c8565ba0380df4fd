"""The `plmkit` command line: one thin module per sub-command.

Each module in COMMANDS defines `add_parser(subparsers)`, which registers its
sub-command and sets `func` to the function that runs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from plmkit.errors import PlmkitError

COMMANDS = ("tokenizer", "data", "pretrain", "finetune", "evaluate", "predict", "generate", "chat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmkit", description="Pre-trained language models: train, fine-tune, use.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"plmkit.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PlmkitError as err:
        print(f"plmkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plmkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
