"""Marian: plmkit names <-> Hugging Face `MarianModel` / `MarianMTModel` names: BART's table.

Marian's sinusoidal positions are not weights: plmkit rebuilds them from the sizes, and drops the
``embed_positions`` tables that older checkpoints carry.
"""
from __future__ import annotations

from plmkit.convert.bart import BODY, HEADS
from plmkit.convert.keys import Converter

CONVERTER = Converter(BODY, HEADS, prefix="model", dropped=r"(^|\.)(embed_positions\.weight|(encoder|decoder)\.version)$")
