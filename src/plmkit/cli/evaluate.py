"""`plmkit evaluate --model DIR --data FILE [--json]`: the task's metrics on labelled data."""
from __future__ import annotations

import argparse
import json
import math

from plmkit import tasks
from plmkit.cli.flags import add_settings_flags, settings_from_args
from plmkit.tasks.inference import InferenceSettings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a fine-tuned model on labelled data",
                              description="Accuracy/F1 (classification), entity P/R/F1 (ner), micro-F1 without "
                                          "the no-relation class (relation), exact match/F1 (qa; SQuAD v2 adds the "
                                          "best no-answer threshold on the data: best_exact/best_f1, "
                                          "best_exact_thresh/best_f1_thresh). Under torchrun (torchrun "
                                          "--nproc_per_node N -m plmkit evaluate ...) the processes share the "
                                          "evaluation and rank 0 prints.")
    add_settings_flags(p, InferenceSettings)
    p.add_argument("--data", required=True, help="labelled data in the training format")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Under torchrun, every process evaluates its part and rank 0 prints the metrics of the whole."""
    from plmkit.training import distributed
    s = settings_from_args(args, InferenceSettings)
    with distributed.process_group(s.device):
        part = distributed.EvalShard() if distributed.world_size() > 1 else None
        metrics = tasks.evaluate_dir(s.model, args.data, s.batch_size, str(distributed.device(s.device)),
                                     s.null_score_diff_threshold, backend=s.backend, part=part)
    if not distributed.is_main():
        return 0
    if args.json:  # an undefined metric (NaN) is null: JSON has no NaN
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}))
        return 0
    width = max(map(len, metrics))
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0
