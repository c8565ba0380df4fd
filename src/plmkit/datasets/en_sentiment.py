"""`en-sentiment`: the VADER ground-truth sentences (PyPI vadersentiment) with positive/negative labels."""
from __future__ import annotations

import html
import logging
from pathlib import Path

from plmkit.datasets.common import SEED, Counts, read_text, unique, write_jsonl, write_splits
from plmkit.datasets.download import find_one, pip_unpacked, unpack

log = logging.getLogger(__name__)

NAME = "en-sentiment"
SOURCE = {
    "from": "PyPI vadersentiment==3.3.2 (sdist): hutto_ICWSM_2014 ground truth",
    "licence": "MIT",
    "gives": "en-sentiment/{movie_reviews,tweets,amazon_reviews,nyt_editorials}[.train|.dev|.test].jsonl",
}


VADER_SOURCES = {"movieReviewSnippets": "movie_reviews", "tweets": "tweets",
                 "amazonReviewSnippets": "amazon_reviews", "nytEditorialSnippets": "nyt_editorials"}


def vader_records(text: str, min_abs_score: float = 0.5) -> list[dict]:
    """Parse ``id<TAB>mean score<TAB>text`` lines; drop |score| < `min_abs_score`
    (near-neutral items have no clear label) and repeated texts. HTML entities
    are unescaped."""
    records = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            score = float(parts[1])
        except ValueError:
            continue
        sentence = html.unescape(parts[2]).strip()
        if sentence and abs(score) >= min_abs_score:
            records.append({"text": sentence, "label": "positive" if score > 0 else "negative",
                            "score": score})
    return unique(records, key=lambda r: r["text"])


def convert_en_sentiment(ground_truth_dir: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """Each ``<source>_GroundTruth.txt`` → ``<name>.jsonl`` + seeded train/dev/test."""
    counts = {}
    for source, stem in VADER_SOURCES.items():
        records = vader_records(read_text(ground_truth_dir / f"{source}_GroundTruth.txt"))
        counts[f"{stem}.jsonl"] = write_jsonl(out_dir / f"{stem}.jsonl", records)
        counts.update(write_splits(out_dir, stem, records, seed))
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = pip_unpacked("vadersentiment==3.3.2", downloads, tmp,
                        lambda n: n.endswith("hutto_ICWSM_2014.tar.gz"), sdist=True)
    inner = unpack(find_one(root, "hutto_ICWSM_2014.tar.gz"), tmp / "hutto",
                   lambda n: n.endswith("_GroundTruth.txt"))
    log.info("converting en-sentiment ...")
    return convert_en_sentiment(find_one(inner, "tweets_GroundTruth.txt").parent, out)
