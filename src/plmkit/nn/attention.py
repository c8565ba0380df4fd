"""Multi-head attention (Vaswani et al., 2017): softmax(Q Kᵀ / √d_head) V, per head.

One module serves self- and cross-attention, encoders (padding masks) and decoders (causal masks,
grouped-query attention). The fast path calls `scaled_dot_product_attention`; the explicit path
computes the same thing by hand and also returns the attention probabilities for inspection.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.decoding import decode_linear, weight_key
from plmkit.nn.masks import PaddedSource, Unpadded, causal_bias
from plmkit.nn.quantized import QuantizedLinear
from plmkit.nn.tracing import is_traceable


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
           dropout: float = 0.0, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """q: (B, H, T_q, d), k/v: (B, H_kv, T_k, d) -> (B, H, T_q, d) and, if asked, probs (B, H, T_q, T_k).

    ``bias`` is an additive mask (see plmkit.nn.masks); ``causal`` adds the causal mask
    and must only be used when ``bias`` does not already contain it. The causal mask is aligned
    bottom-right: with T_k > T_q (a cached prefix) query i sees keys up to i + T_k - T_q.
    """
    gqa = k.shape[1] != q.shape[1]  # grouped-query attention: each k/v head serves a group of q heads
    if not need_weights:
        bias, causal = _fast_path_masks(bias, causal, q, k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=causal,
                                             enable_gqa=gqa)  # no copies of k/v (or of a KV cache)
        return out, None
    if gqa:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores + causal_bias(q.shape[2], k.shape[2], q.dtype, q.device)
    probs = scores.softmax(dim=-1)
    out = F.dropout(probs, dropout) @ v if dropout else probs @ v
    return out, probs


def _fast_path_masks(bias: Tensor | None, causal: bool, q: Tensor, k: Tensor) -> tuple[Tensor | None, bool]:
    """(bias, is_causal) for SDPA. Its ``is_causal`` aligns the mask top-left, right only when T_q == T_k;
    otherwise (a cached prefix) the causal mask becomes a bottom-right-aligned bias, added to ``bias``."""
    t_q, t_k = q.shape[2], k.shape[2]
    if not causal or (bias is None and t_q == t_k):
        return bias, causal  # SDPA's own causal mask (fast path)
    if t_q == 1 and not is_traceable():  # (no branch on a size when traced)
        return bias, False  # the one query is the last position: it sees every key
    causal_mask = causal_bias(t_q, t_k, q.dtype, q.device)  # (1, 1, T_q, T_k)
    return causal_mask if bias is None else bias + causal_mask, False


def attend_packed(q: Tensor, k: Tensor, v: Tensor, groups: list[tuple[int, int]], d_head: int,
                  causal: bool = False, dropout: float = 0.0) -> Tensor:
    """Self-attention of sequences packed without padding (`plmkit.nn.masks.Unpadded`): q (N, H d) and k/v
    (N, H_kv d) -> (N, H d). Each group of ``groups`` (n sequences of L tokens, consecutive) is one
    (n, H, L, d) attention with no mask: the result of padded attention under a padding mask, for the
    cost of the real tokens alone. Measured on one core (12 heads of 32, one layer; real sentences of
    4-70 tokens):

        sequences x longest      8 x 37   20 x 37   32 x 46   128 x 62   32 x 60-128   32 of 30-31
        re-padded, masked SDPA   0.99     4.74      7.79      77.9       31.3          4.30 ms
        groups of one length     0.49     1.20      2.24      10.5       14.0          3.69 ms
    """
    out, start = [], 0
    for n, length in groups:
        end = start + n * length
        qg, kg, vg = (t[start:end].view(n, length, -1, d_head).transpose(1, 2) for t in (q, k, v))  # (n, H, L, d)
        y = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout, is_causal=causal,
                                           enable_gqa=kg.shape[1] != qg.shape[1])
        out.append(y.transpose(1, 2).reshape(n * length, -1))
        start = end
    return torch.cat(out) if out else q[:0]


class MultiHeadAttention(nn.Module):
    """Separate q/k/v/out projections; heads really split: d_model = n_heads * d_head."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, bias: bool = True,
                 dropout: float = 0.0, d_head: int | None = None):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads or n_heads
        self.d_head = d_head or d_model // n_heads
        if d_head is None and d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        self.dropout = dropout
        self.q = nn.Linear(d_model, self.n_heads * self.d_head, bias=bias)
        self.k = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=bias)
        self.v = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=bias)
        self.out = nn.Linear(self.n_heads * self.d_head, d_model, bias=bias)
        self.fused_qkv: tuple[Tensor, Tensor | None] | None = None  # see fuse_qkv
        self._fused_from: tuple[tuple, bool] | None = None  # (the projections' weight keys, pack) of the copy
        self._int8_joined: tuple[tuple, QuantizedLinear] | None = None  # see _int8_qkv

    def _split(self, x: Tensor, n: int) -> Tensor:
        """(B, T, n*d) -> (B, n, T, d)"""
        return x.view(x.shape[0], x.shape[1], n, self.d_head).transpose(1, 2)

    def fuse_qkv(self, on: bool, pack: bool = False) -> None:
        """Inference: concatenate the q/k/v weights once (a copy, dropped by ``fuse_qkv(False)``) so that
        each call runs one matmul; ``pack``: the copy keeps a packed copy of its own (plmkit.nn.decoding.pack_weight).
        `decoding_layout` fuses for one ``generate`` call, eval mode for as long as it lasts; the copy is
        made again when a projection changed since (new weights, an in-place update, a LoRA layer).
        Only for plain ``nn.Linear`` projections."""
        self.fused_qkv, self._fused_from = None, None
        if on and self._plain_projections():
            with torch.no_grad():
                b = None if self.q.bias is None else torch.cat([self.q.bias, self.k.bias, self.v.bias])
                self.fused_qkv = torch.cat([self.q.weight, self.k.weight, self.v.weight]), b
            self._fused_from = self._projection_keys(), pack

    def _plain_projections(self) -> bool:
        return type(self.q) is type(self.k) is type(self.v) is nn.Linear

    def _projection_keys(self) -> tuple:
        return tuple(weight_key(p.weight) for p in (self.q, self.k, self.v))

    def _fused(self) -> tuple[Tensor, Tensor | None] | None:
        """The fused copy, made again first if the projections changed since it was made (None on the
        traceable path: a graph computes q, k and v from the module's own weights)."""
        if is_traceable():
            return None
        if self.fused_qkv is not None and (not self._plain_projections()
                                           or self._fused_from[0] != self._projection_keys()):
            self.fuse_qkv(True, self._fused_from[1])
        return self.fused_qkv

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One fused matmul for q, k and v (the module keeps them as separate weights).

        Without autograd (inference, decoding) the weights are not concatenated on every call, which
        would dominate a one-token step: the copy made by ``fuse_qkv`` if any, or int8 layers' joined copy
        (`_int8_qkv`), else three matmuls.
        """
        fused = self._fused()
        if fused is None and not (torch.is_grad_enabled() and self.q.weight.requires_grad):
            int8 = self._int8_qkv()
            if int8 is None:
                return self.q(x), self.k(x), self.v(x)
            return int8(x).split(self._qkv_sizes(), dim=-1)
        return self._joined_qkv(x, fused).split(self._qkv_sizes(), dim=-1)

    def _int8_qkv(self) -> QuantizedLinear | None:
        """q, k and v as one int8 layer (their weights' rows stacked, a copy made again when they change)
        when all three are dynamic-int8 layers (`plmkit quantize`), else None. Bit-identical to the three:
        one input, quantized once by its own range, and each output column computed from its own weight
        row; one matmul instead of three: a quantized MiniLM's forward on one thread ~10% faster on batches
        of 32 reviews, ~3% on one."""
        projections = (self.q, self.k, self.v)
        if not all(type(p) is QuantizedLinear and p.method == "dynamic-int8" for p in projections):
            return None
        key = tuple(weight_key(t) for p in projections for t in (p.weight, p.weight_scale, p.bias) if t is not None)
        if self._int8_joined is None or self._int8_joined[0] != key:
            self._int8_joined = key, QuantizedLinear.joined(projections)
        return self._int8_joined[1]

    def _qkv_sizes(self) -> list[int]:
        kv = self.n_kv_heads * self.d_head
        return [self.n_heads * self.d_head, kv, kv]

    def _joined_qkv(self, x: Tensor, fused: tuple[Tensor, Tensor | None] | None) -> Tensor:
        """q, k and v side by side, (..., (H + 2 H_kv) d): `project_qkv`'s one matmul (on ``fused``, what
        `_fused` gave, without autograd), else three joined."""
        if not (torch.is_grad_enabled() and self.q.weight.requires_grad):
            if fused is None:
                int8 = self._int8_qkv()
                return int8(x) if int8 is not None else torch.cat([self.q(x), self.k(x), self.v(x)], -1)
            return decode_linear(x, *fused, pack=self._fused_from[1])
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        b = None if self.q.bias is None else torch.cat([self.q.bias, self.k.bias, self.v.bias])
        return F.linear(x, w, b)

    def project_kv(self, context: Tensor, layout: Unpadded | None = None) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of ``context`` (B, S, D): (B, H_kv, S, d) each. Generation
        computes them once per source and passes them as ``context`` at every step. ``layout``: where
        the context's real tokens sit; only they are projected (padding keys are hidden anyway)."""
        x = context if layout is None else layout.unpad(context)
        k, v = self.k(x), self.v(x)
        if layout is not None:
            k, v = layout.repad(k), layout.repad(v)
        return self._split(k, self.n_kv_heads), self._split(v, self.n_kv_heads)

    def forward(self, x: Tensor, bias: Tensor | None = None, *, causal: bool = False,
                layout: Unpadded | None = None, context: Tensor | PaddedSource | tuple[Tensor, Tensor] | None = None,
                rotary=None, cache=None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D), or (N, D) real tokens when ``layout`` says where they sit.

        context: cross-attention: the (B_s, S, D) states to attend to (default: x itself), a padded
            source's (`PaddedSource`: only its real tokens projected), or their keys and values from
            `project_kv`. x may hold g rows per context row (B = B_s * g: the
            beams of one source, consecutive): the g rows become one query block of g * T queries,
            so every beam reads its source's keys and values where they are, without copies.
        rotary: callable (q, k) -> (q, k) applying position rotations to (B, H, T, d) tensors; with
            ``layout``, those of the packed tokens, as one row of N (probabilities are then refused).
        cache: object with ``update(k, v) -> (k_all, v_all)`` holding past keys/values.
        Returns (B, T, D) or (N, D), and probs (B, H, T_q, T_k) when need_weights.
        """
        if layout is not None and context is None and cache is None:
            if need_weights and rotary is not None:
                raise ValueError("attention probabilities of packed tokens with rotary positions: pass the padded "
                                 "batch (no layout) to see them")
            if not need_weights:
                q, k, v = self.project_qkv(x)  # (N, ...): real tokens
                if rotary is not None:  # (1, H, N, d): the packed tokens as one row
                    n = x.shape[0]
                    q, k = rotary(*(t.view(1, n, -1, self.d_head).transpose(1, 2) for t in (q, k)))
                    q, k = (t.transpose(1, 2).reshape(n, -1) for t in (q, k))
                y = attend_packed(q, k, v, layout.groups, self.d_head, causal, self.dropout if self.training else 0.0)
                return self.out(y), None
        if context is None:
            if layout is None:
                q, k, v = self.project_qkv(x)
            else:  # re-padded together, straight from the one matmul's output
                q, k, v = layout.repad(self._joined_qkv(x, self._fused())).split(self._qkv_sizes(), dim=-1)
            k, v = self._split(k, self.n_kv_heads), self._split(v, self.n_kv_heads)
        else:
            q = self.q(x) if layout is None else layout.repad(self.q(x))
            k, v = (context if isinstance(context, tuple) else self.project_kv(context.states, context.layout)
                    if isinstance(context, PaddedSource) else self.project_kv(context))
        rows, t = q.shape[0], q.shape[1]
        q = self._split(q.reshape(k.shape[0], -1, q.shape[-1]), self.n_heads)  # (B_s, H, g*T, d)
        if rotary is not None:
            q, k = rotary(q, k)
        if cache is not None:
            k, v = cache.update(k, v)
        if layout is not None and bias is None and context is None:  # (the layout is the queries': in
            bias = layout.bias  # cross-attention, the keys are the context's, whose padding `bias` hides)
        y, probs = attend(q, k, v, bias, causal, self.dropout if self.training else 0.0, need_weights)
        y = y.transpose(1, 2).reshape(rows, t, self.n_heads * self.d_head)  # (B, T, H*d)
        if probs is not None and probs.shape[0] != rows:  # (B_s, H, g*T, S) -> (B, H, T, S): each row's own
            probs = probs.view(probs.shape[0], self.n_heads, -1, t, probs.shape[-1]).transpose(1, 2).flatten(0, 1)
        if layout is not None:
            y = layout.unpad(y)
        return self.out(y), probs
