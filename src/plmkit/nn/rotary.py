"""Rotary position embeddings (RoPE; Su et al., 2021, "RoFormer").

Each pair of channels of q and k is rotated by an angle proportional to the token's position,
so that q·k depends only on the relative distance. Channel pairs follow Hugging Face Llama's
"rotate half" layout: channel i pairs with channel i + d/2 (not the interleaved 2i, 2i+1 of the paper).

    rope = RotaryEmbedding(d_head=64, max_positions=2048, theta=10000.0)
    rotary = rope(position_ids)          # position_ids: (B, T), per row (left padding, cache offsets)
    q, k = rotary(q, k)                  # q: (B, H, T, d), k: (B, H_kv, T, d)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.nn.tracing import is_traceable


def rotate_half(x: Tensor) -> Tensor:
    """[x1 | x2] -> [-x2 | x1] over the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_frequencies(d: int, theta: float) -> Tensor:
    """(d/2,) inverse frequencies θ^(-2i/d), computed exactly as Hugging Face does (fp32)."""
    return 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for positions 0 .. max_positions-1 (grown on demand), kept in fp32 and
    cast to the dtype asked for on lookup, as Hugging Face computes them, even in a module cast to bf16."""

    def __init__(self, d_head: int, max_positions: int = 2048, theta: float = 10000.0):
        super().__init__()
        if d_head % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {d_head}")
        self.d_head, self.theta = d_head, theta
        self.register_buffer("inv_freq", rope_frequencies(d_head, theta), persistent=False)
        self._build(max_positions)

    def _build(self, n: int, device=None) -> None:
        """Tables for positions 0 .. n-1, in fp32 from fp32 frequencies: never from the ``inv_freq`` buffer,
        which a module cast to bf16/fp16 (``model.to(torch.bfloat16)``) holds rounded."""
        device = device if device is not None else self.inv_freq.device
        self.inv_freq = rope_frequencies(self.d_head, self.theta).to(device)  # (d/2,) fp32, as at __init__
        angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), self.inv_freq)  # (n, d/2)
        angles = torch.cat((angles, angles), dim=-1)  # (n, d): the same angle for channel i and i + d/2
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def tables(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """position_ids (B, T) -> cos, sin (B, 1, T, d) in ``dtype``."""
        if is_traceable():  # a graph computes its positions' angles: a table in it would end at its rows
            angles = position_ids.to(torch.float32)[..., None] * rope_frequencies(self.d_head, self.theta).to(
                position_ids.device)  # (B, T, d/2): the table's products, row by row
            angles = torch.cat((angles, angles), dim=-1)  # (B, T, d)
            return angles.cos().unsqueeze(1).to(dtype), angles.sin().unsqueeze(1).to(dtype)
        needed = int(position_ids.max()) + 1 if position_ids.numel() else 0
        if needed > self.cos.shape[0]:
            self._build(max(needed, 2 * self.cos.shape[0]), self.cos.device)
        elif self.cos.dtype != torch.float32:  # cast with the module: fp32 again, cast below
            self._build(self.cos.shape[0], self.cos.device)
        cos, sin = self.cos[position_ids], self.sin[position_ids]  # (B, T, d)
        return cos.unsqueeze(1).to(dtype), sin.unsqueeze(1).to(dtype)

    def forward(self, position_ids: Tensor, dtype: torch.dtype = torch.float32):
        """A ``rotary(q, k) -> (q, k)`` callable for tokens at ``position_ids`` (B, T) (or (T,))."""
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        cos, sin = self.tables(position_ids, dtype)

        def rotary(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
            return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin

        return rotary
