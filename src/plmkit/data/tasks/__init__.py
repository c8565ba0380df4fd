"""Task data readers (classification, NER, relation extraction, extractive QA) and batching.

Every reader raises `DataError` naming ``file:line`` for malformed rows, and collates batches with
dynamic padding: each batch is padded to its own longest example, never to the model maximum.
"""
from __future__ import annotations

from typing import Iterator

from plmkit.data.collate import pad_collate  # noqa: F401  (re-exported for the task modules)


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
