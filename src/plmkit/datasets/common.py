"""What every converter shares: reading package text files, seeded 80/10/10 splits, deduplication,
writing JSONL records and blank-line separated documents."""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

SEED = 1234
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


def unique(items: Iterable, key: Callable = lambda item: item) -> list:
    """`items` without repeats of `key(item)`, first occurrence kept, order kept."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


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
    """Write ``stem.{train,dev,test}.jsonl`` (stem "" gives ``train.jsonl`` ...)."""
    counts = {}
    for split, part in zip(("train", "dev", "test"), split3(records, seed)):
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
