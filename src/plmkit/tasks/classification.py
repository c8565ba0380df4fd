"""Sequence (and sentence-pair) classification: single-label, multi-label or regression over a text
or a text pair. Data: JSONL, CSV or TSV with `text`, optional `text_pair`, and `label`.

A string or integer label is a class (single-label); a list of them is a set of classes
(multi-label); a float is a regression target. CSV/TSV need a header row naming the columns;
there a label that parses as a non-integer number is a regression target.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from plmkit.errors import DataError
from plmkit.evaluation import ClassificationMetrics, MultiLabelMetrics, RegressionMetrics
from plmkit.tasks.base import Task, TaskSettings, need_two_labels
from plmkit.tasks.common import LossMeter, class_probabilities, forward_batches, predict_per_record, record_object
from plmkit.utils.settings import setting
from plmkit.utils.text import jsonl_rows, read_lines

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"


@dataclass
class ClassificationSettings(TaskSettings):
    section = "classification"
    problem_type: str | None = setting(None, "set from the training labels: single_label_classification, "
                                             "multi_label_classification or regression", cli=False)


@dataclass
class ClassificationExample:
    text: str
    text_pair: str | None
    label: object  # str | list[str] | float | None (unlabelled)
    line: int


def read_classification(path: str | Path, require_label: bool = True) -> list[ClassificationExample]:
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = _table_rows(path, "\t" if path.suffix.lower() == ".tsv" else ",")
    else:
        rows = jsonl_rows(path)
    examples = []
    for lineno, row in rows:
        text = row.get("text", row.get("sentence"))
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty string field 'text'")
        pair = row.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise DataError(f"{path}:{lineno}: 'text_pair' must be a string, got {type(pair).__name__}")
        label = row.get("label")
        if label is None and require_label:
            raise DataError(f"{path}:{lineno}: no 'label' field")
        if label is not None:
            label = _normalise_label(label, f"{path}:{lineno}")
        examples.append(ClassificationExample(text, pair or None, label, lineno))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _normalise_label(label, where: str):
    if isinstance(label, bool):
        return str(label).lower()
    if isinstance(label, (str, int)):
        return str(label)
    if isinstance(label, float):
        if not math.isfinite(label):
            raise DataError(f"{where}: 'label' is {label}; a regression target must be a finite number")
        return label
    if isinstance(label, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in label):
        return [str(v) for v in label]
    raise DataError(f"{where}: 'label' must be a string, integer, list of them, or a float; got {label!r}")


def _table_rows(path: Path, delimiter: str):
    lines = read_lines(path)
    reader = csv.DictReader((line + "\n" for line in lines), delimiter=delimiter)  # keeps breaks inside quotes
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise DataError(f"{path}:1: the header row must name a 'text' column (and 'label'); got {reader.fieldnames}")
    end = reader.line_num
    for row in reader:
        lineno, end = _record_start(lines, end), reader.line_num
        _check_quotes(lines, lineno, end, path)
        if None in row:
            raise DataError(f"{path}:{lineno}: more fields than the header has")
        row = {k: v for k, v in row.items() if v is not None and v != ""}
        if "label" in row:
            row["label"] = _number_or_text(row["label"])
        yield lineno, row


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


def problem_type_of(examples: list[ClassificationExample], path=None) -> str:
    kinds = {MULTI if isinstance(e.label, list) else REGRESSION if isinstance(e.label, float) else SINGLE
             for e in examples if e.label is not None}
    if len(kinds) > 1:
        first = {k: next(e.line for e in examples if (MULTI if isinstance(e.label, list) else REGRESSION
                                                      if isinstance(e.label, float) else SINGLE) == k) for k in kinds}
        where = f"{path}: " if path is not None else ""
        raise DataError(where + "labels mix kinds: " + ", ".join(f"{k} (first at line {line})" for k, line in first.items()))
    return kinds.pop() if kinds else SINGLE


def label_names(examples: list[ClassificationExample]) -> list[str]:
    """Sorted class names (numerically when they are all integers)."""
    names = set()
    for e in examples:
        if isinstance(e.label, list):
            names.update(e.label)
        elif isinstance(e.label, str):
            names.add(e.label)
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def encode_label(example: ClassificationExample, label2id: dict[str, int], problem_type: str, path) -> object:
    """The model target of one example; unknown classes are a DataError naming file:line."""
    if problem_type == REGRESSION:
        if isinstance(example.label, (list, str)):
            raise DataError(f"{path}:{example.line}: this is a regression model; label must be a number")
        return float(example.label)
    names = example.label if isinstance(example.label, list) else [example.label]
    if isinstance(example.label, float):
        raise DataError(f"{path}:{example.line}: label {example.label!r} is a number; this model classifies")
    unknown = [n for n in names if n not in label2id]
    if unknown:
        raise DataError(f"{path}:{example.line}: unknown label {unknown[0]!r}; the model knows "
                        f"{', '.join(sorted(label2id))}")
    if problem_type == MULTI:
        target = [0.0] * len(label2id)
        for n in names:
            target[label2id[n]] = 1.0
        return target
    if len(names) != 1:
        raise DataError(f"{path}:{example.line}: a single-label model needs one label, got {names}")
    return label2id[names[0]]


def encode_examples(tokenizer, examples: list[ClassificationExample], max_length: int,
                    label2id: dict[str, int] | None = None, problem_type: str = SINGLE, path="data") -> list[dict]:
    """Token ids (truncated to max_length, not padded) + labels, one dict per example."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and not all(p is not None for p in pairs):
        missing = next(e.line for e in examples if e.text_pair is None)
        raise DataError(f"{path}:{missing}: some rows have 'text_pair' and this one does not")
    enc = tokenizer(texts, pairs if has_pairs else None, truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    features = []
    for i, e in enumerate(examples):
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i]}
        if e.label is not None and label2id is not None or problem_type == REGRESSION and e.label is not None:
            f["labels"] = encode_label(e, label2id or {}, problem_type, path)
        features.append(f)
    return features


_LEGACY = object()  # pipeline top_k not passed: Hugging Face's legacy output shape


class ClassificationTask(Task):
    name = "classification"
    model_task = "sequence-classification"
    settings_class = ClassificationSettings
    pipelines = ("text-classification", "sentiment-analysis")
    pipeline_arguments = ("top_k",)
    description = "JSONL/CSV/TSV with text (text_pair) and label"
    reader = staticmethod(read_classification)

    def discover(self, examples, path) -> list[str]:
        self.settings.problem_type = problem_type_of(examples, path)
        if self.settings.problem_type == REGRESSION:
            return ["score"]
        return need_two_labels(label_names(examples), path)

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        return encode_examples(tokenizer, examples, self.settings.max_length, label2id,
                               self.settings.problem_type or SINGLE, path)

    def model_overrides(self) -> dict:
        return {"problem_type": self.settings.problem_type} if self.settings.problem_type else {}

    def main_metric(self) -> str:
        return {REGRESSION: "pearson", MULTI: "f1"}.get(self.settings.problem_type, "accuracy")

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32) -> dict[str, float]:
        problem, n_labels = self.settings.problem_type, model.config.num_labels
        metric = (RegressionMetrics() if problem == REGRESSION else MultiLabelMetrics(n_labels) if problem == MULTI
                  else ClassificationMetrics(n_labels))
        loss = LossMeter()
        for idx, batch, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            loss.add(out, len(idx))
            logits = out.logits.float()
            pred = (logits.squeeze(-1) if problem == REGRESSION else logits.sigmoid() > 0.5 if problem == MULTI
                    else logits.argmax(-1))
            metric.update(pred, batch["labels"])
        return loss.put(metric.compute())

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True) -> list[dict]:
        return predict_per_record(self, model, tokenizer, records, batch_size, where, lines, self._result)

    def to_examples(self, records, where: str, lines=None) -> list[ClassificationExample]:
        out = []
        for k, r in enumerate(records, 1):
            n = lines[k - 1] if lines is not None else k
            r = record_object(r, where, n, text_field="text")
            if not isinstance(r.get("text"), str):
                raise DataError(f"{where}:{n}: needs a string field 'text'")
            if r.get("text_pair") is not None and not isinstance(r["text_pair"], str):
                raise DataError(f"{where}:{n}: 'text_pair' must be a string, got {type(r['text_pair']).__name__}")
            out.append(ClassificationExample(r["text"], r.get("text_pair"), None, n))
        return out

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

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, top_k=_LEGACY):
        """HF's shapes: without ``top_k`` the best label's dict per text (a list of one for one
        text); with it a list of the ``top_k`` best (all for None) per text, flat for one text."""
        single = isinstance(inputs, (str, dict))
        results = self.predict(model, tokenizer, [inputs] if single else list(inputs), batch_size)
        out = [_ranked(r, top_k) for r in results]
        if single:
            return out if top_k is _LEGACY or isinstance(out[0], dict) else out[0]
        return out


def _ranked(result: dict, top_k):
    if "probabilities" not in result:  # regression
        return {"label": result["label"], "score": result["score"]}
    ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
    ranked = [{"label": k, "score": v} for k, v in ranked]
    return ranked[0] if top_k is _LEGACY else ranked[:top_k] if top_k else ranked
