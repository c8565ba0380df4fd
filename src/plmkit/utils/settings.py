"""Settings: dataclasses whose fields are declared once, with their default, type and help.

A `Settings` subclass is one section of a run (model / data / train, or a task's own settings).
Everything else is generated from its fields: validation of value types, `from_dict` with unknown
keys named (and a close match suggested), `to_dict` for run files, and the command-line flags
(`plmkit.cli.flags`). Declare a field with `setting`:

    @dataclass
    class DataSettings(Settings):
        section = "data"
        seq_len: int = setting(128, "tokens per example, specials included")
        corpus: list[str] = setting(help="text files or directories", default_factory=list)

        def validate(self):
            self.need(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, field
from typing import Any, ClassVar, Mapping

from plmkit.errors import ConfigError

_SCALARS = (bool, int, float, str)


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
            flags: tuple[str, ...] = (), choices: tuple | None = None, metavar: str | None = None,
            cli: bool = True, const_flags: Mapping[str, Any] | None = None, required: bool = False):
    """A dataclass field with what its command-line flag needs.

    flags: the flag and its aliases (default ``--field-name``; old spellings go here so they keep
    working); const_flags: extra flags that set a fixed value (``{"--cased": False}``);
    cli=False: run files only (no flag); required: a run must give it (None is refused; the help
    says "required" instead of a default)."""
    metadata = {"help": help, "flags": tuple(flags), "choices": choices, "metavar": metavar, "cli": cli,
                "const_flags": dict(const_flags or {}), "required": required}
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
        check_field_types(self, self.where())
        for f in dataclasses.fields(self):
            if f.metadata.get("required") and getattr(self, f.name) is None:
                self.need(False, f"{f.name} is required ({' or '.join(self.flag_spellings(f.name)) or 'run file'})")
        self.validate()

    def validate(self) -> None:
        """Check values beyond their types (subclasses); raise with `need`."""

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
    def layered(cls, *layers: Mapping[str, Any], source: str | None = None):
        """`from_dict` of the layers merged in order (defaults first, flags last); a field given in
        a layer drops its `alternatives` partner given in an earlier one."""
        merged: dict[str, Any] = {}
        for layer in layers:
            layer = cls._flat(layer)
            for a, b in cls.alternatives + tuple((b, a) for a, b in cls.alternatives):
                if layer.get(a) is not None and b not in layer:
                    merged.pop(b, None)
            merged.update(layer)
        return cls.from_dict(merged, source)

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


def check_field_types(config: Any, where: str) -> None:
    """Refuse a scalar field whose value has the wrong type (a quoted number in a run file, say),
    naming the field. An int passes for a float; containers and other types are left to the caller."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        allowed = scalar_types(hints[f.name])
        if not allowed:
            continue
        value = getattr(config, f.name)
        if not any(t is type(value) or (t is float and is_int(value)) for t in allowed):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{where}: {f.name} must be {wanted}, got {value!r} ({type(value).__name__})")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def _origin(config: Any, name: str):
    hint = typing.get_type_hints(type(config))[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if is_union(hint) else [hint]
    return typing.get_origin(args[0]) if len(args) == 1 else None


__all__ = ["Settings", "check_field_types", "check_known", "field_flags", "is_int", "is_union", "scalar_types",
           "setting"]
