"""`plmkit prune --model DIR --out DIR --data FILE --heads F --ffn F [--eval FILE] [--recover-steps N]`:
structured pruning of attention heads and feed-forward neurons (plmkit.recipes.prune)."""
from __future__ import annotations

import argparse

from plmkit.cli.flags import add_settings_flags, settings_from_args
from plmkit.cli.reporting import add_report_flags, check_report_flags, report
from plmkit.recipes.prune import RESULT_FILE, PruneSettings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="remove the least important attention heads and feed-forward neurons",
        description="Scores every attention head and feed-forward neuron by the gradient of the loss on --data with "
                    "respect to a mask on it (Michel et al., 2019), removes the lowest --heads / --ffn fractions from "
                    "the weights (smaller matrices: faster on a CPU), optionally fine-tunes --recover-steps steps, "
                    f"and writes OUT as a model directory (plmkit evaluate/predict take it) with {RESULT_FILE}; then "
                    "the model before and after is measured (size, latency, throughput, the --eval metric), printed "
                    "and saved as OUT/compression_report.json.")
    add_settings_flags(p, PruneSettings)
    add_report_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plmkit.recipes.prune import run as prune
    s = settings_from_args(args, PruneSettings)
    check_report_flags(args, s.eval)
    result = prune(s)
    print(f"pruned: {sum(result.heads)} heads left ({result.heads} per layer), feed-forward widths "
          f"{result.ffn_sizes}; parameters {result.parameters['before']:,} -> {result.parameters['after']:,}")
    for stage, metrics in result.metrics.items():
        if metrics:
            print(f"  {stage:<9}  " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"model: {result.model_dir}")
    report(args, s.model, result.model_dir, s.eval, result.model_dir)
    return 0
