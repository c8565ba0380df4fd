"""Read plain-text corpora as a stream of documents, and split text into sentences.

Supported files (given directly, or found recursively in a directory, sorted):

* ``.txt`` / ``.txt.gz``: UTF-8 text; documents are paragraphs, i.e. runs of
  non-blank lines separated by one or more blank lines. A file without blank
  lines is therefore one document. Lines inside a document keep their ``\\n``.
* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line with a string ``text``
  field (other fields are ignored, blank lines are skipped). Other fields can be read
  instead (`fields`), each a document of its own; ``fields="auto"`` reads both sides of
  translation (``source``/``target``) and summarization (``text``/``summary``) records.

Files are read line by line (gzip is decompressed on the fly), never whole.
Whitespace-only documents are skipped.
"""
from __future__ import annotations

import gzip
import logging
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

from plmkit.errors import ConfigError, DataError
from plmkit.utils.text import parse_json

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")  # the files with fields; the others are plain text
READ_REPORT_BYTES = 1 << 16  # on_read is called about this often
# The two sides of a record that fields="auto" reads: translation, summarization.
PAIRED_FIELDS = (("source", "target"), ("text", "summary"))
AUTO_FIELDS = "auto"
Fields = Union[Sequence[str], str]  # field names, or AUTO_FIELDS


@dataclass(frozen=True)
class Document:
    """One document: its text and where it starts (``"path:line"``)."""

    text: str
    source: str


def iter_documents(paths: PathLike | Iterable[PathLike], on_read: Callable[[int], None] | None = None,
                   fields: Fields = ("text",)) -> Iterator[Document]:
    """Yield the documents of every corpus file in `paths` (files or directories).

    `on_read(n)`, if given, is told as reading goes that n more bytes of the files on disk were
    read (compressed bytes for .gz); over a whole pass the calls add up to the files' sizes.
    `fields`: the string fields of a JSONL record to read, each a document of its own, in this
    order; "auto" (`AUTO_FIELDS`): both sides of a record shaped as one of `PAIRED_FIELDS`,
    else "text". Plain-text files have no fields: their paragraphs are the documents.
    Raises DataError for a missing path, an unsupported file, malformed JSONL, a record
    without the fields, non-UTF-8 bytes, or when no document at all was found ("empty corpus").
    """
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if isinstance(fields, str) and fields != AUTO_FIELDS:
        fields = (fields,)
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise ConfigError(f"fields={fields!r}: name one or more JSONL fields to read, or {AUTO_FIELDS!r}")
    found = False
    for file in corpus_files(roots):
        if file.name.endswith(JSONL_SUFFIXES):
            docs = _read_jsonl(file, on_read, fields)
        else:
            docs = _read_txt(file, on_read)
        for doc in docs:
            found = True
            yield doc
    if not found:
        listed = ", ".join(str(p) for p in roots) or "(no paths given)"
        raise DataError(f"empty corpus: no documents in {listed}; "
                        f"give files or directories holding non-empty {', '.join(SUFFIXES)} files")


def iter_texts(paths: PathLike | Iterable[PathLike], fields: Fields = ("text",)) -> Iterator[str]:
    """Yield only the text of each document (see `iter_documents`)."""
    for doc in iter_documents(paths, fields=fields):
        yield doc.text


_REPORTED_REPEATS: set[Path] = set()  # the files reached twice that a warning named already


def corpus_files(roots: list[PathLike]) -> Iterator[Path]:
    """The corpus files of `roots` (files, and the files of directories, sorted); a missing path or a
    file of another kind is an error naming it. A file reached twice (a directory and a file in it,
    a link) is read once, where first reached: its documents would be duplicated, and could land on
    both sides of a held-out split."""
    seen: set[Path] = set()
    for file in _listed_files(roots):
        resolved = file.resolve()
        if resolved in seen:
            if resolved not in _REPORTED_REPEATS:  # once, not at every pass over the corpus
                _REPORTED_REPEATS.add(resolved)
                log.warning("%s: this corpus file was already reached through another path; it is read once", file)
            continue
        seen.add(resolved)
        yield file


def _listed_files(roots: list[PathLike]) -> Iterator[Path]:
    """`corpus_files`, repeats included."""
    for root in map(Path, roots):
        if root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        elif not root.exists():
            raise DataError(f"{root}: no such file or directory; check the corpus path")
        elif not root.is_file():
            raise DataError(f"{root}: not a regular file (a pipe or a device?); a corpus is read more than once "
                            "(its fingerprint, then its text): save it to a file")
        elif not root.name.endswith(SUFFIXES):
            raise DataError(f"{root}: unsupported corpus file; use one of {', '.join(SUFFIXES)}")
        else:
            yield root


def _lines(file: Path, on_read: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its line ending); see `iter_documents`
    for `on_read`.

    Non-UTF-8 bytes raise DataError with the byte offset (in the decompressed
    stream for .gz files) of the first bad byte.
    """
    gz = file.name.endswith(".gz")
    offset = reported = 0
    try:
        with open(file, "rb") as disk, (gzip.GzipFile(fileobj=disk) if gz else nullcontext(disk)) as stream:
            for number, raw in enumerate(stream, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    where = " of the decompressed data" if gz else ""
                    raise DataError(
                        f"{file}: not UTF-8 at byte offset {offset + err.start}{where} (line {number}); "
                        f"re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                offset += len(raw)
                if on_read is not None and (position := disk.tell()) - reported >= READ_REPORT_BYTES:
                    on_read(position - reported)
                    reported = position
                yield number, line.rstrip("\r\n")
            if on_read is not None:
                on_read(disk.tell() - reported)
    except (OSError, EOFError) as err:
        raise DataError(f"{file}: cannot read it ({err}); check that the file is complete"
                        f"{' gzip data' if file.name.endswith('.gz') else ''}") from None


def _read_txt(file: Path, on_read=None) -> Iterator[Document]:
    start, lines = 0, []
    for number, line in _lines(file, on_read):
        if line.strip():
            if not lines:
                start = number
            lines.append(line.rstrip())
        elif lines:
            yield Document("\n".join(lines), f"{file}:{start}")
            lines = []
    if lines:
        yield Document("\n".join(lines), f"{file}:{start}")


def _read_jsonl(file: Path, on_read=None, fields: Fields = ("text",)) -> Iterator[Document]:
    for number, line in _lines(file, on_read):
        if not line.strip():
            continue
        record = parse_json(line, file, line=number, hint="; each line must be one JSON object")
        for name in _record_fields(record, fields):
            text = record.get(name) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise _field_error(f"{file}:{number}", record, name, fields)
            if text.strip():
                yield Document(text, f"{file}:{number}")


def _record_fields(record, fields: Fields) -> Sequence[str]:
    if fields != AUTO_FIELDS:
        return fields
    shape = [pair for pair in PAIRED_FIELDS if isinstance(record, dict) and all(k in record for k in pair)]
    return shape[0] if shape else ("text",)


def _field_error(where: str, record, name: str, fields: Fields) -> DataError:
    """The error for a record whose field `name` is missing or not a string."""
    if not isinstance(record, dict):
        got = f"no {name!r} field (the line is a JSON {type(record).__name__}, not an object)"
    elif name not in record:
        got = f"no {name!r} field (it has {', '.join(map(repr, record)) or 'none'})"
    else:
        got = f"{name!r} is {type(record[name]).__name__}"
    if fields == AUTO_FIELDS:
        pairs = ", ".join("/".join(pair) for pair in PAIRED_FIELDS)
        need = f'a string field "text", or both sides of a pair ({pairs}), or name its fields with --fields'
    else:
        need = ("a string field " if len(fields) == 1 else "string fields ") + ", ".join(f'"{n}"' for n in fields)
    return DataError(f"{where}: {got}; each line needs {need}")


# --- sentences ----------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CLOSE = "\"'\u201d\u2019\u300d\u300f\uff09\u300b\u3011)\\]"  # " ' ” ’ 」 』 ） 》 】 ) ]
_OPEN = "\"'\u201c\u2018\u300c\u300e\uff08\u300a\u3010(\\["
_TERMINATOR = re.compile(rf"(?:[\u3002\uff01\uff1f\uff1b]+|[.!?\u2026]+)[{_CLOSE}]*")
_ZH_TERMINATORS = "\u3002\uff01\uff1f\uff1b"  # 。！？；
_IS_CJK = re.compile(rf"[{_CJK}{_OPEN}]")
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)*[A-Za-z]$")  # "J", "U.S", "e.g"
ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof st sr jr rev hon gen col capt lt sgt maj cmdr gov pres sen rep
    mt ft vs etc cf approx dept jan feb mar apr jun jul aug sep sept oct nov dec
    vol ch p pp eds inc ltd corp e.g i.e viz
""".split())  # never ordinary words ("co": "Co." ends a firm's name as often as a sentence, left out)
# also ordinary words or names ("The answer was no.", "I met Ed."): abbreviations before a number only
NUMBER_ABBREVIATIONS = frozenset("no nos fig figs ed est".split())  # "No. 5", "Fig. 2", "ed. 1999", "est. 1901"


def split_sentences(text: str) -> list[str]:
    """Split English, Chinese or mixed text into sentences (stripped, non-empty).

    * A line break ends a sentence (verse, speaker names, lists) unless the next
      line starts with a lowercase letter: that is wrapped prose, joined with a space.
    * ``。！？；`` (and closing quotes/brackets after them) always end a sentence.
    * ``. ! ? …`` end one when followed by whitespace and not by a lowercase
      word, or when they sit between Chinese characters ("好.而且").
      A "." after a known abbreviation ("Mr.", "etc.") or an initial ("J.",
      "U.S.") does not; decimals ("3.14") never match, as no space follows.
    """
    sentences: list[str] = []
    for line in _join_wrapped_lines(text):
        start = 0
        for match in _TERMINATOR.finditer(line):
            if _ends_sentence(line, match):
                sentences.append(line[start:match.end()].strip())
                start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _join_wrapped_lines(text: str) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if lines and line[0].islower():
            lines[-1] += " " + line
        else:
            lines.append(line)
    return lines


def _abbreviation(words: list[str], rest: str) -> bool:
    """Whether the "." after the last of `words` (the line's words before it) ends an abbreviation or an
    initial rather than a sentence, `rest` being the text after it (from its next word on)."""
    word = words[-1].lstrip("\"'(\u201c\u2018[") if words else ""
    lower = word.lower()
    if lower in ABBREVIATIONS or (_INITIALS.match(word) and word != "I"):
        return True
    if lower in NUMBER_ABBREVIATIONS:
        return rest[:1].isdigit()
    return lower == "al" and len(words) > 1 and words[-2].lower() == "et"  # "et al."


def _ends_sentence(line: str, match: re.Match) -> bool:
    mark, end = match.group(), match.end()
    if mark[0] in _ZH_TERMINATORS:
        return True
    if end == len(line):
        return True
    following = line[end]
    if following.isspace():
        rest = line[end:].lstrip()
        if rest[:1].islower():
            return False
        if mark == "." and _abbreviation(line[:match.start()].split(), rest):
            return False
        return True
    before = line[match.start() - 1] if match.start() else ""
    return bool(_IS_CJK.match(before) and _IS_CJK.match(following))
