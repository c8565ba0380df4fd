"""Reading user text files: UTF-8 with named errors, lines split on newlines only, JSON lines.

Lines end at ``\\n`` (and ``\\r\\n``) and nowhere else. ``str.splitlines`` also breaks at U+0085,
U+2028, U+2029, form feeds and other separators that a JSON string may hold raw
(``json.dumps(..., ensure_ascii=False)`` writes them unescaped), so it would cut valid records.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

from plmkit.errors import ConfigError, DataError


def split_lines(text: str) -> list[str]:
    """`text` cut at ``\\n`` / ``\\r\\n`` only; no empty last line for a trailing newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def bad_byte(raw: bytes, err: UnicodeDecodeError) -> int:
    """Where in `raw` the byte that a ``utf-8-sig`` decoding refused is: `err` counts from after the BOM."""
    return err.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)


def decode_utf8(raw: bytes, where) -> str:
    """`raw` as text (a UTF-8 BOM dropped); DataError naming `where`:line if it is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        at = bad_byte(raw, err)
        line = raw[:at].count(b"\n") + 1
        raise DataError(f"{where}:{line}: not UTF-8 text (byte {at}: {raw[at:at + 1]!r}); "
                        "re-save the file as UTF-8") from None


def read_utf8(path: str | Path) -> str:
    """The file's text (a UTF-8 BOM dropped); DataError naming file:line if it is not UTF-8. A pipe or a
    device (``<(cmd)``, a FIFO, /dev/stdin) is read as it streams: one that sends bytes that are not
    UTF-8 or a NUL byte (/dev/urandom, /dev/zero) is refused at once, not read without end."""
    path = Path(path)
    if path.is_file():
        return decode_utf8(path.read_bytes(), path)
    chunks, check = [], codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            chunks.append(chunk)
            try:
                check.decode(chunk)
            except UnicodeDecodeError:
                decode_utf8(b"".join(chunks), path)  # raises, naming the line
            if b"\0" in chunk:
                raise DataError(f"{path}: sends NUL bytes, which no text holds (a device such as /dev/zero?)")
    return decode_utf8(b"".join(chunks), path)


def check_path(path, argument: str, what: str = "a directory", error: type[Exception] = ConfigError) -> Path:
    """`path` as a Path: a str or PathLike that is not empty (an empty one would mean the current
    directory); `error` naming `argument` and `what` it must be otherwise."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise error(f"{argument} must be the path of {what}, got {describe(path)}")
    if os.fspath(path) == "":
        raise error(f"empty path for {argument}: give the name of {what}")
    return Path(path)


def check_file(path, argument: str = "the data") -> Path:
    """`path` as a Path to an existing file; DataError saying what it is otherwise (not a path, an
    empty string, a directory, nothing); `argument` names it when it is no path at all."""
    path = check_path(path, argument, "a data file", DataError)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a data file in it")
    if not (path.is_file() or path.is_fifo() or path.is_char_device()):  # a pipe, <(cmd), /dev/stdin: read once
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
            at = bad_byte(raw, err)
            raise DataError(f"<stdin>:{number}: not UTF-8 text (byte {at}: {raw[at:at + 1]!r}); "
                            "send UTF-8") from None
        yield text.rstrip("\n").rstrip("\r")


def _not_empty(text: str, message: str) -> str:
    if not text.strip():
        raise DataError(message)
    return text


def read_lines(path: str | Path) -> list[str]:
    """The file's lines without line ends; DataError if it is missing, not UTF-8 or empty."""
    return split_lines(read_text(path))


def parse_json(text: str, where, error: type[Exception] = DataError, line: int = 1, hint: str = ""):
    """The JSON value of `text` (the whole file, or one JSON line: `line` is its number), read as
    everywhere in plmkit: a key given twice in one object is an error (json keeps the last one
    silently), and so is malformed JSON; both as `error` naming ``where:line:column``, with `hint`
    (what the file should hold) after a malformed one."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as err:
        raise error(f"{where}:{line + err.lineno - 1}:{err.colno}: not valid JSON ({err.msg}){hint}") from None
    except _RepeatedKey:
        key, offset = _first_repeated_key(text)
        raise error(f"{where}:{_place(text, offset, line)}: the key {key!r} is given twice in one object; keep one "
                    "of them (the other would be dropped silently)") from None
    except (ValueError, RecursionError) as err:  # valid JSON that Python's reader refuses
        offset, problem = _beyond_limits(text, err)
        raise error(f"{where}:{_place(text, offset, line)}: {problem}") from None
    if _SURROGATE_ESCAPE.search(text) and any(map(lone_surrogate, _strings(value))):
        offset = _lone_escape(text)
        raise error(f"{where}:{_place(text, offset, line)}: {text[offset:offset + 6]} is half a UTF-16 pair, no "
                    "character (no tokenizer takes it); fix or drop it") from None
    return value


def _place(text: str, offset: int, line: int = 1) -> str:
    """'line:column' of `offset` in `text` (whose first line is number `line`)."""
    return f"{line + text.count(chr(10), 0, offset)}:{offset - text.rfind(chr(10), 0, offset)}"


# a JSON string, a number (integer part, fraction, exponent), or a bracket: enough to walk valid JSON
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+)(\.\d+)?([eE][-+]?\d+)?|[\[{]|[\]}]')


def _beyond_limits(text: str, err: Exception) -> tuple[int, str]:
    """(offset, what is wrong) of JSON that `json.loads` refused with `err` though it is valid: an integer
    longer than the digits Python converts (sys.get_int_max_str_digits, 4300 by default: a ValueError), or
    arrays and objects nested deeper than the interpreter's recursion goes (a RecursionError)."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()  # (Python 3.10.7+)
    depth, deepest, at = 0, 0, 0
    for token in _JSON_TOKEN.finditer(text):
        first = token.group()[0]
        if first in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, token.start()
        elif first in "]}":
            depth -= 1
        digits = len((token.group(1) or "").lstrip("-"))
        if isinstance(err, ValueError) and limit and digits > limit and not token.group(2) and not token.group(3):
            return token.start(), (f"an integer of {digits} digits, more than the {limit} Python reads; "
                                   "write it as a string if it is an id or text")
    if isinstance(err, RecursionError):
        return at, f"arrays and objects nested {deepest} deep here, deeper than Python's JSON reader goes"
    return 0, f"not readable JSON ({err})"


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(text: str) -> str | None:
    """What is wrong with `text` if it holds half a UTF-16 pair (a JSON escape such as "\\ud800" alone,
    which is no character: no UTF-8 file holds it, no tokenizer takes it), else None."""
    found = _SURROGATE.search(text)
    return found and (f"holds a lone surrogate {found.group()!r} at character {found.start()} (half a UTF-16 "
                      "pair, no character); fix or drop it")


def _strings(value) -> Iterator[str]:
    """Every str of a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _lone_escape(text: str) -> int:
    """The offset of the first \\uD800-\\uDFFF escape of `text` that is not half of a high-low pair."""
    escapes = list(_SURROGATE_ESCAPE.finditer(text))
    i = 0
    while i + 1 < len(escapes) and escapes[i].group()[3] in "89abAB" and escapes[i + 1].group()[3] in "cdefCDEF" \
            and escapes[i + 1].start() == escapes[i].end():
        i += 2
    return escapes[min(i, len(escapes) - 1)].start()


def read_json(path: str | Path, error: type[Exception] = DataError, hint: str = ""):
    """The JSON value of a file (UTF-8, a BOM dropped), read with `parse_json`; `error` for a file that
    cannot be read, is not UTF-8, not JSON or holds a key twice, naming it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        at = bad_byte(raw, err)
        line = raw[:at].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {at}); re-save the file as UTF-8") from None
    return parse_json(text, path, error, hint=hint)


def read_json_object(path: str | Path, error: type[Exception] = DataError) -> dict:
    """`read_json` of a file that must hold one JSON object (a config file)."""
    value = read_json(path, error)
    if not isinstance(value, dict):
        raise error(f"{path}: must hold a JSON object {{...}}, got {type(value).__name__}")
    return value


class _RepeatedKey(Exception):
    """A key given twice in one object (at `offset` of the text, once `_first_repeated_key` found it)."""

    def __init__(self, key: str = "?", offset: int = 0):
        super().__init__(key)
        self.key, self.offset = key, offset


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    """An object's pairs as a dict; `_RepeatedKey` when a key comes twice (its place is found again by
    `_first_repeated_key`: the hook does not know where the object is)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _RepeatedKey
    return out


_SPACE = re.compile(r"[ \t\n\r]*")


def _first_repeated_key(text: str) -> tuple[str, int]:
    """(key, offset) of the first key given twice in one object of `text` (JSON that parses otherwise)."""
    scan = json.JSONDecoder().scan_once  # (value, end) of the value at an offset

    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()

    def walk(i: int) -> int:  # the end of the value at `i`
        i = skip(i)
        if text[i] not in "{[":
            return scan(text, i)[1]
        close, seen = "}" if text[i] == "{" else "]", set()
        i = skip(i + 1)
        while text[i] != close:
            if close == "}":
                key, end = scan(text, i)
                if key in seen:
                    raise _RepeatedKey(key, i)
                seen.add(key)
                i = skip(end) + 1  # past the colon
            i = skip(walk(i))
            if text[i] == ",":
                i = skip(i + 1)
        return i + 1

    try:
        walk(0)
    except _RepeatedKey as found:
        return found.key, found.offset
    return "?", 0


def parse_json_lines(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; errors name `where`:line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = parse_json(line, where, line=lineno)
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
