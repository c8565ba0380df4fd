"""Perplexity of a causal LM (or an encoder-decoder) on held-out examples: exp of the mean cross-entropy
of its labels."""
from __future__ import annotations

import math
from typing import Callable

import torch

from plmkit.errors import DataError
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.device import model_device


@torch.no_grad()
def evaluate_perplexity(model, dataset, batch_size: int = 8, max_batches: int | None = None,
                        collate: Callable | None = None, shifted: bool = True, part=None) -> dict[str, float]:
    """Mean next-token cross-entropy over every labelled token of `dataset` (at most `max_batches`
    batches): {"loss", "perplexity" = exp(loss), "tokens"}. Model in eval mode is the caller's job.

    collate: examples -> batch with "labels" (default `plmkit.data.clm.collate_blocks`, for packed
    blocks). The model computes its own loss with ``return_logits=False``, so a causal LM never
    materialises the (B, T, V) logits (plmkit.nn.losses.linear_cross_entropy). shifted: the model
    predicts labels[:, 1:] from the tokens before (a causal LM); False: every label is a target
    (an encoder-decoder's). part: this process's part of an evaluation shared by several (an
    `EvalShard` of plmkit.training.distributed: `rows(batch)` its rows, `sums(values)` over all)."""
    if collate is None:
        from plmkit.data.clm import collate_blocks as collate
    device = model_device(model)
    total, count = 0.0, 0
    n = len(dataset) if max_batches is None else min(len(dataset), max_batches * batch_size)
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        if not int((batch["labels"][:, int(shifted):] != IGNORE_INDEX).sum()):
            continue
        batch, own = part.rows(batch) if part is not None else (batch, True)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch, return_logits=False).loss.float()  # (run by every part: a sharded model's collectives)
        tokens = int((batch["labels"][:, int(shifted):] != IGNORE_INDEX).sum()) if own else 0
        if tokens:
            total += float(loss) * tokens
            count += tokens
    if part is not None:
        total, count = part.sums([total, count])
    if count == 0:
        raise DataError("no held-out tokens to evaluate on")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(count)}
