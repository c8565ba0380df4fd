"""`plmkit quantize --model DIR --out DIR [--method dynamic-int8|weight-int8] [--eval FILE]`.

Writes an int8 copy of a model directory (plmkit.compression.quantize), then measures the model
before and after (size on disk, parameters, latency and throughput at batch 1 and 32, the task
metric on --eval: plmkit.compression.report), prints the table and saves it as
OUT/compression_report.json.
"""
from __future__ import annotations

import argparse

from plmkit.cli.reporting import add_report_flags, check_report_flags, report
from plmkit.nn.quantized import METHODS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="int8 Linear layers for CPU inference, with a before/after report",
                              description=__doc__.split("\n\n", 1)[1] + (
                                  "\nMethods: dynamic-int8 (int8 weights and, at run time, int8 activations: "
                                  "about 3x faster Linear layers on an x86 CPU); weight-int8 (int8 only on disk, "
                                  "fp32 compute: the file shrinks, outputs stay closest to fp32). The result "
                                  "runs on the CPU only and cannot be fine-tuned."),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (fine-tuned or not)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where the quantized model directory goes (an earlier one there is replaced)")
    p.add_argument("--method", choices=METHODS, default="dynamic-int8", help="default dynamic-int8")
    p.add_argument("--eval", metavar="FILE", default=None, help="labelled data in the training format: the metric "
                                                                "before and after")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out that holds other files than an earlier quantized model")
    add_report_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.quantize import quantize_dir

    check_report_flags(args, args.eval)
    out = quantize_dir(args.model, args.out, args.method, overwrite=args.overwrite)
    print(f"wrote {out} ({args.method})", flush=True)
    report(args, args.model, out, args.eval, out)
    return 0
