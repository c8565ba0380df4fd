"""Settings: dataclasses whose fields are declared once, with their default, type and help.

A `Settings` subclass is one section of a run (model / data / train, or a task's own settings).
Everything else is generated from its fields: validation of value types, `from_dict` with unknown
keys named (and a close match suggested), `to_dict` for run files, and the command-line flags
(`plmkit.cli.flags`). Declare a field with `setting`:

    @dataclass
    class DataSettings(Settings):
        section = "data"
        seq_len: int = setting(128, "tokens per example, specials included", at_least=8)
        corpus: list[str] = setting(help="text files or directories", default_factory=list)
        mask_rate: float = setting(0.15, "fraction of tokens masked", above=0, below=1)

        def validate(self):  # checks across fields; each field's type and range are checked before
            self.need(self.seq_len > 2 * self.mask_rate, "...")

Every value is checked where it enters, before `validate`: its type (an int passes for a float, a
path for a str; list and tuple items too), floats must be finite, and the range a field declares
(`at_least`, `above`, `at_most`, `below`; tuple items each). The error is one line naming the
section, the field and its flag.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import MISSING, field
from typing import Any, ClassVar, Mapping

from plmkit.errors import ConfigError

_SCALARS = (bool, int, float, str)


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
            flags: tuple[str, ...] = (), choices: tuple | None = None, metavar: str | None = None,
            cli: bool = True, const_flags: Mapping[str, Any] | None = None, required: bool = False,
            at_least: float | None = None, above: float | None = None, at_most: float | None = None,
            below: float | None = None, shapes_run: bool = True, fixed_on_resume: bool = False,
            in_run_file: bool = True):
    """A dataclass field with what its command-line flag needs.

    flags: the flag and its aliases (default ``--field-name``; old spellings go here so they keep
    working); const_flags: extra flags that set a fixed value (``{"--cased": False}``);
    cli=False: run files only (no flag); required: a run must give it (None is refused; the help
    says "required" instead of a default); at_least / above / at_most / below: the range of a
    number (None always passes); shapes_run=False: a change on ``--resume`` leaves the run the same
    (logging, checkpoint cadence, the device), so the resume check does not compare it;
    fixed_on_resume=True: it can never change on a resume, even when changes are accepted (the model's
    shape, its adapters: the checkpoint's weights and optimizer state are of the old value);
    in_run_file=False: what this one command does (``--resume``, ``--overwrite``), not a setting of
    the run: left out of the saved run file, so that replaying it does not do it again."""
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("at_most", at_most), ("below", below))
              if v is not None}
    metadata = {"help": help, "flags": tuple(flags), "choices": choices, "metavar": metavar, "cli": cli,
                "const_flags": dict(const_flags or {}), "required": required, "bounds": bounds,
                "shapes_run": shapes_run, "fixed_on_resume": fixed_on_resume, "in_run_file": in_run_file}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Settings:
    """Base of every settings dataclass (subclasses are ``@dataclass``es)."""

    section: ClassVar[str] = ""  # its name in run files and error messages
    # pairs of fields that say the same thing two ways: a value given for one of them at a later
    # layer (run file over defaults, flag over run file) drops the other's earlier value
    alternatives: ClassVar[tuple[tuple[str, str], ...]] = ()
    # the name of a dict field that takes the keys no field declares (a model's family config
    # fields, say), written back flat by `to_dict`; `validate` checks them (see `check_known`)
    extras: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and _origin(self, f.name) is tuple:
                setattr(self, f.name, tuple(value))  # lists from YAML/JSON
        check_field_types(self, self.where(), self._named)
        for f in dataclasses.fields(self):
            if f.metadata.get("required") and getattr(self, f.name) is None:
                self.need(False, f"{self._named(f.name)} is required")
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if value == "" and f.metadata.get("metavar") in ("DIR", "FILE", "PATH"):
                self.need(False, f"{self._named(f.name)} is empty: give a path")
            problem = out_of_range(value, f.metadata.get("bounds"))
            if problem:
                self.need(False, f"{self._named(f.name)} must be {problem}, got {value!r}")
            if choices and value is not None and value not in choices:
                self.need(False, f"{self._named(f.name)} must be one of {', '.join(map(str, choices))}, got {value!r}")
        self.validate()

    @classmethod
    def _named(cls, name: str) -> str:
        """A field as errors name it: ``batch_size (--batch-size)``."""
        try:
            spellings = cls.flag_spellings(name) if next(
                f for f in dataclasses.fields(cls) if f.name == name).metadata.get("cli", True) else ()
        except StopIteration:
            spellings = ()
        return f"{name} ({spellings[0]})" if spellings else name

    def validate(self) -> None:
        """Check values beyond their types (subclasses); raise with `need`."""

    def check_given(self, given: set[str]) -> None:
        """Check what a run gave (`given`: fields that a run file, flags or keyword arguments set to
        something else than their default): a setting that another one makes meaningless is an
        error, not silently ignored (subclasses; `layered` calls it)."""

    def need_with(self, given: set[str], names, ok: bool, because: str) -> None:
        """`need` for each of `names` that was given: an error naming it unless `ok`."""
        for name in names:
            self.need(name not in given or ok, f"{self._named(name)} {because}")

    @classmethod
    def where(cls) -> str:
        return cls.section or cls.__name__

    def need(self, ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{self.where()}: {message}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def flag_spellings(cls, name: str) -> tuple[str, ...]:
        """Every command-line spelling of field `name` (aliases and `const_flags` included)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        return field_flags(f) + tuple(f.metadata.get("const_flags", {}))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None):
        """Build from a plain dict (a run-file section); unknown keys are an error naming them
        (or, with `extras`, go into that field)."""
        where = f"{source}: {cls.where()}" if source else cls.where()
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: must be a mapping of settings, got {type(values).__name__}")
        values = cls._gather_extras(values, where)
        check_known(values, cls.field_names(), where)
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}" if source else str(err)) from None

    @classmethod
    def _gather_extras(cls, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """`values` with the keys no field declares moved into the `extras` field (given flat or nested)."""
        values = dict(values)
        if not cls.extras:
            return values
        nested = values.pop(cls.extras, None) or {}
        if not isinstance(nested, Mapping):
            raise ConfigError(f"{where}: {cls.extras} must be a mapping, got {type(nested).__name__}")
        declared = cls.field_names()
        clash = [k for k in nested if k in declared]
        if clash:
            raise ConfigError(f"{where}: {', '.join(map(repr, clash))} in {cls.extras} is a setting of its own: "
                              f"give it beside {cls.extras}")
        extras = {**nested, **{k: v for k, v in values.items() if k not in declared}}
        return {**{k: v for k, v in values.items() if k in declared}, cls.extras: extras}

    @classmethod
    def layered(cls, *layers: Mapping[str, Any], source: str | None = None, defaults: int = 0):
        """`from_dict` of the layers merged in order (defaults first, flags last); a field given in
        a layer drops its `alternatives` partner given in an earlier one. The first `defaults` layers
        are defaults: what the others set to another value is checked by `check_given` (an effective
        run file read back gives every field, most at their defaults)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            layer = cls._flat(layer)
            for a, b in cls.alternatives + tuple((b, a) for a, b in cls.alternatives):
                if layer.get(a) is not None and b not in layer:
                    merged.pop(b, None)
            merged.update(layer)
        settings = cls.from_dict(merged, source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        default = {name: field_default_value(f) for name, f in fields.items()}
        for layer in layers[:defaults]:
            default.update(cls._flat(layer))
        given = {name for layer in layers[defaults:] for name in cls._flat(layer)
                 if name in fields and _plain(getattr(settings, name)) != _plain(default[name])}
        settings.given = given  # (for the run's checks across sections)
        try:
            settings.check_given(given)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}" if source else str(err)) from None
        return settings

    @classmethod
    def _flat(cls, layer: Mapping[str, Any]) -> Mapping[str, Any]:
        """A layer with a nested `extras` dict spread out, so layers merge key by key."""
        if not cls.extras or not isinstance(layer.get(cls.extras), Mapping):
            return layer
        return {**{k: v for k, v in layer.items() if k != cls.extras}, **layer[cls.extras]}

    def to_dict(self) -> dict[str, Any]:
        """Plain values that `from_dict` accepts back (YAML/JSON friendly); `extras` written flat."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if self.extras:
            values.update(values.pop(self.extras))
        return values


def field_default_value(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def _plain(value: Any) -> Any:
    """A value compared as a run file writes it (tuples as lists)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_known(values: Mapping[str, Any], known: list[str], where: str) -> None:
    """ConfigError naming the keys of `values` that are not in `known`, with a close match each."""
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; known: {', '.join(sorted(known))}")


def field_flags(f: dataclasses.Field) -> tuple[str, ...]:
    """A field's flag and its aliases: those declared with `setting(flags=...)`, else ``--field-name``."""
    return f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)


def scalar_types(hint: Any) -> tuple[type, ...]:
    """The types a field's hint allows (``int | None`` -> (int, NoneType)); () if not all scalars."""
    allowed = typing.get_args(hint) if is_union(hint) else (hint,)
    return allowed if all(t in _SCALARS or t is type(None) for t in allowed) else ()


def check_field_types(config: Any, where: str, named=lambda name: name) -> None:
    """Refuse a field whose value has the wrong type (a quoted number in a run file, say), naming the
    field (as `named` spells it). An int passes for a float (and becomes one), a path for a str (and
    becomes one); a float must be finite; lists and tuples of scalars are checked item by item (a
    tuple of fixed length for its length too); other types are left to the caller."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        checked = _checked(value, hints[f.name])
        if checked is _WRONG:
            wanted = "a finite number" if _non_finite(value) else describe_type(hints[f.name])
            raise ConfigError(f"{where}: {named(f.name)} must be {wanted}, got {value!r} ({type(value).__name__})")
        if checked is not value:
            object.__setattr__(config, f.name, checked)


_WRONG = object()


def _checked(value: Any, hint: Any) -> Any:
    """`value` as a field of type `hint` holds it (ints as floats, paths as strs), or _WRONG; types
    other than scalars and lists/tuples of them pass unchecked."""
    options = typing.get_args(hint) if is_union(hint) else (hint,)
    if value is None:
        return value if type(None) in options else _WRONG
    for option in options:
        if option in _SCALARS:
            if option is bool:
                if isinstance(value, bool):
                    return value
            elif option is int:
                if is_int(value):
                    return value
            elif option is float:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return float(value) if math.isfinite(value) else _WRONG
            elif isinstance(value, str) or isinstance(value, os.PathLike):
                return os.fspath(value) if isinstance(value, os.PathLike) else value
            continue
        origin, items = typing.get_origin(option), typing.get_args(option)
        if not (origin in (list, tuple) and items and all(i in _SCALARS or i is Ellipsis for i in items)):
            if option is not type(None):
                return value  # a type this check does not know (a tuple of tuples ...): the caller's
            continue
        if origin is list and items[0] is str and isinstance(value, (str, os.PathLike)):
            value = [value]  # one path where a list of paths goes
        if not isinstance(value, (list, tuple)):
            continue
        kinds = [items[0]] * len(value) if origin is list or items[-1] is Ellipsis else list(items)
        if len(kinds) != len(value):
            continue
        out = [_checked(v, k) for v, k in zip(value, kinds)]
        if any(v is _WRONG for v in out):
            continue
        return list(out) if origin is list else tuple(out)
    return _WRONG


def _non_finite(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(map(_non_finite, value))
    return isinstance(value, float) and not math.isfinite(value)


def describe_type(hint: Any) -> str:
    """'int or None', 'a list of str', 'two float' ... for error messages."""
    options = typing.get_args(hint) if is_union(hint) else (hint,)
    words = []
    for option in options:
        origin, items = typing.get_origin(option), typing.get_args(option)
        if option is type(None):
            words.append("None")
        elif origin is list and items:
            words.append(f"a list of {items[0].__name__}")
        elif origin is tuple and items and items[-1] is Ellipsis:
            words.append(f"a list of {items[0].__name__}")
        elif origin is tuple and items:
            words.append(f"{len(items)} values ({', '.join(i.__name__ for i in items)})")
        else:
            words.append(getattr(option, "__name__", str(option)))
    return " or ".join(words)


def out_of_range(value: Any, bounds: Mapping[str, float] | None) -> str | None:
    """What the range `bounds` ({at_least, above, at_most, below}) asks of `value` when it is not in
    it ("in [0, 1)", ">= 1"), else None; None values pass, list/tuple items are each checked."""
    if not bounds or value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, (list, tuple)):
        return next((p for p in (out_of_range(v, bounds) for v in value) if p), None)
    low = ("[", bounds["at_least"]) if "at_least" in bounds else ("(", bounds["above"]) if "above" in bounds else None
    high = ("]", bounds["at_most"]) if "at_most" in bounds else (")", bounds["below"]) if "below" in bounds else None
    ok = ((low is None or (value >= low[1] if low[0] == "[" else value > low[1]))
          and (high is None or (value <= high[1] if high[0] == "]" else value < high[1])))
    if ok:
        return None
    if low and high:
        return f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    return f"{'<=' if high[0] == ']' else '<'} {_number(high[1])}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def _origin(config: Any, name: str):
    hint = typing.get_type_hints(type(config))[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if is_union(hint) else [hint]
    return typing.get_origin(args[0]) if len(args) == 1 else None


__all__ = ["Settings", "check_field_types", "check_known", "describe_type", "field_flags", "is_int", "is_union",
           "out_of_range", "scalar_types", "setting"]
