"""Training vocabularies: the texts to learn from, and the checks around the Rust trainers."""
from __future__ import annotations

import os
from typing import Iterator

import tokenizers

from plmkit.errors import ConfigError, DataError
from plmkit.utils.text import describe


def _looks_like_path(item) -> bool:
    if isinstance(item, os.PathLike):
        return True
    return isinstance(item, str) and (
        os.path.exists(item) or (not any(c.isspace() for c in item) and item.endswith((".txt", ".gz", ".jsonl"))))


def training_texts(source) -> Iterator[str]:
    """Texts from a path, a list of paths (read with plmkit.data.corpus), or an iterable of texts.

    A list counts as paths when every item is a PathLike, an existing path, or a
    space-free name ending in .txt/.gz/.jsonl (so a missing file is reported, not trained on).
    """
    if isinstance(source, (str, os.PathLike)):
        paths = [source]
    elif isinstance(source, (list, tuple)) and source and all(_looks_like_path(s) for s in source):
        paths = list(source)
    else:
        return (_checked_text(t, i) for i, t in enumerate(source))
    from plmkit.data.corpus import iter_texts

    return iter_texts(paths)


def _checked_text(text, index: int) -> str:
    if not isinstance(text, str):
        raise DataError(f"training text {index} is {describe(text)}; expected str.")
    return text


def check_vocab_size(vocab_size: int, specials: list[str], base: int = 0) -> None:
    """`base`: tokens every vocabulary has (the 256 bytes of byte-level BPE)."""
    least = len(specials) + base
    if not isinstance(vocab_size, int) or vocab_size <= least:
        what = f"the {len(specials)} special tokens" + (f" plus {base} byte tokens" if base else "")
        raise ConfigError(f"vocab_size={vocab_size!r} must be an int larger than {least}, {what}.")


def train(backend: tokenizers.Tokenizer, trainer, source) -> None:
    """Train `backend` in place on the texts of `source`; an empty corpus is an error."""
    count = 0

    def counted():
        nonlocal count
        for text in training_texts(source):
            count += 1
            yield text

    backend.train_from_iterator(counted(), trainer)
    if count == 0:
        raise DataError("the training corpus is empty: no text was read, so no vocabulary can be learned.")
