"""`plmkit predict --model DIR --input FILE|-`: JSONL predictions on stdout (or --output)."""
from __future__ import annotations

import argparse
import json
import sys

from plmkit import tasks
from plmkit.cli.flags import add_settings_flags, settings_from_args
from plmkit.errors import ConfigError
from plmkit.tasks.inference import InferenceSettings
from plmkit.utils.files import atomic_open, refuse_overwriting_inputs


FORMATS = ("Input: JSONL records as in the training data (labels not needed), or '-' for JSONL on stdin; also "
           "CoNLL (ner), CSV/TSV (classification), SQuAD JSON (qa). Output, one JSON line per record: "
           "classification {label, score, probabilities}; ner {text, entities: [{entity_group, score, word, start, "
           "end}]} (character offsets; word indices for 'tokens' input); relation {relation, score, probabilities}; "
           "qa {id, answer, score, start, end} (character offsets into the context; empty answer = no answer).")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict with a fine-tuned model", description=FORMATS)
    add_settings_flags(p, InferenceSettings)
    p.add_argument("--input", required=True, help="input file, or - for stdin")
    p.add_argument("--output", default=None, help="write here instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args, InferenceSettings)
    if args.output is not None:
        if not args.output:
            raise ConfigError("--output is empty: give a file path (or leave it out for stdout)")
        refuse_overwriting_inputs(args.output, "--output", [("--input", args.input), ("--model", s.model)])
    if args.input == "-":
        results = _streamed(s)
    else:
        records, lines = tasks.read_prediction_input(tasks.load_task(s.model), args.input)
        results = tasks.predict_dir(s.model, records, s.batch_size, s.device, where=args.input,
                                    null_score_diff_threshold=s.null_score_diff_threshold, lines=lines, backend=s.backend)
    if args.output is None:
        _write(results, sys.stdout)
        return 0
    with atomic_open(args.output) as out:  # the whole output, or the file as it was
        _write(results, out)
    return 0


def _streamed(s: InferenceSettings):
    """The answers to stdin's JSON lines, each as soon as its line has come (a translator, say, answers
    one sentence at a time); empty input is an error."""
    from plmkit.errors import DataError
    from plmkit.utils.text import parse_json_lines, stdin_lines

    model, tokenizer, task = tasks.load_for_inference(s.model, s.device, s.null_score_diff_threshold, s.batch_size,
                                                     s.backend)
    task = task.for_stream()  # one task for the whole stream: what holds across its lines (record numbers, ids)
    answered = False
    for line, record in parse_json_lines(stdin_lines(), "<stdin>"):
        yield from tasks.predict_records(model, tokenizer, task, [record], 1, "<stdin>", [line])
        answered = True
    if not answered:
        raise DataError("<stdin>: no input (stdin is empty)")


def _write(results, out) -> None:
    for result in results:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.flush()
