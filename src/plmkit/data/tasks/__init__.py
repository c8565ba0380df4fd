"""Task data readers (classification, NER, relation extraction, extractive QA) and batching.

Every reader raises `DataError` naming ``file:line`` for malformed rows, and collates batches with
dynamic padding: each batch is padded to its own longest example, never to the model maximum.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch

from plmkit.errors import DataError

IGNORE_INDEX = -100


def open_text(path: str | Path) -> list[str]:
    """The file's lines (no line ends); DataError if it is missing, not UTF-8 or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_utf8(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text.splitlines()


def read_utf8(path: Path) -> str:
    """The file's text (a UTF-8 BOM dropped); DataError naming file:line if it is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); "
                        "re-save the file as UTF-8") from None


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    for lineno, line in enumerate(open_text(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def pad_collate(pad_id: int):
    """Collate feature dicts into tensors padded to the batch's longest sequence.

    ``input_ids`` / ``token_type_ids`` / ``attention_mask`` are padded (pad_id, 0, 0); per-token
    ``labels`` (a list as long as input_ids) are padded with -100; other keys (scalar or fixed-size
    labels, entity positions, start/end positions) are stacked. Keys starting with "_" (metadata)
    are left out, so ``model(**batch)`` works.
    """
    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            length = len(f["input_ids"])
            ids[i, :length] = torch.tensor(f["input_ids"])
            mask[i, :length] = 1
            if "token_type_ids" in f:
                types[i, :length] = torch.tensor(f["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        for key in features[0]:
            if key in batch or key.startswith("_"):
                continue
            values = [f[key] for f in features]
            if key == "labels" and isinstance(values[0], list) and len(values[0]) == len(features[0]["input_ids"]) \
                    and all(isinstance(v, int) for v in values[0]):
                labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
                for i, v in enumerate(values):
                    labels[i, :len(v)] = torch.tensor(v)
                batch[key] = labels
            else:
                batch[key] = torch.tensor(values)
        return batch

    return collate


def length_of(feature: dict) -> int:
    return len(feature["input_ids"])


def window_starts(n: int, size: int, overlap: int) -> list[int]:
    """Starts of the windows of `size` items that cover `n` items, consecutive windows sharing
    `overlap` items (at least one new item each); a single window when everything fits."""
    step = max(size - overlap, 1)
    starts = [0]
    while starts[-1] + size < n:
        starts.append(starts[-1] + step)
    return starts


def batches_by_length(features: list[dict], batch_size: int) -> Iterator[list[int]]:
    """Indices of `features` in batches of similar length (for evaluation / prediction)."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]
