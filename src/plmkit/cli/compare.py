"""`plmkit compare DIR... [--eval FILE] [--out DIR]`: variants of one model side by side.

Each directory is measured (plmkit.compression.report: size on disk, parameters, latency and
throughput at batch 1 and 32, the task metric on --eval) and printed as one table with ratios to the
first; --out also gets compare.json and compare.png (latency vs the metric, marker area = size).
A directory runs on the backend whose weight files it holds (torch first); `BACKEND:DIR` names one
(onnxruntime-int8:DIR, the int8 graphs of an export). An encoder's latency is a forward pass; a
causal LM's or an encoder-decoder's is greedy generation of --new-tokens tokens per row.
"""
from __future__ import annotations

import argparse

from plmkit.compression.records import COMPARE_FILES
from plmkit.compression.report import DEFAULT_NEW_TOKENS

COMPARE_JSON, COMPARE_PNG = COMPARE_FILES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="size, speed and accuracy of model variants side by side",
                              description=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="DIR", help="model directories (the first is the baseline)")
    p.add_argument("--eval", metavar="FILE", default=None, help="labelled data in the training format: the metric")
    p.add_argument("--out", metavar="DIR", default=None, help="write compare.json and compare.png here")
    p.add_argument("--batch-sizes", metavar="N,N", default="1,32", help="batch sizes timed (default 1,32)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: as set)")
    p.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS, metavar="N",
                   help=f"generative models: tokens generated per row while timed (default {DEFAULT_NEW_TOKENS})")
    p.set_defaults(func=run)


def batch_sizes_of(text: str) -> tuple[int, ...]:
    """--batch-sizes 1,32 -> (1, 32)."""
    from plmkit.errors import ConfigError
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch-sizes: comma-separated integers of 1 or more, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    from plmkit.cli.reporting import check_threads
    from plmkit.compression.report import BACKENDS, backend_of, format_report, measure, plot_reports, save_report
    from plmkit.utils.files import output_dir

    batch_sizes = batch_sizes_of(args.batch_sizes)
    check_threads(args.threads)
    if args.out is not None:  # before measuring: a bad --out then costs nothing
        output_dir(args.out, "--out")
    reports = []
    for given in args.models:
        name, sep, rest = given.partition(":")
        backend, directory = (name, rest) if sep and name in BACKENDS else (None, given)
        reports.append(measure(directory, eval_file=args.eval, batch_sizes=batch_sizes, threads=args.threads,
                               backend=backend or backend_of(directory), new_tokens=args.new_tokens))
        print(format_report(reports[-1:], None).splitlines()[2], flush=True)  # each row (after the header) as soon as measured
    print()
    print(format_report(reports, reports[0]))
    if args.out is not None:
        path = save_report(args.out, {"baseline": reports[0]["model"], "models": reports}, COMPARE_JSON)
        plot = plot_reports(reports, path.parent / COMPARE_PNG)
        print(f"wrote {path} and {plot}")
    return 0
