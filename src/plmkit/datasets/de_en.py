"""`de-en`: German → English pairs: Debian's package descriptions (DDTP, ddtp.py) and the sentences
of the Ding dictionary (Debian trans-de-en); the whole dictionary beside them.

The dictionary's sentence pairs join the description pairs in ``{train,dev,test}.jsonl``, each in
the split of its English side's `normalize` key, as is every entry of ``dictionary.*`` (so a
sentence is in the same split in both).
Version 1 of this set wrote ``pairs.*`` and ``sentences.*`` of ``{"de", "en"}``: fetching again
rewrites an old copy.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from plmkit.datasets.common import SEED, Counts, normalize, split_by_group, unique, write_parts
from plmkit.datasets.ddtp import LICENCE, Archive, Pair, convert_translation
from plmkit.datasets.download import DEBIAN_SUITE, apt_download, find_one

log = logging.getLogger(__name__)

NAME = "de-en"
VERSION = 2
SOURCE = {
    "from": f"Debian {DEBIAN_SUITE} main/i18n/Translation-de and -en (DDTP); Debian trans-de-en: "
            "/usr/share/trans/de-en (Ding dictionary)",
    "licence": f"GPL-2.0-or-later (dictionary); descriptions: {LICENCE}",
    "gives": "de-en/{train,dev,test}.jsonl with source (German) / target (English): description synopses "
             "and paragraphs, dictionary sentences; synopses.*, paragraphs.*, sentences.* alone; "
             "dictionary.* (every dictionary entry)",
}


_DING_NOTE = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
_SENTENCE = re.compile(r"^[A-ZÄÖÜ\"'„“].*\S\s*[.!?]$")


def ding_pairs(lines: Iterable[str]) -> Iterator[dict]:
    """Ding dictionary lines ``German :: English`` → ``{"source": German, "target": English}`` pairs.

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
                yield {"source": de, "target": en}


def _clean_ding(text: str) -> str:
    return re.sub(r"\s+", " ", _DING_NOTE.sub("", text)).strip(" ;")


def is_sentence_pair(pair: dict) -> bool:
    """Both sides are single sentences: capitalised, ≥3 words, end with . ! ?, no ``;``."""
    return all(_SENTENCE.match(side) and ";" not in side and len(side.split()) >= 3
               for side in (pair["source"], pair["target"]))


def dictionary_group(english: str) -> str:
    """The split group of a dictionary pair: its English side, up to `normalize`."""
    return "ding:" + normalize(english)


def convert_de_en(archive: Archive, dictionary: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """``dictionary.*`` (every entry, repeats dropped), then the translation set (`convert_translation`)
    of the German descriptions and the dictionary's sentence pairs (``sentences.*`` alone)."""
    with open(dictionary, encoding="utf-8", errors="replace") as lines:
        entries = unique(ding_pairs(lines), key=lambda p: (p["source"], p["target"]))
    counts = write_parts(out_dir, "dictionary", split_by_group(entries, lambda p: dictionary_group(p["target"]), seed))
    sentences = [Pair(p["source"], p["target"], "sentence", dictionary_group(p["target"]))
                 for p in entries if is_sentence_pair(p)]
    counts.update(convert_translation(archive, "de", out_dir, sentences, {"sentence": "sentences"}, seed))
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    log.info("downloading Debian package trans-de-en ...")
    root = apt_download("trans-de-en", downloads, tmp / "deb")
    archive = Archive.download(downloads, ["de"])
    log.info("converting de-en ...")
    return convert_de_en(archive, find_one(root, "share/trans/de-en"), out)
