"""The traceable path: one forward computation whose shapes follow the input's shapes alone.

plmkit's eager forward passes read values to save work: an encoder drops padding tokens (how many
there are is data), a batch without padding skips its mask, a one-token decoding step skips the
causal mask, inputs are checked against the vocabulary. A graph exporter (`torch.export`, and so
`torch.onnx.export(dynamo=True)`) cannot follow a shape or a branch that depends on values, and a
graph traced through one would hold the example's choice for every input. Inside `traceable()` (and
whenever `torch.export` traces) every forward pass takes the explicit padded path instead: padding is
computed with the real tokens and hidden by the attention mask, masks are always built whole, and
value checks are left to the caller. The outputs are the same (tests/nn/test_tracing.py).

    with traceable():
        torch.onnx.export(model, ...)
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_traceable = False  # a plain global, not a ContextVar: torch.compile reads it without a graph break


@contextlib.contextmanager
def traceable() -> Iterator[None]:
    """Forward passes inside take the traceable path (see the module docstring)."""
    global _traceable
    before, _traceable = _traceable, True
    try:
        yield
    finally:
        _traceable = before


def is_traceable() -> bool:
    """Whether forward passes must avoid value-dependent shapes and branches now."""
    return _traceable or torch.compiler.is_exporting()


__all__ = ["is_traceable", "traceable"]
