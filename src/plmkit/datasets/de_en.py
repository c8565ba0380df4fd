"""`de-en`: German-English pairs from the Ding dictionary (Debian trans-de-en), and their sentence subset."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from plmkit.datasets.common import SEED, Counts, unique, write_jsonl, write_splits
from plmkit.datasets.download import apt_download, find_one

log = logging.getLogger(__name__)

NAME = "de-en"
SOURCE = {
    "from": "Debian trans-de-en: /usr/share/trans/de-en (Ding dictionary)",
    "licence": "GPL-2.0-or-later",
    "gives": "de-en/pairs[.train|.dev|.test].jsonl and sentences[...].jsonl with de/en",
}


_DING_NOTE = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
_SENTENCE = re.compile(r"^[A-ZÄÖÜ\"'„“].*\S\s*[.!?]$")


def ding_pairs(lines: Iterable[str]) -> Iterator[dict]:
    """Ding dictionary lines ``German :: English`` → ``{"de", "en"}`` pairs.

    Sub-entries split by `` | `` are paired only when both sides have as many;
    grammar notes ``{f}`` and labels ``[ugs.]`` are removed; ``#`` lines skipped.
    """
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        german, english = line.rstrip("\n").split(" :: ", 1)
        de_parts, en_parts = german.split(" | "), english.split(" | ")
        if len(de_parts) != len(en_parts):
            continue
        for de, en in zip(de_parts, en_parts):
            de, en = _clean_ding(de), _clean_ding(en)
            if de and en:
                yield {"de": de, "en": en}


def _clean_ding(text: str) -> str:
    return re.sub(r"\s+", " ", _DING_NOTE.sub("", text)).strip(" ;")


def is_sentence_pair(pair: dict) -> bool:
    """Both sides are single sentences: capitalised, ≥3 words, end with . ! ?, no ``;``."""
    return all(_SENTENCE.match(side) and ";" not in side and len(side.split()) >= 3
               for side in (pair["de"], pair["en"]))


def convert_de_en(dictionary: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """``pairs.jsonl`` (+ splits) and the ``sentences`` subset (+ splits), deduplicated."""
    with open(dictionary, encoding="utf-8", errors="replace") as lines:
        pairs = unique(ding_pairs(lines), key=lambda p: (p["de"], p["en"]))
    sentences = [p for p in pairs if is_sentence_pair(p)]
    counts = {"pairs.jsonl": write_jsonl(out_dir / "pairs.jsonl", pairs)}
    counts.update(write_splits(out_dir, "pairs", pairs, seed))
    counts["sentences.jsonl"] = write_jsonl(out_dir / "sentences.jsonl", sentences)
    counts.update(write_splits(out_dir, "sentences", sentences, seed))
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    log.info("downloading Debian package trans-de-en ...")
    root = apt_download("trans-de-en", downloads, tmp / "deb")
    log.info("converting de-en ...")
    return convert_de_en(find_one(root, "share/trans/de-en"), out)
