"""`plmkit predict --model DIR --input FILE|-`: JSONL predictions on stdout (or --output)."""
from __future__ import annotations

import argparse
import json
import sys

from plmkit import tasks
from plmkit.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict with a fine-tuned model",
        description="Input: JSONL records as in the training data (labels not needed), or '-' for JSONL on "
                    "stdin; also CoNLL (ner), CSV/TSV (classification), SQuAD JSON (qa). Output, one JSON line per "
                    "record: classification {label, score, probabilities}; ner {text, entities: [{entity_group, "
                    "score, word, start, end}]} (character offsets; word indices for 'tokens' input); relation "
                    "{relation, score, probabilities}; qa {id, answer, score, start, end} (character offsets "
                    "into the context; empty answer = no answer).")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="input file, or - for stdin")
    p.add_argument("--output", default=None, help="write here instead of stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--null-score-diff-threshold", type=float, default=None, metavar="T",
                   help="QA v2: answer only when null score - best span score <= T (default: the model's, 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records, lines = tasks.read_prediction_input(tasks.load_task(args.model), args.input)
    results = tasks.predict_dir(args.model, records, args.batch_size, args.device,
                                where="<stdin>" if args.input == "-" else args.input,
                                null_score_diff_threshold=args.null_score_diff_threshold, lines=lines)
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    except OSError as err:
        raise ConfigError(f"--output {args.output}: cannot write there ({err.strerror})") from None
    try:
        for r in results:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    return 0
