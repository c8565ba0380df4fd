"""Named-entity recognition data: CoNLL files (`token<TAB>tag` or `token tag`, blank line between
sentences; BIO/IOB2 or BIOES tags; one character per line for Chinese).

Labels are aligned to word pieces: the first piece of a word carries the word's tag, the other
pieces -100 (ignored by the loss); predictions are read at first pieces and mapped back to words.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plmkit.data.tasks import IGNORE_INDEX, open_text
from plmkit.errors import DataError

PREFIXES = ("B", "I", "E", "S", "L", "U")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None
    line: int  # line of the first token
    tag_lines: list[int] | None = None


def read_conll(path: str | Path, require_tags: bool = True) -> list[Sentence]:
    path = Path(path)
    sentences, tokens, tags, lines = [], [], [], []

    def close():
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags) if require_tags else None, lines[0], list(lines)))
            tokens.clear(), tags.clear(), lines.clear()

    for lineno, line in enumerate(open_text(path), 1):
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p for p in parts if p != ""]
        if require_tags:
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected 'token<TAB>tag', got {line!r}")
            tag = parts[-1].strip()
            check_tag(tag, f"{path}:{lineno}")
            tags.append(tag)
        tokens.append(parts[0])
        lines.append(lineno)
    close()
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def check_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in PREFIXES or not kind:
        raise DataError(f"{where}: tag {tag!r} is not 'O' or B-/I-/E-/S-TYPE (BIO or BIOES)")


def scheme_of(tags: list[str]) -> str:
    """'BIOES' when any E-/S-/L-/U- tag is used, else 'BIO'."""
    return "BIOES" if any(t[:2] in ("E-", "S-", "L-", "U-") for t in tags) else "BIO"


def tag_names(sentences: list[Sentence]) -> list[str]:
    """'O' first, then the tags sorted by entity type and prefix."""
    tags = {t for s in sentences for t in s.tags}
    order = {p: i for i, p in enumerate(PREFIXES)}
    return ["O"] + sorted((t for t in tags if t != "O"), key=lambda t: (t[2:], order[t[0]]))


def encode_sentences(tokenizer, sentences: list[Sentence], max_length: int, label2id: dict[str, int] | None,
                     path="data") -> list[dict]:
    """Word-piece ids with first-piece labels; `_word_index` maps each position to its word (or -1)."""
    words = [w for s in sentences for w in s.tokens]
    pieces = tokenizer.backend_tokenizer.encode_batch(words, add_special_tokens=False) if words else []
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    features, k = [], 0
    for s in sentences:
        ids, labels, word_index = [cls], [IGNORE_INDEX], [-1]
        budget = max_length - 1
        for w, word in enumerate(s.tokens):
            piece_ids = pieces[k + w].ids or [unk]
            if len(ids) + len(piece_ids) > budget:
                break  # words past max_length are not seen by the model (predicted 'O')
            label = IGNORE_INDEX
            if label2id is not None and s.tags is not None:
                tag = s.tags[w]
                if tag not in label2id:
                    line = s.tag_lines[w] if s.tag_lines else s.line
                    raise DataError(f"{path}:{line}: unknown tag {tag!r}; the model knows {', '.join(label2id)}")
                label = label2id[tag]
            ids += piece_ids
            labels += [label] + [IGNORE_INDEX] * (len(piece_ids) - 1)
            word_index += [w] * len(piece_ids)
        k += len(s.tokens)
        ids.append(sep), labels.append(IGNORE_INDEX), word_index.append(-1)
        f = {"input_ids": ids, "token_type_ids": [0] * len(ids), "_word_index": word_index,
             "_n_words": len(s.tokens)}
        if label2id is not None and s.tags is not None:
            f["labels"] = labels
        features.append(f)
    return features


def word_predictions(word_index: list[int], n_words: int, token_values: list) -> list:
    """Per-word values read at each word's first piece (None for words cut by max_length)."""
    out = [None] * n_words
    for pos, w in enumerate(word_index):
        if w >= 0 and out[w] is None:
            out[w] = token_values[pos]
    return out


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each entity in BIO or BIOES tags (lenient: a stray I-
    or E- starts an entity, as conlleval does)."""
    spans, kind, start = [], None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        prefix = {"L": "E", "U": "S"}.get(prefix, prefix)
        continues = kind is not None and t == kind and prefix in ("I", "E")
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and not continues):
            kind, start = t, i
        if kind is not None and prefix in ("E", "S"):
            spans.append((kind, start, i + 1))
            kind = None
    return spans
