"""A key/value cache for autoregressive decoding, allocated once.

Each layer owns two (B, H_kv, max_len, d) buffers. ``update(k, v)`` writes the new keys and values
in place after the ones already stored and returns views of everything written so far, so a
decoding step costs no reallocation and no concatenation. Batched prompts with left padding need
nothing special: padding positions are stored like any other and hidden by the attention mask,
which the caller extends by one column per step.

`PastKeyValues` is the other kind, for traced graphs (ONNX export): it concatenates, so its shapes
follow the inputs' and its past and present are tensors a graph takes and returns.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from plmkit.nn.masks import PaddedSource, Unpadded, padding_bias


class LayerKVCache:
    """One layer's keys and values: (B, H_kv, max_len, d) each, filled up to ``length``."""

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, d_head: int, dtype: torch.dtype, device=None):
        shape = (batch, n_kv_heads, max_len, d_head)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @classmethod
    def over(cls, k: Tensor, v: Tensor) -> "LayerKVCache":
        """An empty cache writing into existing (B, H_kv, max_len, d) buffers (views of a larger one)."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length = k, v, 0
        return cache

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k/v (B, H_kv, T, d); return all keys and values so far, (B, H_kv, length, d) views."""
        self._check_shapes(k, v)
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {end} positions but the cache holds {self.max_len}; "
                               "allocate it with a larger max_len")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def _check_shapes(self, k: Tensor, v: Tensor) -> None:
        """New keys and values must match the buffers but for T: a batch-1 step written into a batch-4 cache
        would broadcast into every row."""
        b, heads, _, d = self.k.shape
        if k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (b, heads, d) or v.shape != k.shape:
            raise RuntimeError(f"KV cache update: keys {tuple(k.shape)} and values {tuple(v.shape)} do not fit a "
                               f"cache of {b} rows x {heads} heads x {d} channels: expected ({b}, {heads}, T, {d}) "
                               "each (a cache made for another batch size or model?)")

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (B,) of the batch, in that order (beam search)."""
        self.move_rows(*moved_rows(index))

    def move_rows(self, rows: Tensor, source: Tensor) -> None:
        """Rows ``rows`` take the history of rows ``source`` (both (M,)); the others keep theirs."""
        n = self.length
        if n == 0 or rows.numel() == 0:
            return
        with torch.no_grad():  # (beam search is not differentiated)
            for buf in (self.k, self.v):  # the source rows are read whole before any row is written
                buf[:, :, :n].index_copy_(0, rows, buf[:, :, :n].index_select(0, source))


def moved_rows(index: Tensor) -> tuple[Tensor, Tensor]:
    """The rows a reorder by ``index`` changes, and where their history comes from. In beam search most
    beams continue themselves from one step to the next: only the others are copied."""
    rows = (index != torch.arange(len(index), device=index.device)).nonzero().squeeze(1)
    return rows, index[rows]


def heads_per_layer(n_layers: int, n_kv_heads: int | Sequence[int]) -> list[int]:
    """The key/value heads of each layer: one count for all, or one per layer (a pruned model's)."""
    heads = [n_kv_heads] * n_layers if isinstance(n_kv_heads, int) else list(n_kv_heads)
    if len(heads) != n_layers:
        raise ValueError(f"{len(heads)} key/value head counts for {n_layers} layers")
    return heads


class KVCache:
    """The cache of a whole decoder: ``cache[i]`` is layer i's ``LayerKVCache``.

        cache = KVCache(n_layers, batch, n_kv_heads, max_len, d_head, dtype, device)
        out = model(prompt_ids, past_key_values=cache)      # fills positions 0 .. T-1
        out = model(next_ids, past_key_values=cache)        # appends position T

    ``n_kv_heads``: one count, or one per layer (a pruned model's layers differ).
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int | Sequence[int], max_len: int, d_head: int,
                 dtype: torch.dtype = torch.float32, device=None):
        self.layers = [LayerKVCache(batch, heads, max_len, d_head, dtype, device)
                       for heads in heads_per_layer(n_layers, n_kv_heads)]

    def __getitem__(self, i: int) -> LayerKVCache:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        """Positions stored so far (the offset of the next token)."""
        return self.layers[0].length

    @property
    def max_len(self) -> int:
        return self.layers[0].max_len

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (B,) of the batch, in that order, in every layer (beam search)."""
        rows, source = moved_rows(index)
        for layer in self.layers:
            layer.move_rows(rows, source)

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0


class SlotKVCache(KVCache):
    """A decoder's cache for continuous batching: ``slots`` rows, each holding one sequence of its own
    length, which join and leave between decoding steps (a server's requests).

    The active sequences are rows ``0 .. active - 1``, left-aligned (position p of a row at column p).
    A sequence joins with `join`: its prompt runs alone through ``row_cache(active)``, a `KVCache` over
    that row (views: it writes here), then ``join(prompt_length)`` counts it. A step feeds one token per
    active row: ``model(tokens (n, 1), attention_mask=cache.step_mask(), position_ids=cache.positions(),
    past_key_values=cache)`` writes row b's keys and values at its own column ``lengths[b]`` (the mask
    hides the columns past each row's length), then `advance`. `leave(row)` moves the last active row
    into the freed one, so the active rows stay contiguous.

    Memory: the buffers hold ``step`` columns at first and grow when a row needs more (to twice their
    width or the next multiple of ``step``, at most ``max_len``; the columns held are copied once), and
    go back to ``step`` columns when the last row leaves: a server's cache is as wide as its longest
    running sequence, not its model's context (GPT-2 small, 8 rows: 600 MB at 1,024 columns, 38 MB at
    64). Buffers start zeroed: a row shorter than the widest one reads stale (finite) columns, masked out.
    """

    def __init__(self, n_layers: int, slots: int, n_kv_heads: int | Sequence[int], max_len: int, d_head: int,
                 dtype: torch.dtype = torch.float32, device=None, step: int = 64):
        self.step, self._max_len = step, max_len
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)  # positions stored per row
        self.active = 0
        shapes = [(slots, heads, min(step, max_len), d_head) for heads in heads_per_layer(n_layers, n_kv_heads)]
        self.layers = [SlotLayerCache(self, torch.zeros(shape, dtype=dtype, device=device),
                                      torch.zeros(shape, dtype=dtype, device=device)) for shape in shapes]

    @property
    def slots(self) -> int:
        return self.lengths.shape[0]

    @property
    def length(self) -> int:
        """Columns before a step's new token: the longest active row."""
        return int(self.lengths[:self.active].max()) if self.active else 0

    @property
    def max_len(self) -> int:
        """The most positions a row may hold."""
        return self._max_len

    @property
    def width(self) -> int:
        """Columns the buffers hold now."""
        return self.layers[0].k.shape[2]

    def reserve(self, columns: int) -> None:
        """Make the buffers at least ``columns`` wide (see the class docstring)."""
        if columns > self.max_len:
            raise RuntimeError(f"KV cache overflow: {columns} positions but the cache holds {self.max_len}")
        if columns > self.width:
            self._resize(min(self.max_len, max(2 * self.width, -(-columns // self.step) * self.step)))

    def _resize(self, width: int) -> None:
        for layer in self.layers:
            layer.k, layer.v = widened(layer.k, width), widened(layer.v, width)

    def row_cache(self, row: int, length: int) -> KVCache:
        """An empty `KVCache` writing into row ``row``, at least ``length`` columns wide (the prompt of a
        joining sequence)."""
        self.reserve(length)
        cache = KVCache.__new__(KVCache)
        cache.layers = [LayerKVCache.over(layer.k[row:row + 1], layer.v[row:row + 1]) for layer in self.layers]
        return cache

    def join(self, length: int) -> int:
        """Count row ``active``, whose first ``length`` positions `row_cache` filled; returns the row."""
        if self.active == self.slots:
            raise RuntimeError(f"all {self.slots} rows of the cache are in use")
        row = self.active
        self.lengths[row] = length
        self.active += 1
        return row

    def leave(self, row: int) -> int:
        """Free ``row``: the last active row moves into it. Returns the row that moved (== ``row`` when
        it was the last)."""
        if not 0 <= row < self.active:
            raise RuntimeError(f"leave({row}): row {row} is not active; the active rows are 0 .. {self.active - 1} "
                               f"({self.active} of {self.slots} slots)")
        last = self.active - 1
        if row != last:
            n = int(self.lengths[last])
            for layer in self.layers:
                layer.k[row, :, :n] = layer.k[last, :, :n]
                layer.v[row, :, :n] = layer.v[last, :, :n]
            self.lengths[row] = self.lengths[last]
        self.active = last
        if not last and self.width > self.step:  # empty: back to the first width
            self._resize(min(self.step, self.max_len))
        return last

    def step_mask(self) -> Tensor:
        """(n, length + 1) attention mask of a step: each row's stored positions and its new token."""
        columns = torch.arange(self.length + 1, device=self.lengths.device)
        return (columns[None] <= self.lengths[:self.active, None]).long()

    def appended_mask(self) -> Tensor:
        """(n, length + 1) the mask of a step whose new keys come after the longest row's columns instead
        of at each row's own (a graph that concatenates its past and present, plmkit.models.onnx): each
        row's stored positions, the columns past them hidden, and the new token last."""
        columns = torch.arange(self.length + 1, device=self.lengths.device)
        return ((columns[None] < self.lengths[:self.active, None]) | (columns[None] == self.length)).long()

    def positions(self) -> Tensor:
        """(n, 1) the position of each active row's new token."""
        return self.lengths[:self.active, None]

    def advance(self) -> None:
        """After a step: every active row holds one more position."""
        self.lengths[:self.active] += 1

    def reset(self) -> None:
        self.lengths.zero_()
        self.active = 0
        if self.width > self.step:
            self._resize(min(self.step, self.max_len))


def widened(buffer: Tensor, width: int) -> Tensor:
    """A zeroed (slots, H, ``width``, d) copy of ``buffer`` (slots, H, W, d) holding its first columns."""
    out = buffer.new_zeros(*buffer.shape[:2], width, buffer.shape[3])
    kept = min(width, buffer.shape[2])
    out[:, :, :kept] = buffer[:, :, :kept]
    return out


class SlotLayerCache:
    """One layer of a `SlotKVCache`: a step's keys and values (n, H_kv, 1, d) go to each row's own column."""

    def __init__(self, owner: SlotKVCache, k: Tensor, v: Tensor):
        self.owner, self.k, self.v = owner, k, v

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        owner = self.owner
        n, width = owner.active, owner.length + 1
        if k.shape[0] != n or k.shape[2] != 1:
            raise RuntimeError(f"a continuous-batching step feeds one token to each of the {n} active rows; got keys "
                               f"of shape {tuple(k.shape)}")
        owner.reserve(width)  # (every layer's buffers, self's included)
        rows, columns = torch.arange(n, device=k.device), owner.lengths[:n]
        self.k[rows, :, columns] = k[:, :, 0]
        self.v[rows, :, columns] = v[:, :, 0]
        return self.k[:n, :, :width], self.v[:n, :, :width]


class Seq2SeqSlotCache(SlotKVCache):
    """An encoder-decoder's decoder cache for continuous batching: the `SlotKVCache` of the decoder's
    self-attention (rows of their own target lengths), plus per layer each slot's cross-attention keys
    and values, (slots, H_kv, S_max, d), and each slot's source length: rows that translate different
    sources join and leave between steps.

    A sequence joins with `join_source`: its source's keys and values are copied into the first free
    row, which holds no target position yet; its decoder start token is the next step's token for that
    row, at position 0, in the same forward as every other row's. A step passes `step_mask` and
    `positions` as a decoder's does, and its cross-attention reads `cross`, the active rows' keys and
    values up to the longest active source, and `cross_bias`, which hides each row's columns past its
    own source (what `cross_attention_inputs` reads of a `Seq2SeqCache`). `leave` moves the last
    active row's source with its target.

    Memory: S_max starts at 0 (the first source makes the buffers, of its dtype and heads) and grows, to
    the next multiple of ``source_step`` columns, when a longer source joins (the buffers are copied
    once); when the last row leaves, the buffers go, so S_max is that of the longest source since the
    cache was last empty (a server refuses sources beyond the encoder's positions). The self-attention's
    buffers grow and shrink as `SlotKVCache`'s. A step reads only the longest active source's columns.
    """

    def __init__(self, n_layers: int, slots: int, n_kv_heads: int | Sequence[int], max_len: int, d_head: int,
                 dtype: torch.dtype = torch.float32, device=None, source_step: int = 64):
        super().__init__(n_layers, slots, n_kv_heads, max_len, d_head, dtype, device)
        self.source_step = source_step
        self.cross_k: list[Tensor] = []  # per layer (slots, H_kv, S_max, d), made by the first source
        self.cross_v: list[Tensor] = []
        self.source_lengths = torch.zeros(slots, dtype=torch.long, device=device)

    @property
    def source_width(self) -> int:
        """Columns a step's cross-attention reads: the longest active source."""
        return int(self.source_lengths[:self.active].max()) if self.active else 0

    def join_source(self, cross: list[tuple[Tensor, Tensor]], length: int) -> int:
        """Count row ``active`` for a sequence of a source of ``length`` tokens, whose cross-attention keys
        and values ``cross`` holds (per layer a (H_kv, S, d) pair, S >= length: a padded batch's row);
        returns the row."""
        if not self.cross_k or length > self.cross_k[0].shape[2]:
            self._widen(-(-length // self.source_step) * self.source_step, cross)
        row = self.join(0)
        for layer, (k, v) in enumerate(cross):
            self.cross_k[layer][row, :, :length] = k[:, :length]
            self.cross_v[layer][row, :, :length] = v[:, :length]
        self.source_lengths[row] = length
        return row

    def _widen(self, width: int, like: list[tuple[Tensor, Tensor]]) -> None:
        """Buffers of ``width`` columns, keeping what the old ones hold (the first ones shaped as the pairs of
        ``like``)."""
        for buffers, pairs in ((self.cross_k, [k for k, _ in like]), (self.cross_v, [v for _, v in like])):
            buffers[:] = ([widened(b, width) for b in buffers] if buffers
                          else [t.new_zeros(self.slots, t.shape[0], width, t.shape[2]) for t in pairs])

    def leave(self, row: int) -> int:
        last = super().leave(row)
        if row != last:
            n = int(self.source_lengths[last])
            for buffer in (*self.cross_k, *self.cross_v):
                buffer[row, :, :n] = buffer[last, :, :n]
            self.source_lengths[row] = n
        if not self.active:  # empty: the next source makes the buffers again, as wide as it needs
            self.cross_k.clear()
            self.cross_v.clear()
        return last

    @property
    def cross(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer the active rows' cross-attention keys and values, (n, H_kv, source_width, d) views."""
        n, width = self.active, self.source_width
        return [(k[:n, :, :width], v[:n, :, :width]) for k, v in zip(self.cross_k, self.cross_v)]

    @property
    def cross_bias(self) -> Tensor | None:
        """(n, 1, 1, source_width) hiding each row's columns past its source; None when every active source
        is that long."""
        lengths, width = self.source_lengths[:self.active], self.source_width
        if bool((lengths == width).all()):
            return None
        columns = torch.arange(width, device=lengths.device)
        return padding_bias((columns[None] < lengths[:, None]).long(), self.cross_k[0].dtype)  # (n, 1, 1, S)

    def reset(self) -> None:
        super().reset()
        self.source_lengths.zero_()
        self.cross_k.clear()
        self.cross_v.clear()


class PastKeyValues:
    """A cache that grows by concatenation, over given past keys and values: what a traced graph
    takes (one (k, v) pair of (B, H_kv, P, d) per layer; P may be 0) and returns (`present`, the
    (B, H_kv, P + T, d) pairs after the step, the next step's past). Its shapes follow the inputs'
    (no buffer of a fixed max_len, unlike `KVCache`); without a past, each layer starts empty.

        cache = PastKeyValues(past)
        out = model(input_ids, attention_mask, past_key_values=cache)   # mask: (B, P + T)
        present = cache.present()
    """

    def __init__(self, past: list[tuple[Tensor, Tensor]] = ()):
        self.layers = [_GrowingLayer(k, v) for k, v in past]

    def __getitem__(self, i: int) -> "_GrowingLayer":
        while len(self.layers) <= i:
            self.layers.append(_GrowingLayer())
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        """Positions stored so far (the offset of the next token)."""
        return self.layers[0].k.shape[2] if self.layers and self.layers[0].k is not None else 0

    def present(self) -> list[tuple[Tensor, Tensor]]:
        return [(layer.k, layer.v) for layer in self.layers]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions stored by layer ``layer_idx`` (transformers' DynamicCache method, for hand-written loops)."""
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        return layer.k.shape[2] if layer is not None and layer.k is not None else 0

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep the rows ``beam_idx`` (N,), in that order (a hand-written beam search's, as transformers')."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[beam_idx], layer.v[beam_idx]


class Seq2SeqPastKeyValues(PastKeyValues):
    """`PastKeyValues` of an encoder-decoder's decoder in a traced graph: the self-attention's past, plus
    each layer's cross-attention keys and values, one (B, H_kv, S, d) pair per row (not per source, as
    `Seq2SeqCache` holds them), and the (B, 1, 1, S) bias hiding the source's padding."""

    def __init__(self, past: list[tuple[Tensor, Tensor]], cross: list[tuple[Tensor, Tensor]], cross_bias: Tensor):
        super().__init__(past)
        self.cross, self.cross_bias = cross, cross_bias

    def reorder_cache(self, beam_idx: Tensor) -> None:
        super().reorder_cache(beam_idx)
        self.cross = [(k[beam_idx], v[beam_idx]) for k, v in self.cross]
        if self.cross_bias is not None:
            self.cross_bias = self.cross_bias[beam_idx]


class _GrowingLayer:
    def __init__(self, k: Tensor | None = None, v: Tensor | None = None):
        self.k, self.v = k, v

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k/v (B, H_kv, T, d); return all keys and values so far."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Seq2SeqCache(KVCache):
    """The cache of an encoder-decoder's decoder: the `KVCache` of the self-attention of ``rows`` decoder
    sequences, plus per layer the cross-attention keys and values of the ``sources`` (rows = sources * g:
    the g beams or samples of a source are consecutive rows).

    The cross keys and values are computed once, from the encoder output, and never copied: every row
    of a source reads them in place (`MultiHeadAttention` folds a source's rows into one query block),
    and beam search reorders only the self-attention rows (`reorder`), which do differ.

        cross = [layer.cross_attn.project_kv(encoder_states) for layer in decoder_layers]  # (B_s, H, S, d)
        cache = Seq2SeqCache(n_layers, rows, n_kv_heads, max_len, d_head, cross, padding_bias(source_mask, dtype))
    """

    def __init__(self, n_layers: int, rows: int, n_kv_heads: int, max_len: int, d_head: int,
                 cross: list[tuple[Tensor, Tensor]], cross_bias: Tensor | None,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__(n_layers, rows, n_kv_heads, max_len, d_head, dtype, device)
        self.cross, self.cross_bias = cross, cross_bias  # cross_bias: (B_s, 1, 1, S) hides source padding

    def keep(self, rows: Tensor) -> None:
        """Keep only rows ``rows`` (M,), in that order, where every row has its own source (a server's
        batch: finished sequences leave, and the next steps compute the others only)."""
        if self.cross[0][0].shape[0] != self.layers[0].k.shape[0]:
            raise RuntimeError("keep() needs one source per row; beams and samples of a source share theirs")
        for layer in self.layers:
            layer.k, layer.v = layer.k[rows], layer.v[rows]
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        if self.cross_bias is not None:
            self.cross_bias = self.cross_bias[rows]


def growing_cache(layers, context: Tensor | None = None, context_mask: Tensor | None = None) -> PastKeyValues:
    """An empty cache that grows with each forward, what a forward with ``use_cache=True`` returns (Hugging
    Face's DynamicCache): for a decoder reading ``context`` (B, S, D), a `Seq2SeqPastKeyValues` holding each
    layer's cross-attention keys and values of it, computed once, and the bias hiding its padding
    (``context_mask`` (B, S))."""
    if context is None:
        return PastKeyValues()
    cross = [layer.cross_attn.project_kv(context) for layer in layers]  # (B, H_kv, S, d) each
    padded = context_mask is not None and not bool(context_mask.all())
    return Seq2SeqPastKeyValues([], cross, padding_bias(context_mask, context.dtype) if padded else None)


def cross_attention_inputs(cache: Seq2SeqCache | None, context: Tensor | None, context_mask: Tensor | None,
                           dtype: torch.dtype, real_tokens: bool = False
                           ) -> tuple[Tensor | PaddedSource | list | None, Tensor | None]:
    """What a decoder's cross-attention reads, and the bias hiding the source's padding: the keys and
    values a cache holds (generation), or the encoder's (B, S, D) output; with `real_tokens`, a padded
    source's output as a `PaddedSource`, whose keys and values each block projects from its real
    tokens only."""
    if cache is not None:
        return cache.cross, cache.cross_bias
    if context_mask is None or bool(context_mask.all()):
        return context, None
    if real_tokens:
        source = Unpadded.from_mask(context_mask, dtype)
        return PaddedSource(context, source), source.bias
    return context, padding_bias(context_mask, dtype)
