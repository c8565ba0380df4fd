"""Model inputs checked where they enter a forward pass: shapes and dtypes always, and the range of ids
on the CPU, where it costs no device sync (not on the traceable path, plmkit.nn.tracing: a graph's
caller checks them). A bad call is then an error naming the input, not an
IndexError deep inside an embedding (a device-side assert on a GPU)."""
from __future__ import annotations

import torch
from torch import Tensor

from plmkit.errors import InputError
from plmkit.nn.tracing import is_traceable


def check_ids(name: str, ids, rows: int | None, shape: tuple[int, ...] | None = None) -> None:
    """`ids` must be an integer tensor (of `shape` when given) whose values index `rows` rows."""
    if not isinstance(ids, Tensor):
        raise InputError(f"{name} must be a tensor of ids, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype is torch.bool:
        raise InputError(f"{name} must hold integer ids, got {ids.dtype}")
    if shape is not None and tuple(ids.shape) != shape:
        raise InputError(f"{name} has shape {tuple(ids.shape)}, but the input ids are {shape}")
    if rows is not None and ids.device.type == "cpu" and not is_traceable() and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= rows:
            raise InputError(f"{name} holds {low if low < 0 else high}, outside 0 .. {rows - 1} "
                             f"({rows} rows): ids from another tokenizer or model?")


def check_inputs(input_ids, vocab_size: int, attention_mask=None, mask_width: int | None = None,
                 token_type_ids=None, type_vocab_size: int | None = None, position_ids=None,
                 max_positions: int | None = None) -> None:
    """The inputs of a body's forward: input_ids (B, T) with T >= 1; attention_mask (B, mask_width or T)
    of 0/1; token_type_ids (B, T); position_ids (T,), (1, T) or (B, T)."""
    check_ids("input_ids", input_ids, vocab_size)
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}; "
                         "one sequence is input_ids[None]")
    b, t = input_ids.shape
    if attention_mask is not None:
        check_ids("attention_mask", attention_mask, 2, (b, mask_width or t))
    if token_type_ids is not None:
        check_ids("token_type_ids", token_type_ids, type_vocab_size)
        if tuple(token_type_ids.shape) not in ((b, t), (1, t), (t,)):
            raise InputError(f"token_type_ids has shape {tuple(token_type_ids.shape)}, but the input ids are {(b, t)}")
    if position_ids is not None:
        check_ids("position_ids", position_ids, max_positions)
        if tuple(position_ids.shape) not in ((b, t), (1, t), (t,)):
            raise InputError(f"position_ids has shape {tuple(position_ids.shape)}, but the input ids are {(b, t)}")


__all__ = ["check_ids", "check_inputs"]
