"""Fine-tuning, evaluation and prediction for four tasks, shared by the CLI and `plmkit.pipeline`:

* ``classification``: single-label, multi-label or regression over a text or a text pair;
* ``ner``: token classification over CoNLL words (BIO or BIOES);
* ``relation``: relation between two marked entity spans;
* ``qa``: extractive question answering (SQuAD v1.1 / v2.0).

A fine-tuned model directory is an ordinary Hugging Face model directory (config.json with
id2label/label2id and architectures, model.safetensors) plus the tokenizer files and
``plmkit_task.json``, which records the task and its settings (max_length, problem type, tag
scheme, NER and QA window settings, the QA no-answer threshold) so that `evaluate` and `predict`
know what to do. Long NER sentences and QA contexts are cut into overlapping windows and merged
back per word / per example.

Batches are padded per batch (dynamic padding), training batches are grouped by length, and
evaluation accumulates metrics batch by batch.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from plmkit.data.loader import BatchLoader
from plmkit.data.collate import pad_collate
from plmkit.data.tasks import batches_by_length, length_of
from plmkit.utils.text import jsonl_rows, read_lines
from plmkit.data.tasks import classification as cls_data
from plmkit.data.tasks import ner as ner_data
from plmkit.data.tasks import qa as qa_data
from plmkit.data.tasks import relation as rel_data
from plmkit.errors import CheckpointError, ConfigError, DataError
from plmkit.evaluation import (ClassificationMetrics, EntityMetrics, MultiLabelMetrics, RegressionMetrics,
                               RelationMetrics, SquadMetrics, SquadThresholdSweep)
from plmkit.models.io import check_model_dir

log = logging.getLogger("plmkit")

TASK_FILE = "plmkit_task.json"
MODEL_TASK = {"classification": "sequence-classification", "ner": "token-classification",
              "relation": "relation-classification", "qa": "question-answering"}
TASKS = tuple(MODEL_TASK)


@dataclass
class TaskSpec:
    """What plmkit_task.json records next to a fine-tuned model."""

    task: str
    max_length: int = 128
    problem_type: str | None = None  # classification
    scheme: str | None = None  # ner: BIO | BIOES
    stride: int | None = None  # ner: word pieces shared by the windows of a long sentence (None: max_length // 4)
    no_relation: str | None = None  # relation: the class that means "no relation"
    doc_stride: int = 128  # qa: overlap of consecutive windows, in tokens
    max_query_length: int = 64
    max_answer_length: int = 30
    version_2: bool = False  # qa: unanswerable questions allowed
    null_score_diff_threshold: float = 0.0  # qa v2: no answer when null score - best span score > this

    def save(self, directory: str | Path) -> None:
        (Path(directory) / TASK_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "TaskSpec":
        path = check_model_dir(directory) / TASK_FILE
        if not path.is_file():
            architectures = _architectures(directory)
            guess = {"BertForSequenceClassification": "classification", "BertForTokenClassification": "ner",
                     "BertForQuestionAnswering": "qa", "BertForRelationClassification": "relation"}
            task = next((guess[a] for a in architectures if a in guess), None)
            if task is None:
                raise ConfigError(f"{directory}: no {TASK_FILE} and config.json's architectures {architectures} "
                                  "name no task model; fine-tune it first (plmkit finetune --task ...)")
            return cls(task=task)
        try:
            values = json.loads(path.read_text())
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as err:
            raise ConfigError(f"{path}: not a valid task file ({err})") from None


def _architectures(directory) -> list[str]:
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return []


@dataclass
class FinetuneOptions:
    epochs: float | None = 3.0
    max_steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    dropout: float | None = None  # the body's dropout rates; None: as in the checkpoint's config
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # embeddings and the first k layers
    freeze_body: bool = False  # train the head only
    layer_lr_decay: float | None = None
    head_lr: float | None = None
    lora_rank: int | None = None  # relation: the entity markers' new embedding rows train as well
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q", "v")
    eval_every: int | None = None  # default: once per epoch when there is eval data
    early_stopping_patience: int | None = None
    metric_for_best: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    group_by_length: bool = False  # the encoder drops padding itself; grouping only trims attention padding
    doc_stride: int = 128
    max_answer_length: int = 30
    stride: int | None = None  # ner: window overlap in word pieces (None: max_length // 4)
    progress_bar: bool = True
    log_every: int = 10
    save_every: int | None = None  # checkpoint every N steps (one is always written at the end)
    resume: bool = False  # continue from out_dir/checkpoints/latest, exactly


# ------------------------------------------------------------------ loading
def load_model_dir(directory: str | Path):
    """(model in eval mode, tokenizer, TaskSpec) of a fine-tuned model directory."""
    from plmkit.models.auto import load_any, model_class
    from plmkit.tokenization import Tokenizer
    spec = TaskSpec.load(directory)
    model = load_any(directory)
    expected = model_class(model.config.model_type, MODEL_TASK[spec.task])
    if not isinstance(model, expected):
        raise CheckpointError(f"{directory}: {TASK_FILE} says task {spec.task!r}, which needs a {expected.__name__}, "
                              f"but config.json's architectures make it a {type(model).__name__}")
    return model.eval(), Tokenizer.from_pretrained(directory), spec


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _forward(model, features: list[dict], batch_size: int, pad_id: int) -> Iterator[tuple[list[int], dict, Any]]:
    """(indices, batch, output) over `features` in length-sorted batches, without gradients."""
    collate = pad_collate(pad_id)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in batches_by_length(features, batch_size):
                batch = {k: v.to(device) for k, v in collate([features[i] for i in idx]).items()}
                yield idx, batch, model(**batch)
    finally:
        model.train(was_training)


class _LossMeter:
    def __init__(self):
        self.total, self.n = 0.0, 0

    def add(self, out, n: int) -> None:
        if getattr(out, "loss", None) is not None:
            self.total += float(out.loss) * n
            self.n += n

    def put(self, metrics: dict) -> dict:
        if self.n:
            metrics["loss"] = self.total / self.n
        return metrics


# ------------------------------------------------------------------ per task: read + encode
def read_examples(task: str, path, labelled: bool = True):
    if task == "classification":
        return cls_data.read_classification(path, require_label=labelled)
    if task == "ner":
        return ner_data.read_conll(path, require_tags=labelled)
    if task == "relation":
        return rel_data.read_relations(path, require_label=labelled)
    if task == "qa":
        return qa_data.read_squad(path, require_answers=labelled)
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def encode(task: str, tokenizer, examples, spec: TaskSpec, label2id, path="data", training: bool = False) -> list[dict]:
    if task == "classification":
        return cls_data.encode_examples(tokenizer, examples, spec.max_length, label2id, spec.problem_type, path)
    if task == "ner":
        return ner_data.encode_sentences(tokenizer, examples, spec.max_length, label2id, path, spec.stride)
    if task == "relation":
        return rel_data.encode_relations(tokenizer, examples, spec.max_length, label2id, path)
    return qa_data.windows(tokenizer, examples, spec.max_length, spec.doc_stride, spec.max_query_length, training)


# ------------------------------------------------------------------ evaluation (streamed)
def evaluate_examples(model, tokenizer, spec: TaskSpec, examples, features: list[dict],
                      batch_size: int = 32) -> dict[str, float]:
    """Task metrics of `model` on encoded `features` (of `examples`), accumulated per batch."""
    pad = tokenizer.pad_token_id
    config = model.config
    loss = _LossMeter()
    if spec.task == "classification":
        problem = spec.problem_type
        metric = (RegressionMetrics() if problem == cls_data.REGRESSION else MultiLabelMetrics(config.num_labels)
                  if problem == cls_data.MULTI else ClassificationMetrics(config.num_labels))
        for idx, batch, out in _forward(model, features, batch_size, pad):
            loss.add(out, len(idx))
            logits = out.logits.float()
            pred = (logits.squeeze(-1) if problem == cls_data.REGRESSION else logits.sigmoid() > 0.5
                    if problem == cls_data.MULTI else logits.argmax(-1))
            metric.update(pred, batch["labels"])
        return loss.put(metric.compute())
    if spec.task == "relation":
        no_rel = config.label2id.get(spec.no_relation) if spec.no_relation else None
        metric = RelationMetrics(config.num_labels, no_rel)
        for idx, batch, out in _forward(model, features, batch_size, pad):
            loss.add(out, len(idx))
            metric.update(out.logits.argmax(-1), batch["labels"])
        return loss.put(metric.compute())
    if spec.task == "ner":  # windows of one sentence may land in different batches: merge, then score
        merger = ner_data.WindowMerger()  # (predicted tag id, cross-entropy) per word
        for idx, batch, out in _forward(model, features, batch_size, pad):
            logits = out.logits.float()  # (B, T, C)
            token_loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")  # (B, T)
            for row, i in enumerate(idx):
                merger.add(features[i], list(zip(logits[row].argmax(-1).tolist(), token_loss[row].tolist())))
        words = [merger.words(k, len(s.tokens)) for k, s in enumerate(examples)]
        metric = EntityMetrics(spec.scheme or "BIO")
        metric.update([[config.id2label[tag] for tag, _ in w] for w in words], [s.tags for s in examples])
        word_loss = [x for w in words for _, x in w]  # each word once, from the window it is predicted in
        return {**metric.compute(), "loss": sum(word_loss) / max(len(word_loss), 1)}
    spans = _qa_spans(model, features, spec, batch_size, pad)
    metric, sweep = SquadMetrics(), SquadThresholdSweep() if spec.version_2 else None
    for k, e in enumerate(examples):
        golds = [a["text"] for a in e.answers]
        metric.update(spans.answer(k, e.context)["answer"], golds)
        if sweep is not None:
            sweep.update(spans.span_text(k, e.context), spans.null_score_diff(k), golds)
    if sweep is None:
        return metric.compute()
    return {**metric.compute(), "null_score_diff_threshold": spec.null_score_diff_threshold, **sweep.compute()}


def evaluate_dir(model_dir, data, batch_size: int = 32, device: str = "auto",
                 null_score_diff_threshold: float | None = None) -> dict[str, float]:
    """Metrics of a fine-tuned model directory on a labelled data file (QA v2: at
    `null_score_diff_threshold`, default the model's, plus the best threshold on this data)."""
    model, tokenizer, spec = _load_for_inference(model_dir, device, null_score_diff_threshold)
    examples = read_examples(spec.task, data, labelled=True)
    features = encode(spec.task, tokenizer, examples, spec, model.config.label2id, path=data)
    return evaluate_examples(model, tokenizer, spec, examples, features, batch_size)


# ------------------------------------------------------------------ prediction
def predict_records(model, tokenizer, spec: TaskSpec, records: list[dict], batch_size: int = 32,
                    where: str = "input", lines: list[int] | None = None, align_to_words: bool = True) -> list[dict]:
    """One result dict per input record (see `plmkit predict --help` for the shapes); errors name
    `where`:line, the line from `lines` (one per record) or else the record's number. QA answers are
    whole words unless `align_to_words` is False (then token spans, as evaluation scores them)."""
    if not records:
        return []
    examples = _records_to_examples(spec.task, records, where, lines)
    if spec.task == "ner" and isinstance(examples[0], str):
        return ner_predict_texts(model, tokenizer, spec, examples, batch_size)
    features = encode(spec.task, tokenizer, examples, spec, None, path=where)
    results: list[dict | None] = [None] * len(examples)
    config = model.config
    pad = tokenizer.pad_token_id
    if spec.task in ("classification", "relation"):
        for idx, batch, out in _forward(model, features, batch_size, pad):
            logits = out.logits.float()
            for row, i in enumerate(idx):
                results[i] = _class_result(logits[row], config, spec)
        return results
    if spec.task == "ner":
        merger = _ner_windows(model, features, batch_size, pad)
        for k, sentence in enumerate(examples):
            tokens = sentence.tokens
            tag_ids, scores = _unzip(merger.words(k, len(tokens)))
            tags = [config.id2label[t] for t in tag_ids]
            entities = [{"entity_group": kind, "score": _mean(scores[s:e]), "word": _join(tokens[s:e]),
                         "start": s, "end": e} for kind, s, e in ner_data.entity_spans(tags)]
            results[k] = {"tokens": tokens, "tags": tags, "entities": entities}
        return results
    spans = _qa_spans(model, features, spec, batch_size, pad, align_to_words)
    return [{"id": e.id, **spans.answer(k, e.context)} for k, e in enumerate(examples)]


def _qa_spans(model, features: list[dict], spec: TaskSpec, batch_size: int, pad: int, align_to_words: bool = False):
    """Best answer span per example; the windows of one example may land in different batches."""
    spans = qa_data.SpanAggregator(spec.max_answer_length, allow_no_answer=spec.version_2,
                                   null_score_diff_threshold=spec.null_score_diff_threshold,
                                   align_to_words=align_to_words)
    for idx, _, out in _forward(model, features, batch_size, pad):
        starts, ends = out.start_logits.float().tolist(), out.end_logits.float().tolist()
        for row, i in enumerate(idx):
            f = features[i]
            n = len(f["input_ids"])
            spans.add(f["_example"], starts[row][:n], ends[row][:n], f["_offsets"], f["_words"])
    return spans


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else 0.0


def _join(tokens: list[str]) -> str:
    """Words of an entity: joined without spaces when they are single CJK characters."""
    if all(len(t) == 1 and "\u4e00" <= t <= "\u9fff" for t in tokens):
        return "".join(tokens)
    return " ".join(tokens)


def _class_result(logits: torch.Tensor, config, spec: TaskSpec) -> dict:
    if spec.problem_type == cls_data.REGRESSION:
        return {"label": "score" if not config.id2label else config.id2label[0], "score": float(logits.view(-1)[0])}
    names = config.id2label
    if spec.problem_type == cls_data.MULTI:
        probs = logits.sigmoid().tolist()
        return {"labels": [names[k] for k, p in enumerate(probs) if p > 0.5],
                "probabilities": {names[k]: p for k, p in enumerate(probs)}}
    probs = logits.softmax(-1).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    key = "relation" if spec.task == "relation" else "label"
    return {key: names[best], "score": probs[best], "probabilities": {names[k]: p for k, p in enumerate(probs)}}


def _ner_windows(model, features: list[dict], batch_size: int, pad: int) -> ner_data.WindowMerger:
    """(tag id, probability) per word, merged over each sentence's windows."""
    merger = ner_data.WindowMerger()
    for idx, _, out in _forward(model, features, batch_size, pad):
        best, ids = out.logits.float().softmax(-1).max(-1)  # (B, T) each
        for row, i in enumerate(idx):
            merger.add(features[i], list(zip(ids[row].tolist(), best[row].tolist())))
    return merger


def _unzip(pairs: list[tuple]) -> tuple[list, list]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def ner_predict_texts(model, tokenizer, spec: TaskSpec, texts: list[str], batch_size: int = 32) -> list[dict]:
    """Entities in raw texts: the tokenizer's words (its pre-tokenizer; each CJK character is a word)
    are tagged at their first piece, long texts in windows as in training; entity spans are character
    offsets into the text."""
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    features, chars = [], []  # chars[i]: word -> [first character, end character] in texts[i]
    for i, enc in enumerate(encodings):
        spans: dict[int, list[int]] = {}
        for w, (start, end) in zip(enc.word_ids, enc.offsets):
            spans.setdefault(w, [start, end])[1] = end
        chars.append(spans)
        for f in ner_data.window_features(tokenizer, enc.ids, enc.word_ids, spec.max_length, spec.stride):
            features.append({**f, "_sentence": i})
    merger = _ner_windows(model, features, batch_size, tokenizer.pad_token_id)
    results = []
    for i, text in enumerate(texts):
        order = sorted(chars[i])
        values = merger.words(i, order[-1] + 1 if order else 0)
        tag_ids, scores = _unzip([values[w] for w in order])
        entities = []
        for kind, s, e in ner_data.entity_spans([model.config.id2label[t] for t in tag_ids]):
            start, end = chars[i][order[s]][0], chars[i][order[e - 1]][1]
            entities.append({"entity_group": kind, "score": _mean(scores[s:e]), "word": text[start:end],
                             "start": start, "end": end})
        results.append({"text": text, "entities": entities})
    return results


def _records_to_examples(task: str, records: list, where: str, lines: list[int] | None = None):
    """Examples from user records (dicts as in the training files, labels optional); errors name
    `where`:line, the line from `lines` or else the record's number."""
    out = []
    for k, r in enumerate(records, 1):
        n = lines[k - 1] if lines is not None else k
        if not isinstance(r, dict) and not (isinstance(r, str) and task in ("classification", "ner")):
            raise DataError(f"{where}:{n}: expected a JSON object, got {type(r).__name__}")
        if task == "classification":
            if isinstance(r, str):
                r = {"text": r}
            if not isinstance(r.get("text"), str):
                raise DataError(f"{where}:{n}: needs a string field 'text'")
            if r.get("text_pair") is not None and not isinstance(r["text_pair"], str):
                raise DataError(f"{where}:{n}: 'text_pair' must be a string, got {type(r['text_pair']).__name__}")
            out.append(cls_data.ClassificationExample(r["text"], r.get("text_pair"), None, n))
        elif task == "ner":
            if isinstance(r, str):
                r = {"text": r}
            if isinstance(r.get("tokens"), list):
                out.append(ner_data.Sentence([str(t) for t in r["tokens"]], None, n))
            elif isinstance(r.get("text"), str):
                out.append(r["text"])
            else:
                raise DataError(f"{where}:{n}: needs 'text' (a string) or 'tokens' (a list of words)")
        elif task == "relation":  # the training reader's checks; a relation given is ignored
            row = {key: v for key, v in r.items() if key not in ("relation", "label")}
            out.append(rel_data.relation_example(row, f"{where}:{n}", n, require_label=False))
        else:
            if not isinstance(r.get("question"), str) or not isinstance(r.get("context"), str):
                raise DataError(f"{where}:{n}: needs string fields 'question' and 'context'")
            out.append(qa_data.QAExample(str(r.get("id", k)), r["question"], r["context"]))
    if task == "ner" and out and len({isinstance(x, str) for x in out}) > 1:
        raise DataError(f"{where}: give either 'text' or 'tokens' in every record, not a mix")
    return out


def read_prediction_input(task: str, path: str) -> tuple[list, list[int]]:
    """Records, and the line each starts on, from a JSONL file, '-' (stdin JSONL), a CoNLL file
    (ner), a CSV/TSV file (classification) or a SQuAD JSON file (qa: the lines are record numbers)."""
    if path == "-":
        return _records_and_lines(_stdin_rows())
    suffix = Path(path).suffix.lower()
    if task == "ner" and suffix in (".conll", ".txt", ".bio", ".iob"):
        sentences = ner_data.read_conll(path, require_tags=_has_tags(path))
        return [{"tokens": s.tokens} for s in sentences], [s.line for s in sentences]
    if task == "classification" and suffix in (".csv", ".tsv"):
        examples = cls_data.read_classification(path, require_label=False)
        return ([{"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {})} for e in examples],
                [e.line for e in examples])
    if task == "qa" and suffix == ".json":
        examples = qa_data.read_squad(path, require_answers=False)
        return ([{"id": e.id, "question": e.question, "context": e.context} for e in examples],
                list(range(1, len(examples) + 1)))
    return _records_and_lines(jsonl_rows(path))


def _records_and_lines(rows: Iterator[tuple[int, Any]]) -> tuple[list, list[int]]:
    lines, records = _unzip(list(rows))
    return records, lines


def _stdin_rows() -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line of stdin."""
    for n, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"<stdin>:{n}: not valid JSON ({err.msg})") from None


def _has_tags(path) -> bool:
    first = next((line for line in read_lines(path) if line.strip()), "")
    return len(first.split("\t") if "\t" in first else first.split()) >= 2


def predict_dir(model_dir, inputs: list, batch_size: int = 32, device: str = "auto", where: str = "input",
                null_score_diff_threshold: float | None = None, lines: list[int] | None = None) -> list[dict]:
    model, tokenizer, spec = _load_for_inference(model_dir, device, null_score_diff_threshold)
    return predict_records(model, tokenizer, spec, inputs, batch_size, where, lines)


def _load_for_inference(model_dir, device: str, null_score_diff_threshold: float | None):
    """`load_model_dir` on `device`, with a QA no-answer threshold that overrides the saved one."""
    from plmkit.training.trainer import resolve_device
    model, tokenizer, spec = load_model_dir(model_dir)
    model.to(resolve_device(device))
    if null_score_diff_threshold is not None:
        spec = dataclasses.replace(spec, null_score_diff_threshold=null_score_diff_threshold)
    return model, tokenizer, spec


# ------------------------------------------------------------------ fine-tuning
def main_metric(spec: TaskSpec) -> str:
    if spec.task == "classification":
        return {cls_data.REGRESSION: "pearson", cls_data.MULTI: "f1"}.get(spec.problem_type, "accuracy")
    return "f1"


def freeze(model, embeddings: bool = False, layers: int = 0, body: bool = False) -> list[str]:
    """Stop gradients: the embeddings, the embeddings + first `layers` layers, or the whole encoder
    (`body`: only the task head trains). Returns the frozen parameter names."""
    prefix = model.base_prefix + "." if model.base_prefix else ""
    n_layers = getattr(model.config, "num_hidden_layers", 0)
    if layers < 0 or layers > n_layers:
        raise ConfigError(f"freeze_layers={layers}: the model has {n_layers} layers")
    frozen = []
    for name, p in model.named_parameters():
        inner = name[len(prefix):] if name.startswith(prefix) else None
        if inner is None:
            continue  # the task head
        parts = inner.split(".")
        hit = body or ((embeddings or layers > 0) and parts[0] == "embeddings") \
            or (parts[0] == "layers" and int(parts[1]) < layers)
        if hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def prepare_model(task: str, model_dir, tokenizer, spec: TaskSpec, labels: list[str] | None,
                  dropout: float | None = None):
    """The task model initialised from `model_dir` (a pretrained encoder or a task checkpoint);
    `dropout` replaces the checkpoint's dropout rates (pretraining often runs without)."""
    from plmkit.models.auto import model_class, read_model_type
    model_type, _ = read_model_type(model_dir)
    cls = model_class(model_type, MODEL_TASK[task])
    overrides = {}
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        overrides.update(dict.fromkeys(cls.config_class.dropout_fields, dropout))
    if labels is not None:
        overrides["id2label"] = dict(enumerate(labels))
        overrides["label2id"] = None
    if spec.problem_type is not None:
        overrides["problem_type"] = spec.problem_type
    model = cls.from_pretrained(model_dir, **overrides)
    if task == "relation":
        added = tokenizer.add_special_tokens({"additional_special_tokens": list(rel_data.MARKERS)})
        if added or len(tokenizer) != model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(max(len(tokenizer), model.get_input_embeddings().num_embeddings))
    return model


def set_trainable(model, task: str, tokenizer, o: FinetuneOptions) -> list[str]:
    """Freeze what `o` asks and add its LoRA adapters (the task head always trains). Relation
    extraction's entity markers have new embedding rows, initialised from scratch like the head: when
    the embedding matrix is frozen (LoRA, --freeze-*), those rows alone still train. Returns the
    names of the parameters frozen by `freeze`."""
    from plmkit.nn.lora import apply_lora, train_embedding_rows
    frozen = freeze(model, o.freeze_embeddings, o.freeze_layers, o.freeze_body)
    if o.lora_rank:
        head = [p for n, p in model.named_parameters() if not n.startswith(model.base_prefix + ".")]
        wrapped = apply_lora(model, o.lora_targets, o.lora_rank, o.lora_alpha, o.lora_dropout)
        for p in head:
            p.requires_grad_(True)
        frozen_weights = set(frozen)
        for name, p in model.named_parameters():  # adapters of layers frozen above stay frozen too
            module, param = name.rsplit(".", 1)
            if param in ("lora_A", "lora_B") and module + ".weight" in frozen_weights:
                p.requires_grad_(False)
        log.info("plmkit: LoRA rank %d on %d layers (%s)", o.lora_rank, len(wrapped), ",".join(o.lora_targets))
    if task == "relation" and not model.get_input_embeddings().weight.requires_grad:
        markers = tokenizer.convert_tokens_to_ids(list(rel_data.MARKERS))
        train_embedding_rows(model, model.get_input_embeddings(), markers)
    return frozen


def finetune(task: str, model_dir, train, out_dir, eval_data=None, options: FinetuneOptions | None = None):
    """Fine-tune `model_dir` on `train`; writes out_dir/model (final) and, with eval data and a
    metric, out_dir/best. Returns the Trainer's TrainResult."""
    from plmkit.tokenization import Tokenizer
    from plmkit.training import TrainConfig, Trainer
    from plmkit.training.rng import seed_everything

    o = options or FinetuneOptions()
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    seed_everything(o.seed)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    train_examples = read_examples(task, train)
    eval_examples = read_examples(task, eval_data) if eval_data else None
    spec = TaskSpec(task=task, max_length=o.max_length, doc_stride=o.doc_stride, max_answer_length=o.max_answer_length)
    if task == "ner":
        spec.stride = o.stride
    labels = None
    if task == "classification":
        spec.problem_type = cls_data.problem_type_of(train_examples, train)
        labels = None if spec.problem_type == cls_data.REGRESSION else cls_data.label_names(train_examples)
        if spec.problem_type == cls_data.REGRESSION:
            labels = ["score"]
    elif task == "ner":
        labels = ner_data.tag_names(train_examples)
        spec.scheme = ner_data.scheme_of(labels)
    elif task == "relation":
        labels = sorted({e.relation for e in train_examples})
        spec.no_relation = rel_data.no_relation_label(labels)
    else:
        spec.version_2 = any(e.is_impossible for e in train_examples)
    if labels is not None and len(labels) < 2 and spec.problem_type != cls_data.REGRESSION:
        raise DataError(f"{train}: the training data has only one label ({labels}); a classifier needs two or more")

    model = prepare_model(task, model_dir, tokenizer, spec, labels, o.dropout)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and o.max_length > positions:
        raise ConfigError(f"max_length={o.max_length} is longer than {model_dir} takes (max_position_embeddings="
                          f"{positions}); use --max-length {positions} or less")
    label2id = model.config.label2id if labels is not None and spec.problem_type != cls_data.REGRESSION else None
    train_features = encode(task, tokenizer, train_examples, spec, label2id, path=train, training=True)
    eval_features = (encode(task, tokenizer, eval_examples, spec, label2id, path=eval_data)
                     if eval_examples is not None else None)

    frozen = set_trainable(model, task, tokenizer, o)
    trainable = model.num_parameters(trainable_only=True)
    log.info("plmkit: %s: %s of %s parameters trainable%s", type(model).__name__, f"{trainable:,}",
             f"{model.num_parameters():,}", f" ({len(frozen)} tensors frozen)" if frozen else "")

    loader = BatchLoader(train_features, o.batch_size, pad_collate(tokenizer.pad_token_id), shuffle=True,
                         seed=o.seed, group_by_length=length_of if o.group_by_length else None)
    steps_per_epoch = max(1, len(loader) // o.grad_accum_steps)
    metric = o.metric_for_best or (main_metric(spec) if eval_features is not None else None)
    cfg = TrainConfig(
        lr=o.lr, weight_decay=o.weight_decay, layer_lr_decay=o.layer_lr_decay, head_lr=o.head_lr,
        warmup_ratio=o.warmup_ratio, schedule=o.schedule, max_steps=o.max_steps, epochs=o.epochs,
        grad_clip=o.grad_clip, grad_accum_steps=o.grad_accum_steps, precision=o.precision, device=o.device,
        seed=o.seed, log_every=o.log_every, save_every=o.save_every,
        eval_every=(o.eval_every or steps_per_epoch) if eval_features is not None else None,
        early_stopping_patience=o.early_stopping_patience if eval_features is not None else None,
        metric_for_best=metric, progress_bar=o.progress_bar)

    def evaluate(m):
        return evaluate_examples(m, tokenizer, spec, eval_examples, eval_features, batch_size=max(o.batch_size, 32))

    def save_extra(directory: Path) -> None:
        tokenizer.save_pretrained(directory)
        spec.save(directory)

    trainer = Trainer(model, cfg, loader, out_dir, evaluate=evaluate if eval_features is not None else None,
                      save_extra=save_extra)
    return trainer.train(resume=o.resume)
