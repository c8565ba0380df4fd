"""`wordnet`: WordNet 3.0 glosses from the Debian package wordnet-base."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from plmkit.datasets.common import Counts, paragraphs_of, write_documents
from plmkit.datasets.download import apt_download, find_one

log = logging.getLogger(__name__)

NAME = "wordnet"
SOURCE = {
    "from": "Debian wordnet-base: /usr/share/wordnet/data.{noun,verb,adj,adv}",
    "licence": "WordNet 3.0 licence (Princeton, permissive, keep the notice)",
    "gives": "wordnet/glosses.txt, 20 glosses per paragraph",
}


def wordnet_glosses(lines: Iterable[str]) -> Iterator[str]:
    """The gloss (text after ``| ``) of each WordNet data line; licence lines
    (starting with two spaces) and lines without a gloss are skipped."""
    for line in lines:
        if line.startswith("  ") or " | " not in line:
            continue
        gloss = line.split(" | ", 1)[1].strip()
        if gloss:
            yield gloss


def convert_wordnet(data_files: Sequence[Path], out_dir: Path, per_document: int = 20) -> Counts:
    """``glosses.txt``: one gloss per line, `per_document` lines per paragraph."""
    def glosses() -> Iterator[str]:
        for path in data_files:
            with open(path, encoding="utf-8", errors="replace") as lines:
                yield from wordnet_glosses(lines)

    n_docs = write_documents(out_dir / "glosses.txt", paragraphs_of(glosses(), per_document))
    return {"glosses.txt": n_docs}


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    log.info("downloading Debian package wordnet-base ...")
    root = apt_download("wordnet-base", downloads, tmp / "deb")
    log.info("converting wordnet glosses ...")
    files = [find_one(root, f"wordnet/data.{pos}") for pos in ("noun", "verb", "adj", "adv")]
    return convert_wordnet(files, out)
