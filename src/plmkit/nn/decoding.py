"""Fast CPU paths for decoding, where each step multiplies one row per sequence by every weight matrix
and is bound by streaming the weights from memory.

Measured on one core (AMD EPYC, fp32, GB/s of weights streamed by one 1-row matmul):

    block weights, row-major (out, in)   oneDNN 27-29 for every shape tried (21 at 768 x 768)
                                         MKL (PyTorch's F.linear) 16-25
    block weights, column-major          oneDNN 22-31 at GPT-2 small's shapes, but 11 when the rows
                                         of the (in, out) storage lie a multiple of 4 KiB apart
                                         (1024-wide models: cache-set aliasing); MKL 24-27
    vocabulary projection (V, D)         oneDNN column-major 34 (11 when V*4 is a multiple of 4 KiB),
                                         row-major 26-30; MKL row-major 17-23

Hence ``decoding_layout``: every plain fp32 ``nn.Linear`` runs through oneDNN, block weights keep
their layout, q/k/v become one matmul, and the LM head is stored column-major unless its rows would
alias. A batch of 8 rows gains more than one row (oneDNN is ~2x MKL there). Same weights, fp32
throughout: results differ from ``F.linear`` by fp32 rounding only.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def decode_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN for fp32 CPU tensors."""
    if HAS_ONEDNN_LINEAR and weight.device.type == "cpu" and weight.dtype == x.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def _decode_forward(module: nn.Linear, x: Tensor) -> Tensor:
    return decode_linear(x, module.weight, module.bias)


def column_major_lm_head(model: nn.Module) -> None:
    """Store ``model.lm_head.weight`` column-major, (in, out) in memory (see the table above); kept
    until ``row_major_lm_head``.

    Value, shape and Parameter object are unchanged (``weight`` becomes a transposed view; tied token
    embeddings share it). The conversion copies the matrix once, so it is kept across ``generate``
    calls; ``GenerationMixin.train()`` undoes it (training prefers rows, as do embedding lookups).
    A model sharded by FSDP2 keeps its layout: its weights are views into the buffers FSDP gathers them
    into, which new storage would cut them off from.
    """
    head = getattr(model, "lm_head", None)
    sharded = hasattr(model, "unshard") and hasattr(model, "reshard")  # (what fully_shard gives a model)
    if (isinstance(head, nn.Linear) and not sharded and head.weight.device.type == "cpu"
            and head.weight.is_contiguous() and (head.out_features * head.weight.element_size()) % 4096):
        with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor even inside inference mode
            head.weight.data = head.weight.data.t().contiguous().t()
        model._column_major_head = True


def row_major_lm_head(model: nn.Module) -> None:
    """Undo ``column_major_lm_head``."""
    if getattr(model, "_column_major_head", False):
        with torch.inference_mode(False), torch.no_grad():
            model.lm_head.weight.data = model.lm_head.weight.data.contiguous()
        model._column_major_head = False


@contextmanager
def decoding_layout(model: nn.Module):
    """The fast paths above for the duration of the context (one ``generate`` call): oneDNN for plain
    fp32 ``nn.Linear`` layers, one q/k/v matmul per decoder self-attention (its weights concatenated
    on entry, a copy dropped on exit), and the LM head column-major (kept). No-op while training and off CPU;
    subclasses (LoRA layers) keep their own forward.
    """
    if model.training or next(model.parameters()).device.type != "cpu":
        yield
        return
    column_major_lm_head(model)
    linears = [m for m in model.modules() if type(m) is nn.Linear and "forward" not in vars(m)]
    # one q/k/v matmul where a step runs one token: not in cross-attention (q alone) nor in an
    # encoder-decoder's encoder (once per call, all tokens at once): the copies would only cost memory
    once = [m.cross_attn for m in model.modules() if getattr(m, "cross_attn", None) is not None]
    if getattr(model, "is_encoder_decoder", False):
        once += list(model.get_encoder().modules())
    skip = set(map(id, once))
    attentions = [m for m in model.modules() if hasattr(m, "fuse_qkv") and id(m) not in skip]
    for m in linears:
        m.forward = partial(_decode_forward, m)  # an instance attribute shadows nn.Linear.forward
    for m in attentions:
        m.fuse_qkv(True)
    try:
        yield
    finally:
        for m in linears:
            del m.forward
        for m in attentions:
            m.fuse_qkv(False)


__all__ = ["HAS_ONEDNN_LINEAR", "column_major_lm_head", "decode_linear", "decoding_layout", "row_major_lm_head"]
