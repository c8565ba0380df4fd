"""`gcide`: dictionary definitions (Webster 1913 + additions) from the Debian package dict-gcide."""
from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from plmkit.datasets.common import Counts, paragraphs_of, write_documents
from plmkit.datasets.download import apt_download, find_one
from plmkit.errors import DataError

log = logging.getLogger(__name__)

NAME = "gcide"
SOURCE = {
    "from": "Debian dict-gcide: /usr/share/dictd/gcide.dict.dz (Webster 1913 + additions)",
    "licence": "GPL-3.0-or-later (fetch it, don't commit it)",
    "gives": "gcide/definitions.txt, 'headword: definition' lines, 20 entries per paragraph",
}


_GCIDE_HEAD = re.compile(r"^([^\s\\][^\\]*?)\s+\\[^\\]*\\")  # "Abdomen \Ab*do"men\, n. ..."
_GCIDE_NOISE = re.compile(r"\[[^\]]*\]|\s--\s?[A-Z][\w.&' ]{0,40}?\.(?=\s|$)|(?<!\w)\?(?!\w)")


def gcide_definitions(lines: Iterable[str]) -> Iterator[str]:
    """``headword: definition`` for each GCIDE entry of a dictd text: the pronunciation, bracketed
    etymologies and source tags (``[1913 Webster]``), ``--Author.`` citations and the ``?`` left by
    Greek letters are removed; ``{cross references}`` keep their words, without syllable marks."""
    def finish(head: str, body: list[str]) -> str | None:
        text = _GCIDE_NOISE.sub(" ", " ".join(body))
        text = re.sub(r"\{([^}]*)\}", lambda m: re.sub(r"[*\"`']", "", m.group(1)), text)
        text = re.sub(r"\s+", " ", text).strip(" ,;")
        return f"{head}: {text}" if head and text and not head.startswith("00-") else None

    head, body = None, []
    for line in lines:
        match = _GCIDE_HEAD.match(line)
        if match:
            if head is not None and (entry := finish(head, body)):
                yield entry
            head, body = match.group(1).strip(), [line[match.end():]]
        elif head is not None and line.strip():
            body.append(line.strip())
    if head is not None and (entry := finish(head, body)):
        yield entry


def convert_gcide(dict_dz: Path, out_dir: Path, per_document: int = 20) -> Counts:
    """``definitions.txt`` from a dictd ``gcide.dict.dz`` (gzip-compatible): one entry per line,
    `per_document` lines per paragraph."""
    with gzip.open(dict_dz, "rt", encoding="utf-8", errors="replace") as lines:
        n_docs = write_documents(out_dir / "definitions.txt", paragraphs_of(gcide_definitions(lines), per_document))
    if not n_docs:
        raise DataError(f"{dict_dz}: no dictionary entries found; the package layout changed")
    return {"definitions.txt": n_docs}


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    log.info("downloading Debian package dict-gcide ...")
    root = apt_download("dict-gcide", downloads, tmp / "deb")
    log.info("converting gcide (about 1.2M lines) ...")
    return convert_gcide(find_one(root, "dictd/gcide.dict.dz"), out)
