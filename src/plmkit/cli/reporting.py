"""The before/after report that a compression command prints and saves (plmkit.compression.report):
size on disk, parameters, latency and throughput, and the task metric on --eval."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report (before vs after)")
    group.add_argument("--batch-sizes", metavar="N,N", default="1,32", help="batch sizes timed (default 1,32)")
    group.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads while timing")
    group.add_argument("--no-report", action="store_true", help="no measuring after the command")


def report_batch_sizes(args: argparse.Namespace) -> tuple[int, ...]:
    """--batch-sizes, checked."""
    from plmkit.cli.compare import batch_sizes_of
    return batch_sizes_of(args.batch_sizes)


def check_threads(threads: int | None) -> None:
    from plmkit.errors import ConfigError
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give 1 or more threads")


def check_report_flags(args: argparse.Namespace, eval_file) -> None:
    """The report's flags and its --eval file, checked before a command's work, so that a typo costs
    nothing (none with --no-report)."""
    from plmkit.errors import ConfigError
    if args.no_report:
        return
    report_batch_sizes(args)
    check_threads(args.threads)
    if eval_file is not None and not Path(eval_file).is_file():
        raise ConfigError(f"--eval {eval_file}: no such file")


def report(args: argparse.Namespace, before, after, eval_file, out_dir) -> Path | None:
    """Measure model directories `before` and `after`, print the table, save it in `out_dir`; None
    with --no-report."""
    if args.no_report:
        return None
    from plmkit.compression.report import format_report, measure, save_report
    sizes = report_batch_sizes(args)
    measured = [measure(d, eval_file=eval_file, batch_sizes=sizes, threads=args.threads) for d in (before, after)]
    print(format_report(measured, measured[0]))
    path = save_report(out_dir, {"before": measured[0], "after": measured[1]})
    print(f"wrote {path}")
    return path
