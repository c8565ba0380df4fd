"""Debian's translated package descriptions (DDTP): the translation sets `fr-en`, `ja-en`, `zh-en`
(and, with the Ding dictionary, `de-en`: de_en.py) and what `debian-summaries` is made of.

**The source.** Beside its package lists, Debian's archive has one ``main/i18n/Translation-<lang>``
index per language: deb822 records of ``Package``, ``Description-md5`` (the md5 of the English
original, so records align across languages) and ``Description-<lang>``: the one-line synopsis,
then the long description, each line indented by one space, paragraphs separated by `` .`` lines.
``main/binary-amd64/Packages`` maps binary packages to their source package.

**How it is fetched.** `download.debian_index_files` downloads, with urllib, the files the suite's
InRelease lists from the mirror apt is configured with (``$PLMKIT_DEBIAN_MIRROR``, else the first
Debian URI in /etc/apt/sources.list.d/*.sources or sources.list, else deb.debian.org), checks each
against InRelease's SHA256 and keeps it in ``<cache>/downloads/debian-bookworm/``, so the next set
reuses it. Measured on bookworm (deb.debian.org, 2 cores): Translation-en.xz 6.1 MB, -fr/-de/-ja/
-zh_CN.bz2 2.7/1.7/0.75/0.12 MB and Packages.xz 8.8 MB download in about 4 s; decompressing and
parsing them takes about 10 s. `apt-get update -o Acquire::Languages=en,fr,de,ja,zh_CN -o
Dir::State::Lists=<private dir> -o Dir::Cache=<private dir>` gets the same files (lz4-compressed)
with apt's signature check, but took 16 s, downloads every configured suite's package lists too
(21 MB) and needs a Debian system; urllib runs anywhere and writes nothing outside the cache.
InRelease's own signature is not checked (the files are text, not code): ``gpgv --keyring
/usr/share/keyrings/debian-archive-keyring.gpg InRelease`` checks it by hand. The suite is fixed
(bookworm, oldstable since 2025), so a set is the same on every machine until bookworm's next point
release; once bookworm leaves the mirrors, ``PLMKIT_DEBIAN_MIRROR=http://archive.debian.org/debian``.

**Pairs.** Each translated description is aligned with the English one of the same md5 (a
translation of an md5 that Translation-en no longer has is dropped): the synopsis pair, and the
paragraph pairs when both sides have as many paragraphs. A paragraph is its lines joined by
spaces. A pair whose sides are twins (`normalize`: an untranslated copy) is dropped.

**Duplicates and splits.** Many descriptions are templated ("This package contains the development
files."), and related packages share paragraphs. Binary packages are grouped into *families*: the
packages of one source package, joined with those of every other source package that shares a
synopsis or paragraph with it, when at most `FAMILY_LINK` source packages share that text (a text
used more widely is a template, and would join unrelated packages into one family). Pairs are
then deduplicated on each side (`common.unique_each` on `common.normalize`: twins up to case,
punctuation and numbers; the first in index order is kept), and each family goes whole to
train, dev or test by a hash of its name (`common.split_of`, 80/10/10), so a source package never
spans two splits and a package lands in the same split in every set built here. Last, dev and
test drop the pairs with a side whose template (`common.template_keys`: "Development files for
*") is that of a training pair's same side: about 2% of fr-en's test pairs and 4% of
debian-summaries'. No test source or target has a twin, or a template twin, in training.
"""
from __future__ import annotations

import logging
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from plmkit.datasets.common import (SEED, Counts, normalize, split_by_group, unique_each, without_near_twins,
                                    write_parts)
from plmkit.datasets.download import DEBIAN_SUITE, debian_index_files, read_index

log = logging.getLogger(__name__)

ENGLISH = "main/i18n/Translation-en"
PACKAGES = "main/binary-amd64/Packages"
FAMILY_LINK = 5  # a text shared by at most this many source packages joins them into one family
LICENCE = "each package's own (descriptions are package metadata): fetch, don't commit"
TRANSLATION_FIELDS = ("source", "target")
TRANSLATION_STEMS = {"synopsis": "synopses", "paragraph": "paragraphs"}  # the files of each kind alone


@dataclass(frozen=True)
class Description:
    synopsis: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    """A description and the binary packages that have it."""
    packages: tuple[str, ...]
    description: Description


@dataclass(frozen=True)
class Pair:
    """A training pair: `source`, `target`, what it is (`kind`) and the family that decides its split."""
    source: str
    target: str
    kind: str
    family: str


def records(text: str) -> Iterator[dict[str, str]]:
    """The deb822 records of an index file: ``{field: value}``; continuation lines (those starting
    with a space) are added to the value after a newline, without that one space."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        name = None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and name is not None:
                fields[name] += "\n" + line[1:]
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if fields:
            yield fields


def parse_description(value: str) -> Description:
    """A ``Description`` field's value: its first line is the synopsis; the lines after it form
    paragraphs, separated by lines that hold only ``.``; a paragraph's lines are joined by a space,
    or by nothing between two Chinese or Japanese characters (their text has no spaces)."""
    synopsis, *lines = value.split("\n")
    paragraphs, current = [], ""
    for line in lines + ["."]:
        line = " ".join(line.split())
        if line == ".":
            if current:
                paragraphs.append(current)
            current = ""
        elif line:
            current += ("" if not current or _wide(current[-1]) and _wide(line[0]) else " ") + line
    return Description(" ".join(synopsis.split()), tuple(paragraphs))


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def descriptions(text: str, lang: str) -> dict[str, Entry]:
    """``{Description-md5: Entry}`` of a ``Translation-<lang>`` index."""
    packages: dict[str, list[str]] = defaultdict(list)
    values: dict[str, str] = {}
    for record in records(text):
        md5, value = record.get("Description-md5"), record.get(f"Description-{lang}")
        if md5 and value is not None and "Package" in record:
            packages[md5].append(record["Package"])
            values.setdefault(md5, value)
    return {md5: Entry(tuple(packages[md5]), parse_description(value)) for md5, value in values.items()}


def source_packages(text: str) -> dict[str, str]:
    """``{binary package: source package}`` of a ``Packages`` index (a package without a ``Source``
    field is its own source; ``Source: name (version)`` gives name)."""
    sources = {}
    for record in records(text):
        if "Package" in record:
            sources[record["Package"]] = (record.get("Source") or record["Package"]).split()[0]
    return sources


def families(english: dict[str, Entry], source_of: dict[str, str], link: int = FAMILY_LINK) -> dict[str, str]:
    """``{binary package: family}``; a family is named after the first of its source packages.

    Source packages are joined when they share a synopsis or paragraph (up to `normalize`) that at
    most `link` source packages share. A package missing from `source_of` is its own source."""
    users: dict[str, set[str]] = defaultdict(set)  # text -> the source packages whose descriptions have it
    for entry in english.values():
        sources = {source_of.get(p, p) for p in entry.packages}
        for text in (entry.description.synopsis, *entry.description.paragraphs):
            users[normalize(text)] |= sources
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for sources in users.values():
        if len(sources) <= link:
            first, *rest = sorted(sources)
            for other in rest:
                parent[root(other)] = root(first)
    name: dict[str, str] = {}
    for source in sorted(set().union(*users.values())):
        name.setdefault(root(source), source)
    return {p: name[root(source_of.get(p, p))] for entry in english.values() for p in entry.packages}


def translation_pairs(english: dict[str, Entry], translated: dict[str, Entry],
                      family: dict[str, str]) -> list[Pair]:
    """The synopsis pair of every aligned description, and its paragraph pairs when both sides have
    as many paragraphs; source = the translation, target = English. Twins (copies) are left out."""
    pairs = []
    for md5, foreign in translated.items():
        if md5 not in english:
            continue
        original = english[md5]
        group = family[original.packages[0]]
        pairs.append(Pair(foreign.description.synopsis, original.description.synopsis, "synopsis", group))
        if len(foreign.description.paragraphs) == len(original.description.paragraphs):
            pairs += [Pair(f, e, "paragraph", group)
                      for f, e in zip(foreign.description.paragraphs, original.description.paragraphs)]
    return [p for p in pairs if p.source and p.target and normalize(p.source) != normalize(p.target)]


def summary_pairs(english: dict[str, Entry], family: dict[str, str]) -> list[Pair]:
    """English long description (paragraphs one per line) → its synopsis, when the description is
    longer than the synopsis."""
    pairs = []
    for entry in english.values():
        text, summary = "\n".join(entry.description.paragraphs), entry.description.synopsis
        if summary and len(text.split()) > len(summary.split()):
            pairs.append(Pair(text, summary, "summary", family[entry.packages[0]]))
    return pairs


def write_pair_sets(out_dir: Path, pairs: Iterable[Pair], fields: tuple[str, str], stems: dict[str, str],
                    seed: int = SEED) -> Counts:
    """Deduplicate `pairs` on both sides, split them by family and write ``{train,dev,test}.jsonl``
    with `fields` as the names of source and target; plus ``<stem>.{train,dev,test}.jsonl`` with the
    pairs of each kind in `stems` ({kind: stem})."""
    kept = unique_each(pairs, lambda p: (normalize(p.source), normalize(p.target)))
    split = split_by_group(kept, lambda p: p.family, seed)
    parts = without_near_twins(split, lambda p: (p.source, p.target))
    log.info(f"{len(kept)} pairs after deduplication; dev and test without the "
             f"{len(split[1]) + len(split[2]) - len(parts[1]) - len(parts[2])} that have a template twin in train")

    def as_records(part: Sequence[Pair], kind: str | None = None) -> Iterator[dict]:
        return ({fields[0]: p.source, fields[1]: p.target} for p in part if kind in (None, p.kind))

    counts = write_parts(out_dir, "", [as_records(part) for part in parts])
    for kind, stem in stems.items():
        counts.update(write_parts(out_dir, stem, [as_records(part, kind) for part in parts]))
    return counts


@dataclass
class Archive:
    """What the DDTP sets are built from: the English descriptions, the families of their packages,
    and the translated descriptions of some languages."""
    english: dict[str, Entry]
    family: dict[str, str]
    translated: dict[str, dict[str, Entry]]

    @classmethod
    def from_texts(cls, english: str, packages: str, translated: dict[str, str]) -> "Archive":
        """From the texts of Translation-en, Packages and ``{lang: Translation-<lang>}``."""
        english_entries = descriptions(english, "en")
        return cls(english_entries, families(english_entries, source_packages(packages)),
                   {lang: descriptions(text, lang) for lang, text in translated.items()})

    @classmethod
    def download(cls, downloads: Path, langs: Sequence[str] = ()) -> "Archive":
        """Download (or reuse) the index files of bookworm main, then read them."""
        paths = [ENGLISH, PACKAGES] + [f"main/i18n/Translation-{lang}" for lang in langs]
        files = debian_index_files(paths, downloads)
        log.info("reading the Debian indexes ...")
        return cls.from_texts(read_index(files[ENGLISH]), read_index(files[PACKAGES]),
                              {lang: read_index(files[path]) for lang, path in zip(langs, paths[2:])})


def convert_translation(archive: Archive, lang: str, out_dir: Path, extra: Iterable[Pair] = (),
                        extra_stems: dict[str, str] | None = None, seed: int = SEED) -> Counts:
    """``{train,dev,test}.jsonl`` ({"source": <lang>, "target": English}: synopses, paragraphs and
    `extra` pairs), and each kind alone (``synopses.*``, ``paragraphs.*``, `extra_stems`)."""
    pairs = translation_pairs(archive.english, archive.translated[lang], archive.family)
    log.info(f"{len(archive.translated[lang])} {lang} descriptions, {len(pairs)} aligned pairs before deduplication")
    return write_pair_sets(out_dir, [*pairs, *extra], TRANSLATION_FIELDS, {**TRANSLATION_STEMS, **(extra_stems or {})},
                           seed)


class TranslationSet:
    """A DDTP translation set, declared as a dataset module is (NAME, SOURCE, recipe)."""

    def __init__(self, lang: str, name: str, language: str):
        self.lang, self.NAME = lang, name
        self.SOURCE = {
            "from": f"Debian {DEBIAN_SUITE} main/i18n/Translation-{lang} and -en (DDTP), aligned by Description-md5",
            "licence": LICENCE,
            "gives": f"{name}/{{train,dev,test}}.jsonl with source ({language}) / target (English); "
                     "synopses.* and paragraphs.* alone",
        }

    def recipe(self, downloads: Path, tmp: Path, out: Path) -> Counts:
        archive = Archive.download(downloads, [self.lang])
        log.info(f"converting {self.NAME} ...")
        return convert_translation(archive, self.lang, out)


FR_EN = TranslationSet("fr", "fr-en", "French")
JA_EN = TranslationSet("ja", "ja-en", "Japanese")
ZH_EN = TranslationSet("zh_CN", "zh-en", "Chinese")
