"""Relation classification data: JSONL rows
``{"text": ..., "head": {"start": s, "end": e}, "tail": {...}, "relation": "founded_by"}``
(character spans, end exclusive; ``[s, e]`` lists work too).

Entity markers are inserted around the spans, ``[E1] head [/E1]`` and ``[E2] tail [/E2]``, and the
model classifies the concatenated encoder states at the two start markers (Baldini Soares et al.,
2019, "Matching the Blanks": the ENTITY MARKERS / ENTITY START variant).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plmkit.utils.text import jsonl_rows
from plmkit.errors import ConfigError, DataError

MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
NO_RELATION_NAMES = ("no_relation", "no-relation", "NA", "None", "Other", "other", "O")


@dataclass
class RelationExample:
    text: str
    head: tuple[int, int]
    tail: tuple[int, int]
    relation: str | None
    line: int


def _span(value, name: str, text: str, where: str) -> tuple[int, int]:
    if isinstance(value, dict):
        start, end = value.get("start"), value.get("end")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        start, end = value
    else:
        raise DataError(f"{where}: '{name}' must be {{\"start\": s, \"end\": e}} (character offsets)")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise DataError(f"{where}: '{name}' span {start}..{end} is not inside the text (length {len(text)})")
    return start, end


def read_relations(path: str | Path, require_label: bool = True) -> list[RelationExample]:
    path = Path(path)
    examples = [relation_example(row, f"{path}:{lineno}", lineno, require_label) for lineno, row in jsonl_rows(path)]
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def relation_example(row: dict, where: str, line: int, require_label: bool = True) -> RelationExample:
    """One checked row (training or prediction): a text, in-text non-overlapping head and tail spans,
    and a relation when `require_label`; DataError naming `where` (file:line) otherwise."""
    text = row.get("text")
    if not isinstance(text, str) or not text:
        raise DataError(f"{where}: needs a non-empty string field 'text'")
    for key in ("head", "tail"):
        if key not in row:
            raise DataError(f"{where}: no '{key}' field (a character span of the entity)")
    head, tail = _span(row["head"], "head", text, where), _span(row["tail"], "tail", text, where)
    if head[0] < tail[1] and tail[0] < head[1]:
        raise DataError(f"{where}: head {head} and tail {tail} overlap")
    relation = row.get("relation", row.get("label"))
    if relation is None and require_label:
        raise DataError(f"{where}: no 'relation' field")
    return RelationExample(text, head, tail, None if relation is None else str(relation), line)


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
