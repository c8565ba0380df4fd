"""Held-out splits by whole documents, shared by every pretraining objective (MLM/NSP, causal LM).

Evaluation text must never appear in training examples, so a corpus is split by documents
(or groups of documents), never inside one.
"""
from __future__ import annotations

import math

import numpy as np

from plmkit.errors import DataError


def split_documents(num_documents: int, eval_fraction: float, seed: int, min_eval: int = 1,
                    min_train: int = 1, unit: str = "document", advice: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) document indices: a seeded random `eval_fraction` of whole documents
    (at least `min_eval` when eval_fraction > 0), each list sorted. `unit` names what is split in an
    error (groups of documents, say), and `advice` adds what else helps."""
    n_eval = 0 if eval_fraction <= 0 else max(min_eval, math.ceil(eval_fraction * num_documents))
    if num_documents - n_eval < min_train:
        raise DataError(f"the corpus has {num_documents} {unit}(s): too few for {n_eval} held-out and at least "
                        f"{min_train} training {unit}(s); add text (documents are separated by blank lines)"
                        f"{advice}, or lower eval_fraction (0: no held-out part)")
    order = np.random.default_rng(seed).permutation(num_documents)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])
