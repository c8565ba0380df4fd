"""`plmkit distill --task TASK --teacher DIR (--student DIR | --student-preset NAME | --init-from-teacher)
--train FILE --out DIR [--eval FILE]`: knowledge distillation (plmkit.recipes.distill).

The flags are fine-tuning's (plmkit finetune), with the student as the model and the ``distill`` section
(the teacher, the temperature and the losses' weights); a run file given with --config holds the same
values, and flags given win.
"""
from __future__ import annotations

import argparse
import sys

from plmkit.cli.finetune import add_task_run_flags, run_of_args
from plmkit.cli.reporting import add_report_flags, check_report_flags, report
from plmkit.recipes.distill import DistillRun

_USAGE = ("plmkit distill --task TASK --teacher DIR (--student DIR | --student-preset NAME | --init-from-teacher "
          "[--student-layers N] [--student-hidden D] [--student-heads H] [--student-ffn F]) --train FILE --out DIR "
          "[--eval FILE] [--temperature T] [--alpha A] [--hidden-weight W] [--attention-weight W] [options]")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="train a small student on a fine-tuned teacher's outputs", usage=_USAGE,
        description="Task-specific knowledge distillation. Classification, NER, relation and QA students learn the "
                    "teacher's soft targets (KL at temperature T, scaled by T^2; QA: over the window's tokens, for "
                    "the answer's start and end) and the hard labels, optionally its hidden "
                    "states and attention distributions; training records without labels get soft targets only. "
                    "A student made from the teacher (--init-from-teacher) keeps every k-th of its layers and, "
                    "with --student-hidden/--student-heads/--student-ffn, its most important heads and neurons and "
                    "its hidden channels of the largest LayerNorm scales. "
                    "sft, translation and summarization students learn targets the teacher generates. Writes what "
                    "plmkit finetune writes: OUT/model, OUT/best (with --eval), run.yaml, metrics.jsonl; then the "
                    "teacher and the student (OUT/best, else OUT/model) are measured side by side: size, latency, "
                    "throughput and the --eval metric, printed and saved as OUT/compression_report.json.")
    add_task_run_flags(p, DistillRun, skip=("model.init",))  # (fine-tuning's bert2bert start)
    add_report_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = run_of_args(args, DistillRun)
    if getattr(args, "print_config", False):
        sys.stdout.write(config.to_yaml())
        return 0
    check_report_flags(args, config.data.eval)
    from plmkit.recipes.finetune import run as train
    from plmkit.training.distributed import is_main
    result = train(config)
    if not is_main():
        return 0
    line = config.make_task().finished(result)
    if line:
        print(line)
    report(args, config.distill.teacher, result.best_dir or result.model_dir, config.data.eval, config.out)
    return 0
