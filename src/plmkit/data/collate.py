"""The one padding collator: feature dicts -> tensors padded to the batch's longest sequence.

Dynamic padding: each batch is padded to its own longest example, never to the model maximum.
Right padding for training and encoders; left padding for batched generation (each row's last
token is then the last position, where decoding continues).
"""
from __future__ import annotations

from typing import Sequence

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
    with "_" (metadata) are left out.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")

    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
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
                batch[key] = torch.tensor(values)
        return batch

    return collate


def _per_token(values: list, lengths: list[int]) -> bool:
    """Lists of ints, one per input token, in every feature."""
    return all(isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(x, int) for x in v)
               for v, n in zip(values, lengths))
