"""The Transformer block: (self-attention, optional cross-attention, feed-forward), each wrapped in a
residual connection and a norm: after the residual (post-LN: BERT, the original Transformer) or
before the sublayer (pre-LN: GPT-2, Llama, stable fast training).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.masks import Unpadded
from plmkit.nn.mlp import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attn: MultiHeadAttention, mlp: FeedForward, norm: callable, *, norm_first: bool = False,
                 dropout: float = 0.0, cross_attn: MultiHeadAttention | None = None):
        """``norm`` builds one normalisation layer (e.g. ``lambda: nn.LayerNorm(d, eps)``)."""
        super().__init__()
        self.norm_first = norm_first
        self.attn, self.attn_norm = attn, norm()
        self.cross_attn = cross_attn
        self.cross_norm = norm() if cross_attn is not None else None
        self.mlp, self.mlp_norm = mlp, norm()
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer) -> tuple[Tensor, Tensor | None]:
        if self.norm_first:
            y, probs = sublayer(norm(x))
            return x + self.dropout(y), probs
        y, probs = sublayer(x)
        return norm(x + self.dropout(y)), probs

    def forward(self, x: Tensor, bias: Tensor | None = None, *, causal: bool = False,
                layout: Unpadded | None = None, rotary=None, cache=None,
                context=None, context_bias: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x: (B, T, D) or (N, D) with ``layout``. Returns x and, with ``need_weights``, the self-attention
        probabilities (B, H, T, T) and the cross-attention ones (B, H, T, S; None without cross-attention)."""
        x, probs = self._residual(x, self.attn_norm, lambda h: self.attn(
            h, bias, causal=causal, layout=layout, rotary=rotary, cache=cache, need_weights=need_weights))
        cross_probs = None
        if self.cross_attn is not None:
            x, cross_probs = self._residual(x, self.cross_norm, lambda h: self.cross_attn(
                h, context_bias, layout=layout, context=context, need_weights=need_weights))
        x, _ = self._residual(x, self.mlp_norm, lambda h: (self.mlp(h), None))
        return x, probs, cross_probs


def run_blocks(layers, x: Tensor, bias: Tensor | None = None, *, causal: bool = False, layout: Unpadded | None = None,
               rotary=None, cache=None, context=None, context_bias: Tensor | None = None, layerdrop: float = 0.0,
               output_hidden_states: bool = False, output_attentions: bool = False):
    """x through every block of ``layers``; returns x, the input of each block (hidden states when
    asked for), and the self- and cross-attention probabilities (when asked for; no cross: an empty list).

    cache: one entry per block (a KVCache). context: what every block's cross-attention reads: one
    (B, S, D) tensor (or `PaddedSource`) for all blocks, or a list with one entry per block (keys and
    values computed once, `Seq2SeqCache.cross`). layerdrop: in training, skip each block with this probability
    (Fan et al., 2019)."""
    hidden, attentions, cross_attentions = [], [], []
    for i, layer in enumerate(layers):
        if output_hidden_states:
            hidden.append(x)
        if layerdrop and layer.training and float(torch.rand(())) < layerdrop:
            continue
        x, probs, cross_probs = layer(x, bias, causal=causal, layout=layout, rotary=rotary,
                                      cache=None if cache is None else cache[i],
                                      context=context[i] if isinstance(context, list) else context,
                                      context_bias=context_bias, need_weights=output_attentions)
        if output_attentions:
            attentions.append(probs)
            if cross_probs is not None:
                cross_attentions.append(cross_probs)
    return x, hidden, attentions, cross_attentions
