"""Position-wise feed-forward networks: Linear -> activation -> Linear, or a gated variant (GLU)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf) GELU, as BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """fc_out(act(fc_in(x))), or with ``gated``: fc_out(act(gate(x)) * fc_in(x)) (SwiGLU when act=silu).

    ``dropout``: on the activations, before fc_out (BART's ``activation_dropout``)."""

    def __init__(self, d_model: int, d_ff: int, act: str = "gelu", gated: bool = False, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (..., D) -> (..., D)
        h = self.fc_in(x)
        h = self.act(self.gate(x)) * h if self.gate is not None else self.act(h)
        return self.fc_out(h if self.dropout is None else self.dropout(h))
