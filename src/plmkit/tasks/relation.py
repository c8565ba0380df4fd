"""Relation classification between two marked entity spans. Data: JSONL rows
``{"text": ..., "head": {"start": s, "end": e}, "tail": {...}, "relation": "founded_by"}``
(character spans, end exclusive; ``[s, e]`` lists work too).

Entity markers are inserted around the spans, ``[E1] head [/E1]`` and ``[E2] tail [/E2]``, and the
model classifies the concatenated encoder states at the two start markers (Baldini Soares et al.,
2019, "Matching the Blanks": the ENTITY MARKERS / ENTITY START variant).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plmkit.errors import ConfigError, DataError
from plmkit.evaluation import RelationMetrics
from plmkit.tasks.base import Task, TaskSettings, need_two_labels
from plmkit.tasks.common import LossMeter, class_probabilities, forward_batches, pipeline_records, predict_per_record
from plmkit.tasks.fields import INTEGER, STRING, TEXT, LabelTypes, checked, class_name, each_record, field, only_one
from plmkit.utils.settings import setting
from plmkit.utils.text import check_file, describe, jsonl_rows

MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
NO_RELATION_NAMES = ("no_relation", "no-relation", "NA", "None", "Other", "other", "O")


@dataclass
class RelationExample:
    text: str
    head: tuple[int, int]
    tail: tuple[int, int]
    relation: str | None
    line: int


def _span(row: dict, name: str, text: str, where: str) -> tuple[int, int]:
    """A checked character span: integers 0 <= start < end <= len(text); a "text" given in the span
    must be the text there."""
    value = row.get(name)
    if isinstance(value, dict):
        start, end = (field(value, k, where, INTEGER, name=f"'{name}' {k}") for k in ("start", "end"))
        given = field(value, "text", where, STRING, required=False, name=f"'{name}' text")
    elif isinstance(value, list) and len(value) == 2:
        start, end = (checked(v, INTEGER, where, f"'{name}' {k}") for v, k in zip(value, ("start", "end")))
        given = None
    elif value is None:
        raise DataError(f"{where}: no '{name}' field (a character span of the entity, {{\"start\": s, \"end\": e}})")
    else:
        raise DataError(f"{where}: '{name}' must be {{\"start\": s, \"end\": e}} or [s, e] (character offsets), "
                        f"got {describe(value)}")
    if not 0 <= start < end <= len(text):
        raise DataError(f"{where}: '{name}' span {start}..{end} is not inside the text (length {len(text)})")
    if given is not None and given != text[start:end]:
        raise DataError(f"{where}: '{name}' text {given!r} is not the text at {start}..{end} ({text[start:end]!r})")
    return start, end


def read_relations(path: str | Path, require_label: bool = True) -> list[RelationExample]:
    path = check_file(path)
    examples, types = [], LabelTypes()
    for lineno, row in jsonl_rows(path):
        example, kind = relation_example(row, f"{path}:{lineno}", lineno, require_label)
        if kind is not None:
            types.add(kind, lineno)
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no examples")
    types.check(path, "relation")
    return examples


def relation_example(row: dict, where: str, line: int,
                     require_label: bool = True) -> tuple[RelationExample, str | None]:
    """One checked row (training or prediction) and the JSON type of its relation (None without
    one): a text, in-text non-overlapping head and tail spans, and a relation ('relation' or
    'label') when `require_label`; DataError naming `where` (file:line) otherwise."""
    text = field(row, "text", where, TEXT)
    head, tail = _span(row, "head", text, where), _span(row, "tail", text, where)
    if head[0] < tail[1] and tail[0] < head[1]:
        raise DataError(f"{where}: head {head} and tail {tail} overlap")
    key = only_one(row, ("relation", "label"), where)
    if key is None and require_label:
        raise DataError(f"{where}: no 'relation' field")
    relation, kind = class_name(row[key], where, f"'{key}'") if key is not None else (None, None)
    return RelationExample(text, head, tail, relation, line), kind


def with_markers(example: RelationExample) -> str:
    """The text with [E1] ... [/E1] around the head and [E2] ... [/E2] around the tail."""
    inserts = [(example.head[0], MARKERS[0]), (example.head[1], MARKERS[1]),
               (example.tail[0], MARKERS[2]), (example.tail[1], MARKERS[3])]
    text, out, last = example.text, [], 0
    for pos, marker in sorted(inserts, key=lambda x: (x[0], x[1].startswith("[/") is False)):
        out += [text[last:pos], f" {marker} "]
        last = pos
    out.append(text[last:])
    return "".join(out)


def no_relation_label(names: list[str]) -> str | None:
    return next((n for n in NO_RELATION_NAMES if n in names), None)


def encode_relations(tokenizer, examples: list[RelationExample], max_length: int,
                     label2id: dict[str, int] | None, path="data") -> list[dict]:
    """Ids of the marked texts + `entity_positions` [pos of [E1], pos of [E2]].

    A text whose entity markers fall beyond max_length tokens is a DataError naming file:line.
    """
    e1, e2 = tokenizer.convert_tokens_to_ids([MARKERS[0], MARKERS[2]])
    if tokenizer.unk_token_id in (e1, e2):
        raise ConfigError(f"the tokenizer lacks the entity markers {', '.join(MARKERS)}; add them with "
                          "tokenizer.add_special_tokens({'additional_special_tokens': [...]})")
    enc = tokenizer([with_markers(e) for e in examples], truncation=True, max_length=max_length)
    features = []
    for i, e in enumerate(examples):
        ids = enc["input_ids"][i]
        if e1 not in ids or e2 not in ids:
            raise DataError(f"{path}:{e.line}: the {'head' if e1 not in ids else 'tail'} entity lies beyond "
                            f"max_length={max_length} tokens; raise --max-length or shorten the text")
        f = {"input_ids": ids, "token_type_ids": [0] * len(ids), "entity_positions": [ids.index(e1), ids.index(e2)]}
        if label2id is not None and e.relation is not None:
            if e.relation not in label2id:
                raise DataError(f"{path}:{e.line}: unknown relation {e.relation!r}; the model knows "
                                f"{', '.join(sorted(label2id))}")
            f["labels"] = label2id[e.relation]
        features.append(f)
    return features


@dataclass
class RelationSettings(TaskSettings):
    section = "relation"
    no_relation: str | None = setting(None, "the class meaning 'no relation', left out of the F1 (given: a relation "
                                            "of the training data); off: set from the training labels, the first "
                                            f"of {', '.join(NO_RELATION_NAMES)} among them", cli=False)


class RelationTask(Task):
    name = "relation"
    model_task = "relation-classification"
    settings_class = RelationSettings
    pipelines = ("relation-classification",)
    description = "JSONL with text, head/tail character spans and relation"
    reader = staticmethod(read_relations)

    def shared_text(self, example: RelationExample) -> str:
        return example.text  # (the entity pairs of one sentence are held out together)

    def discover(self, examples, path) -> list[str]:
        labels = need_two_labels(sorted({e.relation for e in examples}), path)
        given = self.settings.no_relation
        if given is not None and given not in labels:
            raise DataError(f"{path}: no_relation is {given!r} (given), but no training example has that relation; "
                            f"its relations: {', '.join(labels)}")
        self.settings.no_relation = given if given is not None else no_relation_label(labels)
        return labels

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        return encode_relations(tokenizer, examples, self.settings.max_length, label2id, path)

    def adapt(self, model, tokenizer) -> None:
        """The entity markers become special tokens with new embedding rows."""
        added = tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
        rows = model.get_input_embeddings().num_embeddings
        if added or len(tokenizer) != rows:
            model.resize_token_embeddings(max(len(tokenizer), rows))

    def soft_targets(self) -> str:
        return "example"

    def train_extra(self, model, tokenizer) -> None:
        """The markers' new rows start from scratch like the head: when the embedding matrix is
        frozen (LoRA, --freeze-*), those rows alone still train."""
        from plmkit.nn.lora import train_embedding_rows
        if not model.get_input_embeddings().weight.requires_grad:
            train_embedding_rows(model, model.get_input_embeddings(), tokenizer.convert_tokens_to_ids(list(MARKERS)))

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32, part=None) -> dict[str, float]:
        """Micro P/R/F1 without the no-relation class, accuracy and loss; shared by several processes
        (`part`), each counts its rows and the confusion matrices and losses are summed."""
        config = model.config
        no_rel = config.label2id.get(self.settings.no_relation) if self.settings.no_relation else None
        metric, loss = RelationMetrics(config.num_labels, no_rel), LossMeter()
        for idx, batch, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id, part):
            loss.add(out, len(idx))
            metric.update(out.logits.argmax(-1), batch["labels"])
        if part is not None:
            metric.reduce(part)
            loss.reduce(part)
        return loss.put(metric.compute())

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True) -> list[dict]:
        return predict_per_record(self, model, tokenizer, records, batch_size, where, lines,
                                  lambda logits, names: class_probabilities(logits, names, key="relation"))

    def to_examples(self, records, where: str, lines=None) -> list[RelationExample]:
        """The training reader's checks; a relation given is ignored."""
        return [relation_example({k: v for k, v in r.items() if k not in ("relation", "label")}, f"{where}:{n}", n,
                                 require_label=False)[0] for n, r in each_record(records, where, lines)]

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int):
        records, single = pipeline_records(inputs, name)
        results = self.predict(model, tokenizer, records, batch_size, where="inputs")
        out = [{"label": r["relation"], "score": r["score"]} for r in results]
        return out[0] if single else out
