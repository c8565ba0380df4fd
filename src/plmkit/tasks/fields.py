"""Checked fields of task records (JSONL rows, SQuAD entries, Python dicts), one helper per kind of check.

Every value is checked where it enters, by its JSON type first: a string where a number belongs is
"must be an integer, got str '23'", not a wrong position later; nothing is converted silently. An
error is one line naming the record (``file:line``, or for Python inputs the argument and record
number) and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from plmkit.errors import DataError
from plmkit.utils.settings import is_int
from plmkit.utils.text import describe, lone_surrogate


@dataclass(frozen=True)
class Kind:
    """What a field must hold: `wanted` for messages, `problem(value)` -> what is wrong, or None."""

    wanted: str
    problem: Callable[[Any], str | None]


def _text(value) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {describe(value)}"
    return lone_surrogate(value) or (None if value.strip() else "is empty")


def _words(value) -> str | None:
    if not isinstance(value, list):
        return f"must be a list of strings, got {describe(value)}"
    if not value:
        return "is an empty list"
    bad = next((i for i, w in enumerate(value) if _text(w)), None)
    return None if bad is None else f"item {bad} {_text(value[bad])}"


def _id(value) -> str | None:
    if is_int(value):
        return None
    return _text(value) if isinstance(value, str) else f"must be a string or an integer, got {describe(value)}"


def _simple(wanted: str, test: Callable[[Any], bool]) -> Kind:
    """A kind that only its type decides."""
    return Kind(wanted, lambda v: None if test(v) else f"must be {wanted}, got {describe(v)}")


TEXT = Kind("a non-empty string", _text)
STRING = _simple("a string", lambda v: isinstance(v, str))
INTEGER = _simple("an integer", is_int)
BOOLEAN = _simple("true or false", lambda v: isinstance(v, bool))
LIST = _simple("a list", lambda v: isinstance(v, list))
ID = Kind("a string or an integer", _id)
WORDS = Kind("a non-empty list of non-empty strings", _words)


def field(row: dict, key: str, where: str, kind: Kind, required: bool = True, name: str | None = None):
    """`row[key]` checked against `kind`; None when it is absent or null and not `required`.
    `name` is how errors call the field (default ``'key'``)."""
    name = name or f"'{key}'"
    if row.get(key) is None and not required:
        return None
    if key not in row:
        raise DataError(f"{where}: no {name} field ({kind.wanted})")
    return checked(row[key], kind, where, name)


def checked(value, kind: Kind, where: str, name: str):
    """`value` if it is of `kind`; DataError naming `where` and the field's `name` otherwise."""
    problem = f"is null; it must be {kind.wanted}" if value is None else kind.problem(value)
    if problem:
        raise DataError(f"{where}: {name} {problem}")
    return value


def only_one(row: dict, keys: tuple[str, ...], where: str) -> str | None:
    """The one of `keys` that `row` gives (not null), None if none; two of them (text and tokens,
    relation and label ...) are an error, not one silently winning."""
    given = [k for k in keys if row.get(k) is not None]
    if len(given) > 1:
        raise DataError(f"{where}: give one of {', '.join(repr(k) for k in given)}, not both")
    return given[0] if given else None


def check_unique(items: Iterable[tuple[Any, str]], what: str, where: str = "", seen: dict | None = None) -> None:
    """Refuse the first value of (value, place) pairs seen twice, naming both places; `seen` carries
    the places of values checked before (one dict passed to several calls checks them as one list)."""
    seen = {} if seen is None else seen
    for value, place in items:
        key = (type(value), value)  # 1 and "1" are different values
        if key in seen:
            raise DataError(f"{where}{place}: {what} {value!r} is also the {what} of {seen[key]}; each must be unique")
        seen[key] = place


# -------------------------------------------------------------------------------- class labels
def class_name(value, where: str, name: str = "'label'") -> tuple[str, str]:
    """(the class name, the JSON type of the label) of one class label: a non-empty string, an
    integer, or true/false (the classes "true" / "false")."""
    if isinstance(value, bool):
        return str(value).lower(), "boolean"
    if is_int(value):
        return str(value), "integer"
    if isinstance(value, str):
        return checked(value, TEXT, where, name), "string"
    raise DataError(f"{where}: {name} must be a string, an integer or true/false, got {describe(value)}")


class LabelTypes:
    """The JSON types of a file's labels, with the first line of each: labels of one file must all
    have one type, since 1 and "1" (or true and "true") would be read as the same class."""

    def __init__(self):
        self.first: dict[str, int] = {}

    def add(self, kind: str, line: int) -> None:
        self.first.setdefault(kind, line)

    def check(self, path, what: str = "label") -> None:
        if len(self.first) > 1:
            kinds = ", ".join(f"{k} (first at line {n})" for k, n in self.first.items())
            raise DataError(f"{path}: {what}s mix kinds: {kinds}; give every {what} the same JSON type "
                            "(1 and \"1\" would be one class)")


# -------------------------------------------------------------------------------- records of a prediction
def records_of(inputs, argument: str = "inputs") -> list:
    """A list of prediction records from a Python argument: a list (or other iterable) of dicts
    or texts; a lone string, dict or None is refused, not read character by character."""
    if inputs is None or isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        hint = "; wrap one record in a list" if isinstance(inputs, (str, dict)) else ""
        raise DataError(f"{argument} must be a list of records (dicts or texts), got {describe(inputs)}{hint}")
    return list(inputs)


def each_record(records: list, where: str, lines: list[int] | None = None,
                text_field: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line, record as a dict) of prediction records: `lines` are the file lines they start on,
    else (Python inputs) their numbers from 1. With `text_field`, a bare string is
    ``{text_field: string}``."""
    for k, record in enumerate(records, 1):
        n = lines[k - 1] if lines is not None else k
        if isinstance(record, str) and text_field is not None:
            record = {text_field: record}
        if not isinstance(record, dict):
            wanted = "a JSON object" if lines is not None else "a dict" + (" or a string" if text_field else "")
            raise DataError(f"{where}:{n}: expected {wanted}, got {describe(record)}")
        yield n, record


__all__ = ["BOOLEAN", "ID", "INTEGER", "Kind", "LIST", "LabelTypes", "STRING", "TEXT", "WORDS", "check_unique",
           "checked", "class_name", "each_record", "field", "only_one", "records_of"]
