"""Input embeddings: tokens, learned or sinusoidal positions, token types (segments)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(n_positions: int, dim: int, sin_first: bool = True) -> Tensor:
    """(n_positions, dim) fixed position codes of "Attention is all you need".

    Halves layout: [sin(p·ω) | cos(p·ω)] (``sin_first``, as Marian stores them) or [cos | sin].
    """
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)  # (half,)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * freq[None]  # (P, half)
    parts = [angles.sin(), angles.cos()] if sin_first else [angles.cos(), angles.sin()]
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, : 2 * half] = torch.cat(parts, dim=1)
    return table.float()


class TextEmbeddings(nn.Module):
    """token + learned position (+ token type) embeddings, then LayerNorm and dropout (BERT style).

    Works on any index shape: (B, T) batches or (N,) unpadded tokens.
    """

    def __init__(self, vocab_size: int, dim: int, max_positions: int, type_vocab_size: int = 0,
                 eps: float = 1e-12, dropout: float = 0.0, pad_token_id: int | None = None):
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, dim)
        self.token_type = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor | None, position_ids: Tensor, token_type_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        """``inputs_embeds`` (..., D): given token embeddings, in place of ``input_ids``' (positions and types
        are added to them, as Hugging Face's BERT)."""
        x = (self.word(input_ids) if inputs_embeds is None else inputs_embeds) + self.position(position_ids)
        if self.token_type is not None:  # (..., D)
            x = x + self.token_type(token_type_ids if token_type_ids is not None else torch.zeros_like(position_ids))
        return self.dropout(self.norm(x))


class ScaledEmbeddings(nn.Module):
    """Token embeddings times ``scale`` plus positions, then an optional LayerNorm, then dropout: the
    inputs of an encoder-decoder's stacks (BART: learned positions read at ``position + offset`` and a
    LayerNorm; Marian: fixed sinusoids [sin | cos] and sqrt(d) scaling).

    ``word`` may be shared with the other stack (and the LM head). Sinusoids are a buffer rebuilt
    from the sizes, not saved with the weights. Works on any index shape: (B, T) or (N,) unpadded.
    """

    def __init__(self, word: nn.Embedding, max_positions: int, *, scale: float = 1.0, offset: int = 0,
                 sinusoidal: bool = False, norm: nn.Module | None = None, dropout: float = 0.0,
                 scale_inputs_embeds: bool = False):
        """``scale_inputs_embeds``: given token embeddings (``inputs_embeds``) are scaled too (Hugging Face's
        Marian decoder); otherwise they are taken as they are (BART, Marian's encoder)."""
        super().__init__()
        dim = word.embedding_dim
        self.word, self.scale, self.offset, self.max_positions = word, scale, offset, max_positions
        self.scale_inputs_embeds = scale_inputs_embeds
        if sinusoidal:
            self.position = None
            self.register_buffer("sinusoids", sinusoidal_table(max_positions, dim), persistent=False)
        else:
            self.position = nn.Embedding(max_positions + offset, dim)
        self.norm = norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor | None, position_ids: Tensor,
                inputs_embeds: Tensor | None = None) -> Tensor:  # (...) -> (..., D)
        x = self.word(input_ids) if inputs_embeds is None else inputs_embeds
        if self.scale != 1.0 and (inputs_embeds is None or self.scale_inputs_embeds):
            x = x * self.scale
        x = x + (self.sinusoids[position_ids] if self.position is None else self.position(position_ids + self.offset))
        return self.dropout(x if self.norm is None else self.norm(x))
