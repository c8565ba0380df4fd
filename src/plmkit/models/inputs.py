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


def input_shape(input_ids, inputs_embeds, vocab_size: int, d_model: int | None = None) -> tuple[int, int]:
    """(B, T) of exactly one of input_ids (B, T) and inputs_embeds (B, T, D), checked; T >= 1."""
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("give exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        check_ids("input_ids", input_ids, vocab_size)
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise InputError(f"input_ids must be (batch, length) with length >= 1, got shape "
                             f"{tuple(input_ids.shape)}; one sequence is input_ids[None]")
        return tuple(input_ids.shape)
    if not isinstance(inputs_embeds, Tensor) or not inputs_embeds.is_floating_point():
        raise InputError(f"inputs_embeds must be a floating-point tensor, got "
                         f"{getattr(inputs_embeds, 'dtype', type(inputs_embeds).__name__)}")
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0 or d_model not in (None, inputs_embeds.shape[2]):
        raise InputError(f"inputs_embeds must be (batch, length, {d_model or 'd_model'}) with length >= 1, got shape "
                         f"{tuple(inputs_embeds.shape)}")
    return tuple(inputs_embeds.shape[:2])


def attention_mask_2d(mask, shape: tuple[int, int] | None = None, name: str = "attention_mask",
                      four_d: bool = False) -> Tensor | None:
    """The one attention-mask normaliser: (B, W) integer, bool or float, 1 = token, 0 = padding -> an integer
    0/1 mask (``shape``: the (B, W) it must have). With ``four_d``, a 4-D mask (B or 1, 1 or H, T, W) is
    returned as given: Hugging Face's prepared mask (float: additive; bool: True = attend, as SDPA)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise InputError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.dim() == 4:
        if not four_d:
            raise InputError(f"{name} is 4-D {tuple(mask.shape)}, which this model does not take: pass the (batch, "
                             "length) mask, 1 for tokens and 0 for padding")
        if shape is not None and (mask.shape[0] not in (1, shape[0]) or mask.shape[-1] != shape[1]):
            raise InputError(f"{name} has shape {tuple(mask.shape)}, but a 4-D mask of these inputs is "
                             f"({shape[0]}, 1, length, {shape[1]})")
        return mask
    if mask.dim() != 2 or (shape is not None and tuple(mask.shape) != tuple(shape)):
        raise InputError(f"{name} has shape {tuple(mask.shape)}, but the input ids are {tuple(shape or ('B', 'T'))}"
                         " (with a cache: the mask of the whole sequence, cached positions included)")
    if mask.dtype is torch.bool:
        return mask.long()
    if mask.is_complex():
        raise InputError(f"{name} must be integer, bool or float 0/1, got {mask.dtype}")
    if mask.device.type == "cpu" and not is_traceable() and mask.numel():
        bad = mask[(mask != 0) & (mask != 1)]
        if bad.numel():
            raise InputError(f"{name} holds {bad[0].item()}: it must be 1 for tokens and 0 for padding "
                             "(an additive mask of 0 / -inf? pass the 0/1 mask)")
    return mask.long() if mask.is_floating_point() else mask


def check_inputs(input_ids, vocab_size: int, attention_mask=None, past: int = 0, token_type_ids=None,
                 type_vocab_size: int | None = None, position_ids=None, max_positions: int | None = None,
                 inputs_embeds=None, d_model: int | None = None, four_d_mask: bool = False) -> Tensor | None:
    """The inputs of a body's forward: input_ids (B, T) or inputs_embeds (B, T, D), T >= 1; attention_mask
    (B, past + T) (`attention_mask_2d`; 4-D with ``four_d_mask``); token_type_ids and position_ids (T,),
    (1, T) or (B, T). Returns the attention mask, normalised."""
    b, t = input_shape(input_ids, inputs_embeds, vocab_size, d_model)
    attention_mask = attention_mask_2d(attention_mask, (b, past + t), four_d=four_d_mask)
    if token_type_ids is not None:
        check_ids("token_type_ids", token_type_ids, type_vocab_size)
        if tuple(token_type_ids.shape) not in ((b, t), (1, t), (t,)):
            raise InputError(f"token_type_ids has shape {tuple(token_type_ids.shape)}, but the input ids are {(b, t)}")
    if position_ids is not None:
        check_ids("position_ids", position_ids, max_positions)
        if tuple(position_ids.shape) not in ((b, t), (1, t), (t,)):
            raise InputError(f"position_ids has shape {tuple(position_ids.shape)}, but the input ids are {(b, t)}")
    return attention_mask


__all__ = ["attention_mask_2d", "check_ids", "check_inputs", "input_shape"]
