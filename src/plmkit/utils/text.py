"""Reading user text files: UTF-8 with named errors, lines split on newlines only, JSON lines.

Lines end at ``\\n`` (and ``\\r\\n``) and nowhere else. ``str.splitlines`` also breaks at U+0085,
U+2028, U+2029, form feeds and other separators that a JSON string may hold raw
(``json.dumps(..., ensure_ascii=False)`` writes them unescaped), so it would cut valid records.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from plmkit.errors import DataError


def split_lines(text: str) -> list[str]:
    """`text` cut at ``\\n`` / ``\\r\\n`` only; no empty last line for a trailing newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def decode_utf8(raw: bytes, where) -> str:
    """`raw` as text (a UTF-8 BOM dropped); DataError naming `where`:line if it is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{where}:{line}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); "
                        "re-save the file as UTF-8") from None


def read_utf8(path: str | Path) -> str:
    """The file's text (a UTF-8 BOM dropped); DataError naming file:line if it is not UTF-8."""
    return decode_utf8(Path(path).read_bytes(), path)


def check_file(path, argument: str = "the data") -> Path:
    """`path` as a Path to an existing file; DataError saying what it is otherwise (not a path, an
    empty string, a directory, nothing); `argument` names it when it is no path at all."""
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"{argument} must be the path of a data file, got {describe(path)}")
    if str(path) == "":
        raise DataError("empty path: give the data file's name")
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a data file in it")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path


def read_text(path: str | Path) -> str:
    """The file's text; DataError if it is missing (or no file), not UTF-8 or empty."""
    path = check_file(path)
    return _not_empty(read_utf8(path), f"{path}: the file is empty")


def read_stdin() -> str:
    """Standard input's text, read as files are (UTF-8, a BOM dropped); DataError if it is empty."""
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    return _not_empty(decode_utf8(raw, "<stdin>"), "<stdin>: no input (stdin is empty)")


def stdin_lines() -> Iterator[str]:
    """Standard input's lines as they arrive (for answers streamed line by line), decoded as files
    are (UTF-8, a BOM dropped); DataError naming ``<stdin>:line`` for one that is not UTF-8."""
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
    for number, raw in enumerate(iter(stream.readline if stream else sys.stdin.readline, b"" if stream else ""), 1):
        raw = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"<stdin>:{number}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); "
                            "send UTF-8") from None
        yield text.rstrip("\n").rstrip("\r")


def _not_empty(text: str, message: str) -> str:
    if not text.strip():
        raise DataError(message)
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
