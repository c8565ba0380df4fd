"""Model outputs: dataclasses with Hugging Face's field names (`loss`, `logits`, ...)."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields

from torch import Tensor


class ModelOutput:
    """Attribute access, plus `out["logits"]` and `out[0]` over the fields that are set (as HF)."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def takes_return_dict(forward):
    """A forward that also takes Hugging Face's ``return_dict``: False gives ``out.to_tuple()`` (the fields
    that are set, in HF's order: the loss first), True or None the output itself."""
    @functools.wraps(forward)
    def wrapper(self, *args, return_dict: bool | None = None, **kwargs):
        out = forward(self, *args, **kwargs)
        return out.to_tuple() if return_dict is False else out
    sig = inspect.signature(forward)
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), inspect.Parameter(
        "return_dict", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="bool | None")])
    return wrapper


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Tensor  # (B, T, D)
    pooler_output: Tensor | None = None  # (B, D)
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings + each layer, (B, T, D)
    past_key_values: object | None = None
    attentions: tuple[Tensor, ...] | None = None  # each layer, (B, H, T, T)
    cross_attentions: tuple[Tensor, ...] | None = None  # each decoder layer, (B, H, T, S)


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    """A decoder-only body's output (HF's field order)."""

    last_hidden_state: Tensor  # (B, T, D)
    past_key_values: object | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, T, V); (M, V) with sparse_prediction; None training with labels
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class PreTrainingOutput(ModelOutput):
    loss: Tensor | None = None  # mlm_loss + nsp_loss
    prediction_logits: Tensor | None = None  # (B, T, V); (M, V) with sparse_prediction; None training with labels
    seq_relationship_logits: Tensor | None = None  # (B, 2)
    mlm_loss: Tensor | None = None
    nsp_loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class ClassifierOutput(ModelOutput):
    """Sequence-, token- and sentence-pair classification."""

    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, C) or (B, T, C)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: Tensor | None = None
    start_logits: Tensor | None = None  # (B, T)
    end_logits: Tensor | None = None  # (B, T)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class CausalLMOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, T, V); None training with labels (unless return_logits=True)
    past_key_values: object | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None  # a decoder reading encoder states: (B, H, T, S) per layer


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: Tensor  # the decoder's, (B, T, D)
    past_key_values: object | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None  # each decoder layer, (B, H, T, S)
    encoder_last_hidden_state: Tensor | None = None  # (B, S, D)
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None  # (B, T, V); None training with labels (unless return_logits=True)
    past_key_values: object | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None  # each decoder layer, (B, H, T, S)
    encoder_last_hidden_state: Tensor | None = None  # (B, S, D)
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None
