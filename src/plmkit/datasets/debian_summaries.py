"""`debian-summaries`: English package descriptions → their one-line synopsis (headline generation),
from Debian's Translation-en (ddtp.py: fetching, deduplication, splits by package family)."""
from __future__ import annotations

import logging
from pathlib import Path

from plmkit.datasets.common import SEED, Counts
from plmkit.datasets.ddtp import LICENCE, Archive, summary_pairs, write_pair_sets
from plmkit.datasets.download import DEBIAN_SUITE

log = logging.getLogger(__name__)

NAME = "debian-summaries"
SOURCE = {
    "from": f"Debian {DEBIAN_SUITE} main/i18n/Translation-en: long descriptions and their synopses",
    "licence": LICENCE,
    "gives": "debian-summaries/{train,dev,test}.jsonl with text (paragraphs one per line) / summary",
}


def convert_summaries(archive: Archive, out_dir: Path, seed: int = SEED) -> Counts:
    """``{train,dev,test}.jsonl`` of ``{"text", "summary"}``, deduplicated on both sides."""
    return write_pair_sets(out_dir, summary_pairs(archive.english, archive.family), ("text", "summary"), {}, seed)


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    archive = Archive.download(downloads)
    log.info("converting debian-summaries ...")
    return convert_summaries(archive, out)
