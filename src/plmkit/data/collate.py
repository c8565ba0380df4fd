"""The one padding collator: feature dicts -> tensors padded to the batch's longest sequence.

Dynamic padding: each batch is padded to its own longest example, never to the model maximum.
Right padding for training and encoders; left padding for batched generation (each row's last
token is then the last position, where decoding continues).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from plmkit.utils.constants import IGNORE_INDEX

SIDES = ("right", "left")


def pad_sequences(rows: Sequence[Sequence[int]], value: int, side: str = "right",
                  width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) padded ids and the (B, W) attention mask (1 on real tokens), W = longest row."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n:
            span = slice(0, n) if side == "right" else slice(width - n, width)
            ids[i, span] = torch.as_tensor(row, dtype=torch.long)
            mask[i, span] = 1
    return ids, mask


def pad_collate(pad_id: int, side: str = "right"):
    """Collate feature dicts into a batch that ``model(**batch)`` takes.

    ``input_ids`` are padded with `pad_id` and give ``attention_mask``; ``token_type_ids`` (when
    the features have them) are padded with 0; other per-token lists as long as ``input_ids``
    (``labels``, ``document_ids`` ...) are padded with -100 for ``labels`` and 0 otherwise; other
    keys (scalar or fixed-size labels, entity or answer positions) are stacked. Keys starting
    with "_" (metadata) are left out. Features without ``labels`` among labelled ones (distillation's
    unlabelled transfer data) get labels that every loss ignores: -100, per token or per example.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")

    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
        features = with_ignored_labels(features)
        lengths = [len(f["input_ids"]) for f in features]
        ids, mask = pad_sequences([f["input_ids"] for f in features], pad_id, side)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in features[0]:
            batch["token_type_ids"] = pad_sequences([f["token_type_ids"] for f in features], 0, side, ids.shape[1])[0]
        for key in features[0]:
            if key in batch or key.startswith("_"):
                continue
            values = [f[key] for f in features]
            if _per_token(values, lengths):
                fill = IGNORE_INDEX if key == "labels" else 0
                batch[key] = pad_sequences(values, fill, side, ids.shape[1])[0]
            else:
                batch[key] = _stacked(values)
        return batch

    return collate


def with_ignored_labels(features: list[dict]) -> list[dict]:
    """`features`, those without ``labels`` given ignored ones (-100, or -100 per input token when the
    labelled features have a label per token) when some others have labels; unchanged otherwise."""
    labelled = next((f for f in features if "labels" in f), None)
    if labelled is None or all("labels" in f for f in features):
        return features
    labels = labelled["labels"]
    per_token = isinstance(labels, (list, tuple)) or (isinstance(labels, (np.ndarray, torch.Tensor))
                                                       and labels.ndim > 0)
    if per_token and not _per_token([labelled["labels"]], [len(labelled["input_ids"])]):
        raise ValueError("features without labels cannot share a batch with list targets that are not per token "
                         "(multi-label classes): there is no ignored value for them")
    return [f if "labels" in f else {**f, "labels": [IGNORE_INDEX] * len(f["input_ids"]) if per_token else IGNORE_INDEX}
            for f in features]


def _stacked(values: list) -> torch.Tensor:
    """(B, ...) from one value per feature: numbers, lists, arrays or tensors of one shape."""
    if any(isinstance(v, (np.ndarray, torch.Tensor)) for v in values):
        return torch.stack([torch.as_tensor(v) for v in values])
    return torch.tensor(values)


def _per_token(values: list, lengths: list[int]) -> bool:
    """Integer sequences (lists, 1-D arrays or tensors), one value per input token, in every feature."""
    return all(_is_int_sequence(v) and len(v) == n for v, n in zip(values, lengths))


def _is_int_sequence(value) -> bool:
    """A list or tuple of ints, or a 1-D integer numpy array or tensor."""
    if isinstance(value, (list, tuple)):
        return all(isinstance(x, (int, np.integer)) for x in value)
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and np.issubdtype(value.dtype, np.integer)
    if isinstance(value, torch.Tensor):
        return value.dim() == 1 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return False
