"""Hugging Face checkpoint conversion: the only place that knows Hugging Face's key names.

Each family module provides ``to_hf(state) -> state``, ``from_hf(state) -> state`` and ``hf_key(key)``.
"""
from __future__ import annotations

import importlib

from plmkit.errors import CheckpointError

FAMILIES = {"bert": "plmkit.convert.bert", "gpt2": "plmkit.convert.gpt2", "llama": "plmkit.convert.llama"}


def _family(model_type: str):
    try:
        return importlib.import_module(FAMILIES[model_type])
    except KeyError:
        raise CheckpointError(f"no Hugging Face key table for model_type {model_type!r}; "
                              f"known: {', '.join(sorted(FAMILIES))}") from None


def to_hf(model_type: str, state: dict) -> dict:
    """Our parameter names -> Hugging Face's."""
    return _family(model_type).to_hf(state)


def from_hf(model_type: str, state: dict) -> dict:
    """Hugging Face's parameter names -> ours."""
    return _family(model_type).from_hf(state)


def hf_key(model_type: str, key: str) -> str:
    """The Hugging Face name of one of our parameter keys, for messages."""
    return _family(model_type).hf_key(key)
