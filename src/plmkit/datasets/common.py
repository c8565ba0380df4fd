"""What every converter shares: reading package text files, seeded 80/10/10 splits (shuffled, or by
group), deduplication (exact, or of near-twins on every side of a pair), writing JSONL records and
blank-line separated documents."""
from __future__ import annotations

import collections
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path

SEED = 1234
SPLITS = ("train", "dev", "test")
Counts = dict[str, int]  # records written, per output file


def read_text(path: Path) -> str:
    """Decode UTF-8 (with or without BOM), falling back to cp1252; ``\\n`` line ends."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split3(items: Sequence, seed: int = SEED) -> tuple[list, list, list]:
    """Shuffle a copy of `items` with `seed`; cut 80/10/10 into train/dev/test."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_train, n_dev = int(len(items) * 0.8), int(len(items) * 0.1)
    return items[:n_train], items[n_train:n_train + n_dev], items[n_train + n_dev:]


_NOT_WORD = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")


def normalize(text: str) -> str:
    """The key under which two texts are twins: NFKC, case-folded, every number one digit (0), every
    run of punctuation and spaces one space. "Python 3 module." and "python 2 module" are twins."""
    text = _DIGITS.sub("0", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_NOT_WORD.sub(" ", text).split())


def unique(items: Iterable, key: Callable = lambda item: item) -> list:
    """`items` without repeats of `key(item)`, first occurrence kept, order kept."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


def unique_each(items: Iterable, keys: Callable[[object], Sequence[Hashable]]) -> list:
    """`items` without those whose i-th key repeats the i-th key of an item kept before, for any i
    (the sides of a pair: a pair is dropped when its source or its target was seen). Order kept."""
    seen: list[set] = []
    kept = []
    for item in items:
        ks = keys(item)
        seen += [set() for _ in range(len(ks) - len(seen))]
        if not any(k in s for k, s in zip(ks, seen)):
            for k, s in zip(ks, seen):
                s.add(k)
            kept.append(item)
    return kept


RARE = 10  # a word in at most this many texts of a set is a name, the slot of a template


def template_keys(texts: Sequence[str], rare: int = RARE) -> list[str | None]:
    """Each text's template key: its `normalize` form with each run of rare words (found in at most
    `rare` of `texts`: names) as one ``*``, so "Development files for libfoo" and "Development files
    for libbar" share ``development files for *``; None when fewer than two words are left."""
    words = [normalize(text).split() for text in texts]
    counts = collections.Counter(word for ws in words for word in set(ws))
    keys: list[str | None] = []
    for ws in words:
        key: list[str] = []
        for word in ws:
            word = word if counts[word] > rare else "*"
            if word != "*" or key[-1:] != ["*"]:
                key.append(word)
        keys.append(" ".join(key) if len(key) - key.count("*") >= 2 else None)
    return keys


def without_near_twins(parts: tuple[list, list, list], sides: Callable[[object], Sequence[str]],
                       rare: int = RARE) -> tuple[list, list, list]:
    """`parts` (train, dev, test) with dev and test cleared of the items that share, on any of their
    `sides`, a `template_keys` key with a training item on that side (keys counted over all parts)."""
    items = [item for part in parts for item in part]
    texts_per_side = list(zip(*map(sides, items)))
    keys = list(zip(*(template_keys(texts, rare) for texts in texts_per_side)))  # per item, one per side
    seen = [{item_keys[side] for item_keys in keys[:len(parts[0])]} - {None} for side in range(len(texts_per_side))]
    kept, start = [parts[0]], len(parts[0])
    for part in parts[1:]:
        kept.append([item for item, item_keys in zip(part, keys[start:start + len(part)])
                     if not any(key in seen[side] for side, key in enumerate(item_keys))])
        start += len(part)
    return kept[0], kept[1], kept[2]


def split_of(group: str, seed: int = SEED) -> str:
    """"train", "dev" or "test" (80/10/10) for a group name, from a hash of the seed and the name:
    the same group lands in the same split in every dataset, whatever else the data holds."""
    bucket = int.from_bytes(hashlib.sha256(f"{seed}\0{group}".encode()).digest()[:8], "big") % 10
    return "train" if bucket < 8 else "dev" if bucket == 8 else "test"


def split_by_group(items: Iterable, group: Callable[[object], str], seed: int = SEED) -> tuple[list, list, list]:
    """Train/dev/test lists: every item goes where its group goes (`split_of`), order kept."""
    parts: dict[str, list] = {split: [] for split in SPLITS}
    for item in items:
        parts[split_of(group(item), seed)].append(item)
    return parts["train"], parts["dev"], parts["test"]


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_documents(path: Path, documents: Iterable[str]) -> int:
    """Write documents separated by one blank line; return how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for doc in documents:
            out.write(("\n" if n else "") + doc.strip("\n") + "\n")
            n += 1
    return n


def write_splits(out_dir: Path, stem: str, records: Sequence[dict], seed: int = SEED) -> Counts:
    """Write ``stem.{train,dev,test}.jsonl`` (stem "" gives ``train.jsonl`` ...), shuffled 80/10/10."""
    return write_parts(out_dir, stem, split3(records, seed))


def write_parts(out_dir: Path, stem: str, parts: Sequence[Iterable[dict]]) -> Counts:
    """Write the train, dev and test records of `parts` to ``stem.{train,dev,test}.jsonl``."""
    counts = {}
    for split, part in zip(SPLITS, parts):
        name = f"{stem}.{split}.jsonl" if stem else f"{split}.jsonl"
        counts[name] = write_jsonl(out_dir / name, part)
    return counts


def paragraphs_of(lines: Iterable[str], per_paragraph: int) -> Iterator[str]:
    """Consecutive `per_paragraph` lines joined into one paragraph (document)."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == per_paragraph:
            yield "\n".join(batch)
            batch = []
    if batch:
        yield "\n".join(batch)
