"""`fortunes`: the UTF-8 fortune files of the Debian package fortunes."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from plmkit.datasets.common import Counts, read_text, write_documents
from plmkit.datasets.download import apt_download, find_one
from plmkit.errors import DataError

log = logging.getLogger(__name__)

NAME = "fortunes"
SOURCE = {
    "from": "Debian fortunes: /usr/share/games/fortunes/* (the UTF-8 .u8 files, no ASCII art)",
    "licence": "BSD-style (Debian fortunes package; quotations belong to their authors)",
    "gives": "fortunes/<file>.txt, one fortune per paragraph",
}


FORTUNE_SKIP = ("art", "ascii-art")  # pictures, not prose


def convert_fortunes(fortune_dir: Path, out_dir: Path) -> Counts:
    """Each ``%``-separated fortune of the ``*.u8`` files (UTF-8) → a paragraph of ``<file>.txt``,
    lines stripped of indentation."""
    counts = {}
    for path in sorted(fortune_dir.glob("*.u8")):
        name = path.name.removesuffix(".u8")
        if name in FORTUNE_SKIP:
            continue
        fortunes = re.split(r"^%\s*$", read_text(path), flags=re.M)
        fortunes = ["\n".join(line.strip() for line in f.strip("\n").splitlines() if line.strip()) for f in fortunes]
        counts[f"{name}.txt"] = write_documents(out_dir / f"{name}.txt", (f for f in fortunes if f))
    if not counts:
        raise DataError(f"{fortune_dir}: no fortune files (*.u8) found; the package layout changed")
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    log.info("downloading Debian package fortunes ...")
    root = apt_download("fortunes", downloads, tmp / "deb")
    log.info("converting fortunes ...")
    return convert_fortunes(find_one(root, "games/fortunes/wisdom.u8").parent, out)
