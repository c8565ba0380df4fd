"""Attention-mask conventions, kept in one place.

User-facing (Hugging Face convention): ``attention_mask`` is (B, T) with 1 for real tokens
and 0 for padding.

Inside attention a mask is an additive *bias*, broadcastable to (B, n_heads, T_q, T_k): 0 where a
query may attend to a key, the dtype's most negative finite value where it may not. A finite value
(not -inf) keeps fully masked rows (a padding query under a causal mask) free of NaN.

Packed documents: several documents can share one training row (causal-LM packing). Their
``document_ids`` (B, T) (any integer per document, constant over its run of tokens) turn the causal
mask block-diagonal, `document_bias`, so a token attends only to earlier tokens of its own document;
`positions_from_documents` restarts position ids at 0 at each document start.

Padding waste: `Unpadded` removes padding tokens so that linear layers and the feed-forward only
see real tokens, (B, T, D) -> (N, D); self-attention runs on groups of sequences of equal length,
without padding (where it returns probabilities, it re-pads and drops padding again).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plmkit.errors import PlmkitError
from plmkit.nn.tracing import is_traceable


def padding_bias(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T_k) 1/0 mask -> (B, 1, 1, T_k) additive bias hiding padding keys."""
    keep = attention_mask.bool()[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def causal_bias(t_q: int, t_k: int, dtype: torch.dtype, device=None) -> Tensor:
    """(1, 1, T_q, T_k) bias letting query i see keys up to i + (T_k - T_q) (the cached prefix)."""
    query = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)  # (T_q, 1): each query's position
    allowed = torch.arange(t_k, device=device)[None] <= query  # (T_q, T_k); no diagonal argument: traceable sizes
    return torch.zeros(t_q, t_k, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) 1/0 mask -> (B, T) position ids counting real tokens only: with left padding each row's
    first real token gets position 0. Padding gets position 1, as Hugging Face's ``generate``."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def document_bias(document_ids: Tensor, dtype: torch.dtype, attention_mask: Tensor | None = None) -> Tensor:
    """(B, T) document ids -> (B, 1, T, T) causal, block-diagonal bias: query i sees key j iff j <= i and
    both belong to the same document (and key j is not padding, when ``attention_mask`` is given)."""
    t = document_ids.shape[-1]
    same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T_q, T_k)
    allowed = same & torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=document_ids.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def positions_from_documents(document_ids: Tensor) -> Tensor:
    """(B, T) document ids -> (B, T) position ids that restart at 0 where the document id changes."""
    b, t = document_ids.shape
    index = torch.arange(t, device=document_ids.device).expand(b, t)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - start_index


def attention_bias(attention_mask: Tensor | None, t_q: int, causal: bool, dtype: torch.dtype,
                   device=None) -> Tensor | None:
    """The one bias a layer needs: padding and/or causal; None when nothing is masked."""
    bias = None
    if attention_mask is not None and (is_traceable() or not bool(attention_mask.all())):
        bias = padding_bias(attention_mask, dtype)
    if causal:
        t_k = attention_mask.shape[-1] if attention_mask is not None else t_q
        c = causal_bias(t_q, t_k, dtype, device if attention_mask is None else attention_mask.device)
        bias = c if bias is None else (bias + c).clamp_min(torch.finfo(dtype).min)
    return bias


@dataclass
class Unpadded:
    """Where the real tokens of a padded (B, T) batch sit (any padding: right, left, holes), and the
    order they are packed in: the sequences grouped by length (shortest first, then by row), each one's
    tokens consecutive and in their order. Nothing but attention looks at the order (linear layers,
    norms and the feed-forward act token by token), and attention runs each group of ``groups`` as one
    (n, L) batch, with no padding and no mask (`plmkit.nn.attention.attend_packed`).

    ``indices`` are positions in the flattened (B*T) batch, in that packed order.
    """

    indices: Tensor  # (N,)
    batch: int
    seqlen: int
    bias: Tensor  # (B, 1, 1, T) padding bias for attention on re-padded tensors
    groups: list[tuple[int, int]]  # (sequences, length) of each run of equal lengths, in packed order

    @classmethod
    def from_mask(cls, attention_mask: Tensor, dtype: torch.dtype) -> "Unpadded":
        b, t = attention_mask.shape
        lengths = attention_mask.bool().sum(1)  # (B,)
        order = torch.sort(lengths, stable=True).indices  # (B,) rows, shortest first
        by_length = attention_mask[order].reshape(-1).nonzero().squeeze(1)  # in the sorted (B, T)
        indices = order[by_length // t] * t + by_length % t
        counts = torch.unique_consecutive(lengths[order], return_counts=True)
        groups = [(n, length) for length, n in zip(*(c.tolist() for c in counts)) if length]
        return cls(indices, b, t, padding_bias(attention_mask, dtype), groups)

    def unpad(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...)"""
        return x.reshape(self.batch * self.seqlen, *x.shape[2:])[self.indices]

    def repad(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...) with zeros at padding."""
        out = x.new_zeros(self.batch * self.seqlen, *x.shape[1:])
        out = out.index_copy(0, self.indices, x)
        return out.view(self.batch, self.seqlen, *x.shape[1:])


@dataclass
class PaddedSource:
    """What a decoder block's cross-attention reads of a padded source: the encoder's (B, S, D) states
    and where their real tokens sit. Each block projects the keys and values of those tokens only, in
    its own forward pass (where a block sharded by FSDP has its whole weights)."""

    states: Tensor
    layout: Unpadded


def self_attention_masks(mask: Tensor | None, t: int, past: int, causal: bool, unpad: bool, dtype: torch.dtype,
                         device=None) -> tuple[Unpadded | None, Tensor | None, bool]:
    """(layout, bias, causal) for the self-attention of T new positions after ``past`` cached ones.

    mask: (B, past + T) 1 = token, 0 = padding (or None). Padding is removed (``layout``) when allowed:
    no cache, and every position that matters is a token (``unpad``), and not on the traceable path
    (plmkit.nn.tracing), which keeps the whole mask. A 4-D mask (B or 1, 1 or H, T, past + T) is Hugging
    Face's prepared one, used as it is (no causal mask added): float = additive, bool = True to attend.
    """
    if mask is not None and mask.dim() == 4:
        if mask.dtype is torch.bool:
            return None, torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min), False
        return None, mask.to(dtype), False
    if mask is not None and not is_traceable() and bool(mask.all()):
        mask = None
    if mask is None:
        if not causal or past == 0:
            return None, None, causal  # SDPA's own causal mask (fast path)
        return None, (causal_bias(t, past + t, dtype, device) if t > 1 else None), False
    if mask.shape[1] != past + t:
        raise PlmkitError(f"the attention mask has {mask.shape[1]} positions but the model sees {past} cached "
                          f"+ {t} new ones: pass the mask of the whole sequence")
    if past == 0 and unpad and not is_traceable():
        return Unpadded.from_mask(mask, dtype), None, causal
    return None, attention_bias(mask, t, causal, dtype), False
