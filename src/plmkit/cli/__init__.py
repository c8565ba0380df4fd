"""The `plmkit` command line: one thin module per sub-command.

Each module in COMMANDS defines `add_parser(subparsers)`, which registers its
sub-command and sets `func` to the function that runs it.

The library only logs (to the "plmkit" logger); the command line shows those lines on stderr,
one plain line each: INFO and above by default, warnings and errors only with ``--quiet`` (which
hides the progress bars too), debug lines too with ``--verbose``. Both flags go before or after the sub-command.
Results a command prints for the user go to stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import Iterator

from plmkit.errors import PlmkitError
from plmkit.utils.progress import bars_off

COMMANDS = ("tokenizer", "data", "pretrain", "finetune", "distill", "prune", "evaluate", "predict", "generate", "chat",
            "quantize", "compare", "export", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmkit", description="Pre-trained language models: train, fine-tune, use.")
    add_logging_flags(parser, logging.INFO)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"plmkit.cli.{name}").add_parser(sub)
    for command in _subcommands(sub):  # the flags after the sub-command too; unset there, the global value holds
        add_logging_flags(command, argparse.SUPPRESS)
    return parser


def add_logging_flags(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                       default=default, help="show only warnings and errors (no progress bars)")
    group.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                       default=default, help="show debug messages too")


def _subcommands(action: argparse._SubParsersAction) -> Iterator[argparse.ArgumentParser]:
    """Every parser under `action`, nested sub-commands (``data fetch``) included."""
    for parser in action.choices.values():
        yield parser
        for nested in parser._actions:
            if isinstance(nested, argparse._SubParsersAction):
                yield from _subcommands(nested)


class _ProgressSafeHandler(logging.StreamHandler):
    """Writes each line through `tqdm.write`, so a progress bar on the terminal is redrawn below it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(level: int) -> Iterator[None]:
    """Show the "plmkit" logger's lines of `level` and above on stderr while a command runs."""
    logger = logging.getLogger("plmkit")
    handler = _ProgressSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        with bars_off(level > logging.INFO):  # every progress bar of a quiet command is off
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_logging(args.log_level):
        return run_command(args.command, lambda: args.func(args))


def run_command(command: str, run) -> int:
    """``run()``'s exit status (None: 0) as a command's: a PlmkitError one line on stderr and 2, Ctrl-C 130,
    a reader of stdout gone 141 (as SIGPIPE), a failed write to stdout one line and 2."""
    try:
        return run() or 0
    except PlmkitError as err:
        print(f"plmkit {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plmkit {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `plmkit predict ... | head`: the reader has what it wanted
        _silence_stdout()
        return 141  # as a process stopped by SIGPIPE
    except OSError as err:  # writing the results to stdout: a full disk, say
        if err.filename is not None:
            raise
        from plmkit.utils.files import write_error
        _silence_stdout()
        print(f"plmkit {command}: error: {write_error('standard output', err)}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
