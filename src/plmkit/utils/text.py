"""Reading user text files: UTF-8 with named errors, lines split on newlines only, JSON lines.

Lines end at ``\\n`` (and ``\\r\\n``) and nowhere else. ``str.splitlines`` also breaks at U+0085,
U+2028, U+2029, form feeds and other separators that a JSON string may hold raw
(``json.dumps(..., ensure_ascii=False)`` writes them unescaped), so it would cut valid records.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from plmkit.errors import DataError


def split_lines(text: str) -> list[str]:
    """`text` cut at ``\\n`` / ``\\r\\n`` only; no empty last line for a trailing newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_utf8(path: str | Path) -> str:
    """The file's text (a UTF-8 BOM dropped); DataError naming file:line if it is not UTF-8."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); "
                        "re-save the file as UTF-8") from None


def read_text(path: str | Path) -> str:
    """The file's text; DataError if it is missing, not UTF-8 or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_utf8(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def read_lines(path: str | Path) -> list[str]:
    """The file's lines without line ends; DataError if it is missing, not UTF-8 or empty."""
    return split_lines(read_text(path))


def parse_json_lines(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; errors name `where`:line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    return parse_json_lines(read_lines(path), path)


def describe(value) -> str:
    """A value's type and its repr cut to 60 characters, for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
