"""Sequence (and sentence-pair) classification: single-label, multi-label or regression over a text
or a text pair. Data: JSONL, CSV or TSV with `text`, optional `text_pair`, and `label`.

A string, integer or boolean label is a class (single-label; true/false are the classes "true" and
"false"); a list of distinct strings or integers is a set of classes (multi-label); a float is a
regression target. The labels of one file have one JSON type: 1 and "1" in one file are an error,
not one class. CSV/TSV need a header row naming each column once, and their lines end as Python's
csv module reads them (at \\n, \\r\\n or a lone \\r). A TSV file is read with quoted fields, as csv and
pandas write them, when it is valid quoted TSV; otherwise (a field's opening quote is closed before the
field ends, or never) as plain TSV, every character as it stands (GLUE's files). In a table a label that
parses as a non-integer number is a regression target, and an empty cell is an empty value (an error for text,
text_pair and label). Whether the model reads sentence pairs is saved with it (`sentence_pairs`), and
evaluation and prediction records must match it.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from plmkit.errors import ConfigError, DataError
from plmkit.evaluation import ClassificationMetrics, MultiLabelMetrics, RegressionMetrics
from plmkit.tasks.base import Task, TaskSettings, need_two_labels
from plmkit.tasks.common import (LossMeter, class_probabilities, forward_batches, pipeline_records, say_cut,
                                 predict_per_record)
from plmkit.tasks.fields import (TEXT, Kind, LabelTypes, check_unique, class_name, each_record, field, only_one)
from plmkit.utils.settings import is_int, setting
from plmkit.utils.text import check_file, jsonl_rows, read_text

FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32: a regression target beyond it is inf in training
SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
INTEGER_NAME = re.compile(r"-?[0-9]+")  # a class name read from an integer label (ASCII digits: "²" is none)
LABELS_OF = {SINGLE: "single class names", MULTI: "lists of class names", REGRESSION: "numbers (regression targets)"}


@dataclass
class ClassificationSettings(TaskSettings):
    section = "classification"
    problem_type: str | None = setting(None, "single_label_classification, multi_label_classification or "
                                             "regression; off: set from the training labels (given: the labels "
                                             "must fit it; integer labels fit regression, as its targets)", cli=False,
                                       choices=(SINGLE, MULTI, REGRESSION))
    sentence_pairs: bool | None = setting(None, "the model reads text + text_pair; off: set from the training data "
                                                "(given: the data must agree; None in a saved model: one saved "
                                                "before this was recorded)", cli=False)


@dataclass
class ClassificationExample:
    text: str
    text_pair: str | None
    label: object  # str | list[str] | float | None (unlabelled)
    line: int


def read_classification(path: str | Path, require_label: bool | None = True) -> list[ClassificationExample]:
    """Examples of a JSONL/CSV/TSV file; `require_label` None: each record's label where it has one
    (distillation's transfer data), False: none read."""
    path = check_file(path)
    rows = _table_rows(path, "\t" if path.suffix.lower() == ".tsv" else ",") \
        if path.suffix.lower() in (".csv", ".tsv") else jsonl_rows(path)
    examples, types = [], LabelTypes()
    for lineno, row in rows:
        example, kind = classification_example(row, f"{path}:{lineno}", lineno, require_label)
        if kind is not None:
            types.add(kind, lineno)
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no examples")
    types.check(path)
    return examples


def classification_example(row: dict, where: str, line: int,
                           labelled: bool | None = True) -> tuple[ClassificationExample, str | None]:
    """One checked record (training, evaluation or prediction) and the JSON type of its label (None
    without one): a non-empty 'text' (or 'sentence'), an optional non-empty 'text_pair', and with
    `labelled` a 'label' (a prediction record's label is not read; None: read where the record has one)."""
    if labelled is None:
        labelled = row.get("label") not in (None, "")
    text = field(row, only_one(row, ("text", "sentence"), where) or "text", where, TEXT)
    pair = field(row, "text_pair", where, TEXT, required=False)
    label, kind = (_label(field(row, "label", where, ANY_LABEL), where) if labelled else (None, None))
    return ClassificationExample(text, pair, label, line), kind


ANY_LABEL = Kind("a class name, a list of them, or a number", lambda v: None)  # checked by `_label`


def _label(label, where: str) -> tuple[object, str | None]:
    """(label as the example holds it, its JSON type): a float is a regression target, a list a
    set of distinct classes (multi-label), anything else one class (`class_name`)."""
    if isinstance(label, float):
        return regression_target(label, where), "number"
    if isinstance(label, list):
        named = [class_name(v, where, f"'label' item {i}") for i, v in enumerate(label)]
        kinds = sorted({k for _, k in named})
        if len(kinds) > 1:
            raise DataError(f"{where}: 'label' mixes {' and '.join(kinds)} items; give every label the same JSON type")
        check_unique(((n, f"item {i}") for i, (n, _) in enumerate(named)), "label", f"{where}: 'label' ")
        return [n for n, _ in named], f"list of {kinds[0]}s" if kinds else None
    return class_name(label, where)


def regression_target(value: float, where: str) -> float:
    """`value` as a regression target: finite and within float32's range (training computes in it)."""
    if not math.isfinite(value):
        raise DataError(f"{where}: 'label' is {value}; a regression target must be a finite number")
    if abs(value) > FLOAT32_MAX:
        raise DataError(f"{where}: 'label' is {value}, beyond float32's range (±3.4e38) that training computes "
                        "in; rescale the targets")
    return value


def _table_rows(path: Path, delimiter: str):
    """(line, row) of a CSV/TSV file, its lines ended as the csv module ends those of a file opened with
    newline='': at \\n, \\r\\n or a lone \\r (old Mac line ends). What csv cannot parse is a DataError
    naming the line."""
    text = read_text(path)
    lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a field may be as long as its file (not 131,072)
    quoting = _tsv_quoting(lines) if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader((line + "\n" for line in lines), delimiter=delimiter,
                            quoting=quoting)  # keeps breaks inside quotes
    try:
        if reader.fieldnames is None or "text" not in reader.fieldnames:
            raise DataError(f"{path}:1: the header row must name a 'text' column (and 'label'); "
                            f"got {reader.fieldnames}")
        check_unique(((name, f"column {i + 1}") for i, name in enumerate(reader.fieldnames)), "column name",
                     f"{path}:1: ")
        end = reader.line_num
        for row in reader:
            lineno, end = _record_start(lines, end), reader.line_num
            _check_quotes(lines, lineno, end, path)
            if None in row:
                raise DataError(f"{path}:{lineno}: more fields than the header has")
            row = {k: v for k, v in row.items() if v is not None}  # an empty cell stays an empty value
            if row.get("label"):
                row["label"] = _number_or_text(row["label"])
            yield lineno, row
    except csv.Error as err:  # the underlying reader's line_num is the line it was parsing
        raise DataError(f"{path}:{reader.reader.line_num}: not valid {path.suffix[1:].upper()} ({err})") from None


def _tsv_quoting(lines: list[str]) -> int:
    """How a TSV file's quotes are read: as csv (and pandas' to_csv(sep="\\t"), spreadsheets) quote fields
    (a field holding a tab, a line break or a quote is wrapped in quotes, its own doubled) when the
    file is valid quoted TSV; otherwise it is plain TSV (GLUE's files): every character as it stands,
    so a text opening with a quote ('"Hello," he said.') keeps it (csv would drop those quotes)."""
    if not any('"' in line for line in lines):
        return csv.QUOTE_MINIMAL
    try:
        for _ in csv.reader((line + "\n" for line in lines), delimiter="\t", strict=True):
            pass
    except csv.Error:  # a quote closed before the end of its field, or never closed
        return csv.QUOTE_NONE
    return csv.QUOTE_MINIMAL


def _record_start(lines: list[str], previous_end: int) -> int:
    """The line a record read after line `previous_end` starts on (the csv module skips empty lines)."""
    start = previous_end + 1
    while start < len(lines) and lines[start - 1] == "":
        start += 1
    return start


def _check_quotes(lines: list[str], start: int, end: int, path: Path) -> None:
    """A record over several lines is a quoted field with line breaks, unless it holds an odd number
    of quotes: then a quote was left open and the record swallowed the lines after it."""
    if end > start and sum(line.count('"') for line in lines[start - 1:end]) % 2:
        raise DataError(f"{path}:{start}: unclosed quote: the record starting here runs on to line {end}; "
                        "close the quoted field with '\"' (a '\"' inside one is written '\"\"')")


def _number_or_text(value: str):
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):  # "nan", "inf": a class name, not a regression target
        return value
    return value if number.is_integer() and "." not in value else number


def _problem(label) -> str:
    return MULTI if isinstance(label, list) else REGRESSION if isinstance(label, float) else SINGLE


def problem_type_of(examples: list[ClassificationExample]) -> str:
    """The problem of the labels (the reader gives every label of a file one kind; `encode_label`
    refuses another)."""
    return next((_problem(e.label) for e in examples if e.label is not None), SINGLE)


def run_problem_type(examples: list[ClassificationExample], given: str | None, path) -> str:
    """The problem type a fine-tuning run trains: `given` (the run's problem_type) when the training labels
    fit it, integer labels fitting regression too (their values are the targets); without one, what the
    labels are (`problem_type_of`)."""
    found = problem_type_of(examples)
    if given is None or given == found:
        return found
    if given == REGRESSION and found == SINGLE:
        odd = next((e for e in examples if not _integer_name(e.label)), None)
        if odd is None:
            return REGRESSION
        raise DataError(f"{path}:{odd.line}: problem_type is regression (given), but 'label' {odd.label!r} is not "
                        "a number; give numeric labels, or leave problem_type out to train a classifier")
    raise DataError(f"{path}: problem_type is {given} (given), but the training labels are {LABELS_OF[found]} "
                    f"({found}); give labels of that kind ({LABELS_OF[given]}), or leave problem_type out")


def _integer_name(label) -> bool:
    return isinstance(label, str) and INTEGER_NAME.fullmatch(label) is not None


def label_names(examples: list[ClassificationExample]) -> list[str]:
    """Sorted class names (numerically when they are all integers written in ASCII digits, as
    integer labels are: "²" passes `str.isdigit` but is no number for `int`)."""
    names = set()
    for e in examples:
        if isinstance(e.label, list):
            names.update(e.label)
        elif isinstance(e.label, str):
            names.add(e.label)
    if all(INTEGER_NAME.fullmatch(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def encode_label(example: ClassificationExample, label2id: dict[str, int], problem_type: str, path) -> object:
    """The model target of one example (a regression's: a number, an integer label too); unknown classes
    are a DataError naming file:line."""
    if problem_type == REGRESSION and _integer_name(example.label):
        return regression_target(float(example.label), f"{path}:{example.line}")
    given = _problem(example.label)
    if given != problem_type:
        kind, wanted = {REGRESSION: ("regression", "a number"), SINGLE: ("single-label", "one label"),
                        MULTI: ("multi-label", 'a list of labels (["x"] for one)')}[problem_type]
        raise DataError(f"{path}:{example.line}: this is a {kind} model: 'label' must be {wanted}, "
                        f"got {example.label!r}")
    if problem_type == REGRESSION:
        return float(example.label)
    names = example.label if isinstance(example.label, list) else [example.label]
    unknown = [n for n in names if n not in label2id]
    if unknown:
        raise DataError(f"{path}:{example.line}: unknown label {unknown[0]!r}; the model knows "
                        f"{', '.join(sorted(label2id))}")
    if problem_type == MULTI:
        target = [0.0] * len(label2id)
        for n in names:
            target[label2id[n]] = 1.0
        return target
    return label2id[names[0]]


def check_pairs(examples: list[ClassificationExample], pairs: bool | None, path) -> bool:
    """Whether `examples` are sentence pairs: all of them or none, and as `pairs` says the model
    reads them (None: unknown, a model saved before it was recorded)."""
    first = examples[0] if examples else None
    known = pairs is not None
    pairs = pairs if known else first is not None and first.text_pair is not None
    odd = next((e for e in examples if (e.text_pair is not None) != pairs), None)
    if odd is not None:
        has = "has a 'text_pair'" if odd.text_pair is not None else "has no 'text_pair'"
        why = (f"the model reads {'sentence pairs (text + text_pair)' if pairs else 'single texts (no text_pair)'}; "
               "use data of the kind it was trained on" if known
               else f"line {first.line} {'has one' if pairs else 'has none'}: give every record a text_pair or none")
        raise DataError(f"{path}:{odd.line}: this record {has}, but {why}")
    return pairs


def encode_examples(tokenizer, examples: list[ClassificationExample], max_length: int,
                    label2id: dict[str, int] | None = None, problem_type: str = SINGLE, path="data",
                    pairs: bool | None = None) -> list[dict]:
    """Token ids (truncated to max_length, not padded) + labels, one dict per example; `pairs`: whether
    the model reads sentence pairs (`check_pairs`)."""
    texts = [e.text for e in examples]
    has_pairs = check_pairs(examples, pairs, path)
    if max_length is not None and max_length < tokenizer.num_special_tokens_to_add(has_pairs) + 1 + has_pairs:
        raise ConfigError(f"max_length={max_length} leaves no token of {'each text' if has_pairs else 'the text'} "
                          f"beside the tokenizer's special tokens; raise --max-length")
    enc = tokenizer(texts, [e.text_pair for e in examples] if has_pairs else None, truncation=True,
                    max_length=max_length, return_token_type_ids=True)
    say_cut(path, enc, {"input_ids": ("texts" if not has_pairs else "text pairs", max_length)})
    features = []
    for i, e in enumerate(examples):
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i]}
        if e.label is not None and label2id is not None or problem_type == REGRESSION and e.label is not None:
            f["labels"] = encode_label(e, label2id or {}, problem_type, path)
        features.append(f)
    return features


def _run_pairs(examples: list[ClassificationExample], given: bool | None, path) -> bool:
    """Whether a run's training records are sentence pairs (all or none), as the run says when it gives it."""
    found = check_pairs(examples, None, path)
    if given is not None and given != found:
        raise DataError(f"{path}: sentence_pairs is {str(given).lower()} (given), but the training records have "
                        f"{'a' if found else 'no'} 'text_pair'; give records of that kind, or leave sentence_pairs out")
    return found


_LEGACY = object()  # pipeline top_k not passed: Hugging Face's legacy output shape


class ClassificationTask(Task):
    name = "classification"
    model_task = "sequence-classification"
    settings_class = ClassificationSettings
    pipelines = ("text-classification", "sentiment-analysis")
    pipeline_arguments = ("top_k", "function_to_apply")
    description = "JSONL/CSV/TSV with text (text_pair) and label"
    reader = staticmethod(read_classification)

    def discover(self, examples, path) -> list[str]:
        """The class names (regression: "score"); the problem type and whether the records are sentence pairs
        are the data's, or the run's when it gives them and the data fits them."""
        s = self.settings
        s.problem_type = run_problem_type(examples, s.problem_type, path)
        s.sentence_pairs = _run_pairs(examples, s.sentence_pairs, path)
        if s.problem_type == REGRESSION:
            return ["score"]
        return need_two_labels(label_names(examples), path)

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        return encode_examples(tokenizer, examples, self.settings.max_length, label2id,
                               self.settings.problem_type or SINGLE, path, self.settings.sentence_pairs)

    def model_overrides(self) -> dict:
        return {"problem_type": self.settings.problem_type} if self.settings.problem_type else {}

    @classmethod
    def from_config(cls, config) -> "ClassificationTask":
        """The problem config.json names, read as transformers reads it: a null one with one label is
        regression (and more labels are single-label, as a null problem_type means here too)."""
        return cls.of(problem_type=config.problem_type or (REGRESSION if config.num_labels == 1 else None))

    def soft_targets(self) -> str | None:
        return "example" if self.settings.problem_type in (None, SINGLE) else None

    def main_metric(self) -> str:
        return {REGRESSION: "pearson", MULTI: "f1"}.get(self.settings.problem_type, "accuracy")

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32, part=None) -> dict[str, float]:
        problem, n_labels = self.settings.problem_type, model.config.num_labels
        metric = (RegressionMetrics() if problem == REGRESSION else MultiLabelMetrics(n_labels) if problem == MULTI
                  else ClassificationMetrics(n_labels))
        loss = LossMeter()
        for idx, batch, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id, part):
            loss.add(out, len(idx))
            logits = out.logits.float()
            pred = (logits.squeeze(-1) if problem == REGRESSION else logits.sigmoid() > 0.5 if problem == MULTI
                    else logits.argmax(-1))
            metric.update(pred, batch["labels"])
        if part is not None:  # (sums on every rank; a regression's pairs gathered to rank 0)
            metric.reduce(part)
            loss.reduce(part)
        return loss.put(metric.compute())

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True) -> list[dict]:
        return predict_per_record(self, model, tokenizer, records, batch_size, where, lines, self._result)

    def to_examples(self, records, where: str, lines=None) -> list[ClassificationExample]:
        """The training reader's checks; a label given is not read."""
        return [classification_example(r, f"{where}:{n}", n, labelled=False)[0]
                for n, r in each_record(records, where, lines, text_field="text")]

    def _result(self, logits, names: dict[int, str]) -> dict:
        if self.settings.problem_type == REGRESSION:
            return {"label": "score" if not names else names[0], "score": float(logits.view(-1)[0])}
        if self.settings.problem_type == MULTI:
            probs = logits.sigmoid().tolist()
            return {"labels": [names[k] for k, p in enumerate(probs) if p > 0.5],
                    "probabilities": {names[k]: p for k, p in enumerate(probs)}}
        return class_probabilities(logits, names)

    def read_prediction_input(self, path: str) -> tuple[list, list[int]]:
        """CSV/TSV files as in training; otherwise JSONL (or '-')."""
        if path != "-" and Path(path).suffix.lower() in (".csv", ".tsv"):
            examples = read_classification(path, require_label=False)
            return ([{"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {})} for e in examples],
                    [e.line for e in examples])
        return super().read_prediction_input(path)

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, top_k=_LEGACY, function_to_apply=None):
        """HF's shapes: without ``top_k`` the best label's dict per input (a list of one for one text, a bare
        dict for one {"text", "text_pair"} dict); with it a list of the ``top_k`` best (all for None) per input,
        flat for one input. Scores: ``function_to_apply`` ("sigmoid", "softmax", "none") of the logits,
        by default HF's: none for regression, sigmoid for one label or multi-label, softmax otherwise."""
        if not (top_k is _LEGACY or top_k is None or is_int(top_k) and top_k >= 1):
            raise ConfigError(f"{name} pipeline: top_k must be a positive integer, or None for every label; "
                              f"got {top_k!r}")
        scores = _score_function(name, function_to_apply, model.config)
        records, single = pipeline_records(inputs, name, text_field="text")
        logits = predict_per_record(self, model, tokenizer, records, batch_size, "inputs", None,
                                    lambda row, names: row)
        out = [_ranked(scores(row).tolist(), model.config.id2label, top_k) for row in logits]
        if single:
            return [out[0]] if top_k is _LEGACY and isinstance(inputs, str) else out[0]
        return out


SCORE_FUNCTIONS = {"sigmoid": torch.sigmoid, "softmax": lambda x: x.softmax(-1), "none": lambda x: x}


def _score_function(name: str, given, config):
    """The function of a row of logits that gives a pipeline's scores (`ClassificationTask.pipeline`)."""
    if given is None:
        problem = getattr(config, "problem_type", None)
        given = ("none" if problem == REGRESSION else "sigmoid" if problem == MULTI or config.num_labels == 1
                 else "softmax")
    if not isinstance(given, str) or given.lower() not in SCORE_FUNCTIONS:
        raise ConfigError(f"{name} pipeline: function_to_apply must be one of {', '.join(SCORE_FUNCTIONS)}, "
                          f"got {given!r}")
    return SCORE_FUNCTIONS[given.lower()]


def _ranked(scores: list[float], names: dict[int, str], top_k):
    """HF's output for one input's `scores`: the best label's dict (no top_k), else the best top_k."""
    if top_k is _LEGACY:
        best = max(range(len(scores)), key=scores.__getitem__)
        return {"label": names[best], "score": scores[best]}
    ranked = sorted(({"label": names[k], "score": v} for k, v in enumerate(scores)), key=lambda r: -r["score"])
    return ranked[:top_k] if top_k is not None else ranked
