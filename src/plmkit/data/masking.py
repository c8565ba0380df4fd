"""Dynamic masked-LM masking and padding: the collate function of pretraining.

Every time a batch is built, each sequence gets a fresh mask:

* eligible tokens are those that are neither special ([CLS], [SEP], [PAD], ...) nor padding;
* a sequence with n eligible tokens masks k = floor(n * rate + u) of them (u uniform in
  [0, 1), so the expected fraction is exactly `rate` even for short sequences), chosen
  uniformly at random; unlike BERT there is no forced minimum of one per sequence
  (a batch with no masked token at all gets one, so the loss is defined);
* of the chosen tokens 80% become [MASK], 10% a random non-special token, 10% stay;
  `labels` holds their original ids and -100 everywhere else;
* whole-word masking: a WordPiece ``##`` continuation belongs to the word before it,
  and words are chosen instead of tokens: in a random order of the words, with r tokens
  before a word of L tokens, the word is taken when r + L u < n * rate (u as above): the
  words inside the budget always, the one across its end with the probability that keeps
  the expected masked count exactly n * rate, whole words only. A Chinese
  character is its own token and word in BERT's tokenizer, so Chinese gets character
  masking.

Random numbers come from the global torch RNG (so a trainer that saves and restores
RNG states resumes exactly) or from `generator` when one is given (fixed masks for evaluation).
Batches are padded to their longest sequence, never to the model's maximum.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from plmkit.utils.constants import IGNORE_INDEX


def continuation_table(tokenizer) -> Tensor:
    """(V,) bool: True for WordPiece continuation tokens (``##...``)."""
    table = torch.zeros(len(tokenizer), dtype=torch.bool)
    for token, i in tokenizer.get_vocab().items():
        if token.startswith("##") and len(token) > 2:
            table[i] = True
    return table


def mask_tokens(input_ids: Tensor, eligible: Tensor, rate: float, mask_id: int, random_ids: Tensor,
                continuation: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(masked input_ids, labels) for a (B, T) batch; `eligible` (B, T) marks maskable tokens.

    `random_ids`: the ids a "random token" replacement draws from; `continuation` ((V,) bool):
    enables whole-word masking.
    """
    b, t = input_ids.shape
    device = input_ids.device
    positions = torch.arange(t, device=device).expand(b, t)
    if continuation is not None:
        prev_eligible = torch.nn.functional.pad(eligible[:, :-1], (1, 0), value=False)
        starts = eligible & ~(continuation[input_ids] & prev_eligible)
    else:
        starts = eligible
    # every token points at the first token of its word; word length for each token
    start_pos = torch.where(starts, positions, torch.full_like(positions, -1)).cummax(dim=1).values.clamp(min=0)
    word_len = torch.zeros(b, t, dtype=torch.long, device=device)
    word_len.scatter_add_(1, start_pos, eligible.long())
    word_len = word_len.gather(1, start_pos)
    # one random score per word; eligible tokens sorted by it (stable: a word's tokens stay together, in order)
    score = torch.rand(b, t, generator=generator, device=device).gather(1, start_pos)
    score = score.masked_fill(~eligible, 2.0)
    order = torch.sort(score, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, positions)
    first_rank = rank - (positions - start_pos)  # rank of the word's first token
    budget = eligible.sum(1, keepdim=True) * rate  # (B, 1): the expected masked count, not rounded
    u = torch.rand(b, 1, generator=generator, device=device)
    # words wholly inside the budget are taken, the one across its end with probability (budget - r) / L
    chosen = eligible & (first_rank + word_len * u < budget)
    if not bool(chosen.any()) and bool(eligible.any()):
        chosen = eligible & (rank == rank.masked_fill(~eligible, t).min())  # one token somewhere in the batch
        chosen &= torch.cumsum(chosen.view(-1).long(), 0).view(b, t) == 1

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(b, t, generator=generator, device=device)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    picks = torch.randint(len(random_ids), (b, t), generator=generator, device=device)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids.to(device)[picks], masked)
    return masked, labels


class PretrainingCollator:
    """Pad a list of `PretrainingDataset` examples and mask them: a BatchLoader `collate_fn`.

    Returns input_ids, attention_mask, token_type_ids, labels (B, T) and, when `nsp`,
    next_sentence_label (B,); plus ``sparse_prediction=True`` so the model computes the
    vocabulary projection at masked positions only.
    """

    def __init__(self, tokenizer, mask_rate: float = 0.15, whole_word_mask: bool = False, nsp: bool = True,
                 generator: torch.Generator | None = None, sparse_prediction: bool = True):
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs [MASK] and [PAD] tokens for masked-LM pretraining")
        self.mask_rate = mask_rate
        self.nsp = nsp
        self.generator = generator
        self.sparse_prediction = sparse_prediction
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        special = torch.zeros(len(tokenizer), dtype=torch.bool)
        special[list(tokenizer.all_special_ids)] = True
        self.special = special
        self.random_ids = (~special).nonzero().squeeze(1)
        self.continuation = continuation_table(tokenizer) if whole_word_mask else None

    def __call__(self, examples: Sequence[dict]) -> dict:
        lengths = [len(e["input_ids"]) for e in examples]
        b, t = len(examples), max(lengths)
        ids = np.full((b, t), self.pad_id, dtype=np.int64)
        types = np.zeros((b, t), dtype=np.int64)
        attention = np.zeros((b, t), dtype=np.int64)
        for row, (e, n) in enumerate(zip(examples, lengths)):
            ids[row, :n] = e["input_ids"]
            attention[row, :n] = 1
            if self.nsp:
                types[row, e["num_a"]:n] = 1
        input_ids, attention_mask = torch.from_numpy(ids), torch.from_numpy(attention)
        eligible = attention_mask.bool() & ~self.special[input_ids]
        masked, labels = mask_tokens(input_ids, eligible, self.mask_rate, self.mask_id, self.random_ids,
                                     self.continuation, self.generator)
        batch = {"input_ids": masked, "attention_mask": attention_mask, "token_type_ids": torch.from_numpy(types),
                 "labels": labels}
        if self.nsp:
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples], dtype=torch.long)
        if self.sparse_prediction:
            batch["sparse_prediction"] = True
        return batch
