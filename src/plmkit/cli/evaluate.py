"""`plmkit evaluate --model DIR --data FILE [--json]`: the task's metrics on labelled data."""
from __future__ import annotations

import argparse
import json

from plmkit import tasks


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a fine-tuned model on labelled data",
                              description="Accuracy/F1 (classification), entity P/R/F1 (ner), micro-F1 without "
                                          "the no-relation class (relation), exact match/F1 (qa; SQuAD v2 adds the "
                                          "best no-answer threshold on the data: best_exact/best_f1, "
                                          "best_exact_thresh/best_f1_thresh).")
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--data", required=True, help="labelled data in the training format")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--null-score-diff-threshold", type=float, default=None, metavar="T",
                   help="QA v2: answer only when null score - best span score <= T (default: the model's, 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = tasks.evaluate_dir(args.model, args.data, args.batch_size, args.device, args.null_score_diff_threshold)
    if args.json:
        print(json.dumps(metrics))
        return 0
    width = max(map(len, metrics))
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    return 0
