"""A tiny fine-tuned sentiment classifier (the tiny BERT of finetune_helpers, a few steps on English
movie reviews) for the compression tests: made once per test session."""
from __future__ import annotations

import tempfile
from pathlib import Path

import finetune_helpers as h

_CACHE: dict[str, Path] = {}


def sentiment_dir() -> tuple[Path, Path]:
    """(fine-tuned model directory, a 100-row labelled test file)."""
    if "sentiment" not in _CACHE:
        from plmkit.recipes.finetune import finetune
        root = Path(tempfile.mkdtemp(prefix="plmkit-compression-"))
        train, test = h.en_sentiment_files(root)
        finetune("classification", h.tiny_model_dir(), train, root / "run", None, **h.quick(max_steps=12))
        _CACHE["sentiment"] = root
    root = _CACHE["sentiment"]
    return root / "run" / "model", root / "test.jsonl"
