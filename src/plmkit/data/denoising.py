"""BART's denoising noise (Lewis et al., 2019: text infilling and sentence permutation): token-id
documents in, (noised input_ids, labels = the original) batches for an encoder-decoder out.

* **Sentence permutation** (`permute_sentences`): a document's sentences, given by their token
  counts, are put in a random order.
* **Text infilling** (`text_infilling`): of a document's n tokens, k = floor(n * rate + u) are
  masked (u uniform in [0, 1), so the expected masked fraction is exactly `rate`, as in
  masking.py). Span lengths are drawn from Poisson(lambda) until they cover k tokens, the last one
  cut to fit (fairseq's rule); each span becomes ONE mask token, and a span of length 0 inserts a
  mask token. The spans go into distinct gaps among the n - k tokens left (before the first, between
  two, after the last), chosen uniformly, so spans never touch or overlap: every mask token of the
  input stands for one span. Exactly k tokens are masked, always: when there are more spans than gaps
  (a short document, a high rate or a small lambda), the spans of positive length that find no gap
  are merged into random spans that did (as overlapping spans merge in fairseq), and zero-length
  spans (insertions, masking nothing) take the gaps left over, the rest being dropped.
* **The batch** (`DenoisingCollator`): input_ids = ``<s> noised </s>``, labels = ``<s> original </s>``
  (BART's layout: the model shifts the labels right behind ``decoder_start_token_id``), both padded
  to the batch's longest row; labels are padded with -100, so the loss skips padding.
* **The documents** (`DenoisingDataset`): token ranges of a tokenized corpus (plmkit.data.shards,
  whole documents cut at their sentences; ranges from plmkit.data.nsp.packed_instances: whole
  sentences of one document, or of consecutive short documents of a file, up to a length), with
  their sentences' lengths, and a paragraph break between two documents of a range.

Sentence permutation comes first, as in BART. Random numbers come from the global torch RNG (so a
trainer that saves and restores RNG states resumes exactly) or from `generator` when one is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from plmkit.data.collate import pad_sequences
from plmkit.utils.constants import IGNORE_INDEX


def span_lengths(k: int, poisson_lambda: float = 3.0, generator: torch.Generator | None = None) -> Tensor:
    """Span lengths drawn from Poisson(`poisson_lambda`) until they add up to `k` or more, the last
    one cut so that they add up to exactly `k`: a (spans,) long tensor (empty when k = 0)."""
    lengths = torch.zeros(0, dtype=torch.long)
    while int(lengths.sum()) < k:
        rates = torch.full((max(8, int(2 * k / poisson_lambda)),), float(poisson_lambda))
        lengths = torch.cat([lengths, torch.poisson(rates, generator=generator).long()])
    if k <= 0:
        return lengths[:0]
    total = torch.cumsum(lengths, 0)
    last = int(torch.searchsorted(total, k))  # the first span that reaches k
    lengths = lengths[:last + 1].clone()
    lengths[last] -= int(total[last]) - k
    return lengths


def fit_spans_in_gaps(lengths: Tensor, gaps: int, generator: torch.Generator | None = None) -> Tensor:
    """At most `gaps` of the (spans,) `lengths` (in a random order), still adding up to the same total: the
    spans of positive length go first, those beyond `gaps` being added to random ones that fit; zero-length
    spans (insertions) take the gaps left over. Unchanged when every span fits."""
    if lengths.numel() <= gaps:
        return lengths
    positive = lengths > 0
    rank = torch.where(positive, positive.cumsum(0), (~positive).cumsum(0)) - 1  # (spans,): rank among its kind
    fitting = min(int(positive.sum()), gaps)  # spans of positive length that get a gap
    keep = torch.where(positive, rank < fitting, rank < gaps - fitting)
    fitted, left_out = lengths[keep].clone(), lengths[positive & ~keep]
    if left_out.numel():
        targets = torch.nonzero(fitted > 0).squeeze(1)  # (fitting,) the positions of the fitted positive spans
        picks = torch.randint(fitting, (left_out.numel(),), generator=generator)
        fitted.index_add_(0, targets[picks], left_out)
    return fitted


def text_infilling(ids: Tensor, mask_id: int, rate: float = 0.3, poisson_lambda: float = 3.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """One document (1-D ids) with spans of about `rate` of its tokens replaced by one `mask_id` each."""
    n = ids.numel()
    k = min(n, int(n * rate + float(torch.rand((), generator=generator))))
    lengths = span_lengths(k, poisson_lambda, generator)
    lengths = lengths[torch.randperm(lengths.numel(), generator=generator)]  # the cut last span anywhere
    lengths = fit_spans_in_gaps(lengths, n - k + 1, generator)  # at most one span per gap, still k tokens
    kept, m = n - k, lengths.numel()
    gaps = torch.randperm(kept + 1, generator=generator)[:m].sort().values  # gap g: before kept token g
    in_gap = torch.zeros(kept + 1, dtype=torch.long).index_put_((gaps,), lengths)  # (kept + 1,) tokens masked
    has_mask = torch.zeros(kept + 1, dtype=torch.long).index_put_((gaps,), torch.ones_like(gaps))
    j = torch.arange(kept)
    out = torch.empty(kept + m, dtype=ids.dtype)
    out[j + torch.cumsum(has_mask, 0)[:kept]] = ids[j + torch.cumsum(in_gap, 0)[:kept]]  # the kept tokens
    out[gaps + torch.arange(m)] = mask_id  # a span's mask follows the g kept tokens and the earlier masks
    return out


def permute_sentences(ids: Tensor, sentence_lengths: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """`ids` with its sentences (consecutive runs of `sentence_lengths` tokens) in a random order."""
    lengths = torch.as_tensor(sentence_lengths, dtype=torch.long)
    if int(lengths.sum()) != ids.numel() or bool((lengths < 0).any()):
        raise ValueError(f"sentence_lengths {list(sentence_lengths)} must be >= 0 and add up to the "
                         f"document's {ids.numel()} tokens")
    starts = torch.cumsum(lengths, 0) - lengths
    order = torch.randperm(lengths.numel(), generator=generator)
    new_lengths = lengths[order]
    new_starts = torch.cumsum(new_lengths, 0) - new_lengths
    # token t of the output comes from its sentence's old start + (t - the sentence's new start)
    shift = torch.repeat_interleave(starts[order] - new_starts, new_lengths)
    return ids[torch.arange(ids.numel()) + shift]


class DenoisingCollator:
    """Noise and pad documents for BART-style pretraining: a BatchLoader `collate_fn`.

    An example is ``{"input_ids": [...]}``, a document's token ids without special tokens, and
    optionally ``"sentence_lengths"``: its sentences' token counts (adding up to its length), which
    sentence permutation needs (a document without them is one sentence). Returns input_ids,
    attention_mask and labels (B, T): see the module docstring. `max_length`: a noised input longer
    than this (zero-length spans insert mask tokens, so an input can outgrow its document) is cut
    to it, its ``</s>`` kept.
    """

    def __init__(self, tokenizer, mask_rate: float = 0.3, poisson_lambda: float = 3.0,
                 permute_sentences: bool = True, generator: torch.Generator | None = None,
                 max_length: int | None = None):
        if not 0.0 <= mask_rate <= 1.0:
            raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
        if not poisson_lambda > 0.0:
            raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs mask and pad tokens for denoising (train one with "
                             "--model byte-bpe --style bart)")
        self.mask_rate, self.poisson_lambda = mask_rate, poisson_lambda
        self.permute = permute_sentences
        self.generator = generator
        self.max_length = max_length
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        self.eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]

    def noise(self, ids: Tensor, sentence_lengths: Sequence[int] | None = None) -> Tensor:
        """One document's noised ids, without special tokens."""
        if self.permute and sentence_lengths is not None:
            ids = permute_sentences(ids, sentence_lengths, self.generator)
        return text_infilling(ids, self.mask_id, self.mask_rate, self.poisson_lambda, self.generator)

    def __call__(self, examples: Sequence[dict]) -> dict[str, Tensor]:
        inputs, labels = [], []
        for example in examples:
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            noised = self.bos + self.noise(ids, example.get("sentence_lengths")).tolist() + self.eos
            if self.max_length is not None and len(noised) > self.max_length:
                noised = noised[:self.max_length - len(self.eos)] + self.eos
            inputs.append(noised)
            labels.append(self.bos + ids.tolist() + self.eos)
        input_ids, attention_mask = pad_sequences(inputs, self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": pad_sequences(labels, IGNORE_INDEX)[0]}


class DenoisingDataset:
    """Documents for `DenoisingCollator` from a tokenized corpus: item i is ``{"input_ids": (n,) int64,
    "sentence_lengths": [...]}``, the tokens of row i of `rows` ((m, >= 2): [start, end) token ranges
    into `shards`, as plmkit.data.nsp.packed_instances gives them) cut where sentences start, with
    `separator` (the ids of a paragraph break) ending the sentence before each document that starts
    inside the range (packed_instances(..., doc_gap=len(separator)) leaves room for it)."""

    def __init__(self, shards, rows: np.ndarray, separator: Sequence[int] = ()):
        self.tokens = shards.tokens
        self.ranges = np.asarray(rows, dtype=np.int64)[:, :2]
        self.sentence_starts = np.asarray(shards.sentences[:-1])
        self.doc_starts = np.asarray(shards.sentences[shards.documents[:-1]])
        self.separator = np.asarray(separator, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> dict:
        start, end = (int(x) for x in self.ranges[i])
        starts = self.sentence_starts
        cuts = starts[np.searchsorted(starts, start, side="right"):np.searchsorted(starts, end, side="left")]
        pieces = np.split(np.asarray(self.tokens[start:end], dtype=np.int64), cuts - start)
        if len(self.separator):
            at = np.minimum(np.searchsorted(self.doc_starts, cuts), len(self.doc_starts) - 1)
            new_doc = self.doc_starts[at] == cuts  # piece k + 1 starts a document
            pieces = [np.concatenate([p, self.separator]) if k < len(cuts) and new_doc[k] else p
                      for k, p in enumerate(pieces)]
        return {"input_ids": np.concatenate(pieces), "sentence_lengths": [len(p) for p in pieces]}
