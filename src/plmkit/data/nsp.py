"""Pretraining examples from a tokenized corpus: BERT's sentence pairs (NSP) or packed sentences (MLM).

* Documents: a corpus document, or (`group_documents`) consecutive short documents of one
  file merged until they fill a sequence. Functions taking `docs` accept either.
* Held-out split: whole documents (`plmkit.data.splits.split_documents`). Examples of one split take
  every segment, including NSP's random "next" segments, from documents of that
  split only, so evaluation text never appears in training pairs and vice versa.
* ``mlm+nsp`` (`nsp_instances`) follows BERT's ``create_instances_from_document``:
  sentences of a document fill a chunk up to a target length (``seq_len - 3``, or
  with probability `short_seq_prob` a random length in [2, seq_len - 3]); a random
  prefix of the chunk is segment A; B is the rest of the chunk (label 0, "is next")
  or, half the time and always for a one-sentence chunk, sentences from a random
  other document of the split (label 1); the unused sentences go back to the
  document. BERT's labels lean to "random" on short documents (every one-sentence
  chunk is random); here each such forced pair is paid back by turning the next
  random draw of a longer chunk into an is-next pair, so labels stay at `nsp_prob`. The pair is truncated to ``seq_len - 3`` tokens by trimming the longer
  side, each trimmed token taken from its front or back at random.
* ``mlm`` (`packed_instances`): contiguous whole sentences of one document packed up
  to ``seq_len - 2`` tokens, ``[CLS] ... [SEP]`` (RoBERTa's DOC-SENTENCES, which
  it found slightly better than letting a sequence cross documents); short documents
  give short sequences, which dynamic padding and the unpadded encoder keep cheap.

A sentence longer than the room in a sequence is cut into pieces that fit. An
example is 5 integers (A start, A end, B start, B end, NSP label) into the token
array: segments are contiguous token ranges, so nothing is copied until a batch is built.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from plmkit.data.shards import TokenShards
from plmkit.data.splits import split_documents
from plmkit.errors import DataError

IS_NEXT, RANDOM_NEXT, NO_PAIR = 0, 1, -1


def group_documents(shards: TokenShards, min_tokens: int) -> list[list[int]]:
    """Consecutive documents of the same file merged until a group holds >= `min_tokens` tokens.

    Paragraphs of one file are usually related (the speeches of a play, the paragraphs of an
    article), so a group is a longer document whose sentence order still holds. With
    `min_tokens` = 0 every document is its own group."""
    sizes = shards.sentences[shards.documents[1:]] - shards.sentences[shards.documents[:-1]]
    groups: list[list[int]] = []
    current: list[int] = []
    count = 0
    for d in range(shards.num_documents):
        if current and shards.doc_files[d] != shards.doc_files[current[-1]]:
            groups.append(current)
            current, count = [], 0
        current.append(d)
        count += int(sizes[d])
        if count >= min_tokens:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    return groups


def document_segments(shards: TokenShards, doc: int | Sequence[int], max_len: int) -> list[tuple[int, int]]:
    """Token ranges of a document's (or a group of documents') sentences, sentences longer than
    `max_len` cut into pieces."""
    offsets = shards.sentences
    out = []
    docs = [doc] if isinstance(doc, (int, np.integer)) else doc
    sentences = [s for d in docs for s in shards.document_sentences(int(d))]
    for s in sentences:
        start, end = int(offsets[s]), int(offsets[s + 1])
        while end - start > max_len:
            out.append((start, start + max_len))
            start += max_len
        out.append((start, end))
    return out


def truncate_pair(a: tuple[int, int], b: tuple[int, int], max_tokens: int, rng: np.random.Generator):
    """BERT's truncate_seq_pair on token ranges: drop tokens from the longer segment (B on a tie),
    each from the front or the back with equal chance, until the pair fits in `max_tokens`."""
    la, lb = a[1] - a[0], b[1] - b[0]
    excess = la + lb - max_tokens
    if excess <= 0:
        return a, b
    cut_a = cut_b = 0
    gap = abs(la - lb)
    first = min(excess, gap)
    if la > lb:
        cut_a += first
    else:
        cut_b += first
    rest = excess - first
    cut_b += (rest + 1) // 2
    cut_a += rest // 2
    front_a, front_b = int(rng.binomial(cut_a, 0.5)), int(rng.binomial(cut_b, 0.5))
    return (a[0] + front_a, a[1] - (cut_a - front_a)), (b[0] + front_b, b[1] - (cut_b - front_b))


def nsp_instances(shards: TokenShards, docs: Sequence[int], seq_len: int, seed: int,
                  short_seq_prob: float = 0.1, nsp_prob: float = 0.5, dupe_factor: int = 1) -> np.ndarray:
    """(n, 5) int64 sentence-pair examples from `docs` (see the module docstring)."""
    if len(docs) < 2:
        raise DataError(f"next-sentence prediction needs at least 2 documents per split, got {len(docs)}; "
                        "add documents (separated by blank lines) or use objective 'mlm'")
    max_tokens = seq_len - 3
    if max_tokens < 2:
        raise DataError(f"seq_len={seq_len} is too short for sentence pairs; use at least 5")
    rng = np.random.default_rng(seed)
    segments = [document_segments(shards, d, max_tokens - 1) for d in docs]
    out: list[tuple[int, int, int, int, int]] = []
    owed = 0  # is-next pairs that one-segment chunks forced to be random
    for _ in range(dupe_factor):
        for pos, segs in enumerate(segments):
            target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
            chunk: list[tuple[int, int]] = []
            length, i = 0, 0
            while i < len(segs):
                chunk.append(segs[i])
                length += segs[i][1] - segs[i][0]
                if i == len(segs) - 1 or length >= target:
                    n_a = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
                    a = (chunk[0][0], chunk[n_a - 1][1])
                    want_random = rng.random() < nsp_prob
                    if len(chunk) == 1:  # nothing to be "next": random, and owe an is-next pair
                        owed += not want_random
                        want_random = True
                    elif want_random and owed:
                        owed -= 1
                        want_random = False
                    if want_random:
                        label = RANDOM_NEXT
                        other = int(rng.integers(len(segments) - 1))
                        other += other >= pos
                        other_segs = segments[other]
                        j = int(rng.integers(len(other_segs)))
                        b_start, b_end, room = other_segs[j][0], other_segs[j][1], target - (a[1] - a[0])
                        while b_end - b_start < room and j + 1 < len(other_segs):
                            j += 1
                            b_end = other_segs[j][1]
                        b = (b_start, b_end)
                        i -= len(chunk) - n_a  # the unused sentences start the next chunk
                    else:
                        label = IS_NEXT
                        b = (chunk[n_a][0], chunk[-1][1])
                    a, b = truncate_pair(a, b, max_tokens, rng)
                    out.append((a[0], a[1], b[0], b[1], label))
                    chunk, length = [], 0
                    target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
                i += 1
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)


def packed_instances(shards: TokenShards, docs: Sequence[int], seq_len: int, doc_gap: int = 0) -> np.ndarray:
    """(n, 5) int64 single-segment examples: whole sentences of one document (or group) up to
    seq_len - 2 tokens. `doc_gap`: tokens that the dataset puts between two documents of a group
    inside an example (a paragraph break), counted in its length."""
    max_tokens = seq_len - 2
    if max_tokens < 1:
        raise DataError(f"seq_len={seq_len} is too short; use at least 3")
    out = []
    for d in docs:
        group = [d] if isinstance(d, (int, np.integer)) else d
        firsts = {int(shards.sentences[shards.documents[g]]) for g in group[1:]} if doc_gap else set()
        start = end = None
        length = 0
        for s, e in document_segments(shards, d, max_tokens):
            length += e - s + (doc_gap if s in firsts else 0)
            if start is not None and length > max_tokens:
                out.append((start, end, 0, 0, NO_PAIR))
                start = None
            if start is None:
                start, length = s, e - s
            end = e
        if start is not None:
            out.append((start, end, 0, 0, NO_PAIR))
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)


def split_examples(shards: TokenShards, min_tokens: int, eval_fraction: float, seed: int, instances,
                   need: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """(train, held-out or None) example rows: consecutive short documents of a file grouped up to
    `min_tokens` (`group_documents`), the groups split into train / held-out (`split_documents`, at
    least `need` each), then ``instances(groups, seed, held_out)`` builds each split's rows; the
    held-out rows are shuffled (seeded), so a bounded evaluation sees every part of the split."""
    groups = group_documents(shards, min_tokens)
    unit = "document" if len(groups) == shards.num_documents else "group"
    advice = "" if unit == "document" else (
        f"; {shards.num_documents} documents make these {len(groups)} groups, consecutive short documents of a file "
        f"being grouped up to {min_tokens} tokens: lower min_doc_tokens (0: every document its own)")
    train_ids, eval_ids = split_documents(len(groups), eval_fraction, seed, min_eval=need, min_train=need,
                                          unit=unit, advice=advice)
    train = instances([groups[i] for i in train_ids], seed, False)
    if len(eval_ids) == 0:
        return train, None
    rows = instances([groups[i] for i in eval_ids], seed + 1, True)
    return train, rows[np.random.default_rng(seed + 2).permutation(len(rows))]


class PretrainingDataset:
    """Examples as the collator wants them: {"input_ids", "num_a", "next_sentence_label"}.

    input_ids is ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]``) as an int64 array;
    num_a counts the tokens of type 0 (``[CLS] A [SEP]``).
    """

    def __init__(self, shards: TokenShards, instances: np.ndarray, cls_id: int, sep_id: int):
        self.tokens = shards.tokens
        self.instances = instances
        self.cls, self.sep = np.array([cls_id], np.int64), np.array([sep_id], np.int64)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int) -> dict:
        a0, a1, b0, b1, label = (int(v) for v in self.instances[i])
        parts = [self.cls, self.tokens[a0:a1].astype(np.int64), self.sep]
        if label != NO_PAIR:
            parts += [self.tokens[b0:b1].astype(np.int64), self.sep]
        return {"input_ids": np.concatenate(parts), "num_a": a1 - a0 + 2, "next_sentence_label": label}

    def length(self, i: int) -> int:
        a0, a1, b0, b1, label = self.instances[i]
        return int(a1 - a0 + 2 + (b1 - b0 + 1 if label != NO_PAIR else 0))
