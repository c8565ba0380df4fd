"""Command-line flags generated from a `RunConfig`'s fields, so each default and help text lives once.

`add_run_flags(parser, RunType)` adds one flag per field (``--grad-accum-steps`` for
``train.grad_accum_steps``; booleans get ``--x / --no-x``; a list setting's flag given again adds
to it: ``--corpus a.txt --corpus b.txt``), plus ``--config FILE`` and
``--print-config``. A flag left out is absent from the namespace, so it never overrides the run
file. `run_from_args(args, RunType)` builds the run: defaults < run file < flags. A command's own
settings outside a run (sampling, say): `add_settings_flags` / `settings_from_args`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Mapping

from plmkit.training.run_config import RunConfig, field_default
from plmkit.utils.settings import Settings, field_flags, is_union, scalar_types

_SEP = "."  # dest of a section's field: "train.lr"


def add_run_flags(parser: argparse.ArgumentParser, run_type: type[RunConfig], skip: tuple[str, ...] = ()) -> None:
    """Flags for every field of `run_type` with ``cli=True`` (`skip`: dests left to the command)."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="run file (YAML or JSON) with sections "
                             f"{'/'.join(run_type.sections())}; flags given on the command line win")
    parser.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                        help="print the effective run file (YAML) and exit without running")
    hints = typing.get_type_hints(run_type)
    for name in run_type.top_level():
        _add_field(parser, name, _field(run_type, name), hints[name], _defaults_text(run_type, None, name), skip)
    for section, settings in run_type.sections().items():
        group = parser.add_argument_group(f"{section} settings")
        section_hints = typing.get_type_hints(settings)
        for f in dataclasses.fields(settings):
            _add_field(group, f"{section}{_SEP}{f.name}", f, section_hints[f.name],
                       _defaults_text(run_type, section, f.name), skip)


def add_settings_flags(parser: argparse.ArgumentParser, settings: type[Settings],
                       defaults: Mapping[str, Any] | None = None, skip: tuple[str, ...] = ()) -> None:
    """Flags for the fields of one `Settings` section outside a run type (a command's own, e.g. the
    sampling settings of generate and chat), with this command's `defaults` over the fields' own."""
    hints = typing.get_type_hints(settings)
    for f in dataclasses.fields(settings):
        default = (defaults or {}).get(f.name, field_default(f))
        _add_field(parser, f"{settings.section}{_SEP}{f.name}", f, hints[f.name], f"default: {shown_default(default)}", skip)


def settings_from_args(args: argparse.Namespace, settings: type[Settings], defaults: Mapping[str, Any] | None = None):
    """The `settings` of the flags `add_settings_flags` added: the given ones over `defaults`."""
    return settings.layered(defaults or {}, given_values(args).get(settings.section, {}), source="flags", defaults=1)


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line as a run dict ({section: {field: value}, top-level: value})."""
    run: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if _SEP in dest:
            section, name = dest.split(_SEP, 1)
            run.setdefault(section, {})[name] = value
    return run


def run_from_args(args: argparse.Namespace, run_type: type[RunConfig], extra: dict[str, Any] | None = None):
    """The run of `--config` (if given) with the given flags (and `extra`, a run dict) on top; with
    ``--print-config`` the run file is printed and None returned (the command then exits)."""
    flags = given_values(args)
    for name in run_type.top_level():
        if name in vars(args):
            flags[name] = getattr(args, name)
    run = run_type.load(getattr(args, "config", None), flags, *([extra] if extra else []))
    if getattr(args, "print_config", False):
        sys.stdout.write(run.to_yaml())
        return None
    return run


def _field(run_type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(run_type) if f.name == name)


def shown_default(default: Any) -> str:
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default)) or "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return "off" if default is None else str(default).replace("%", "%%")


def _defaults_text(run_type: type[RunConfig], section: str | None, name: str) -> str:
    """``default: 5e-4`` and, where a variant changes it, ``; objective clm: 0.001``."""
    default = shown_default(run_type.default(section, name))
    text = f"default: {default}"
    if run_type.variant_key is not None:
        for variant in run_type.variant_defaults:
            value = shown_default(run_type.default(section, name, variant))
            if value != default:
                text += f"; {run_type.variant_key[1]} {variant}: {value}"
    return text


def _add_field(parser, dest: str, f: dataclasses.Field, hint: Any, defaults: str, skip: tuple[str, ...]) -> None:
    meta = f.metadata
    if not meta.get("cli", True) or dest in skip or f.name in skip:
        return
    flags = field_flags(f)
    help_text = meta.get("help", "").replace("%", "%%")
    defaults = "required" if meta.get("required") else defaults
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS,
                              "help": f"{help_text} ({defaults})" if help_text else f"({defaults})"}
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    types_ = scalar_types(hint)
    if types_ and set(types_) - {type(None)} == {bool}:
        parser.add_argument(*flags, action=_Consistent.of(argparse.BooleanOptionalAction), **kwargs)
    elif types_:
        parser.add_argument(*flags, type=_scalar_parser(types_, f.name), **kwargs)
    else:
        _add_container(parser, flags, hint, kwargs, f.name)
    for flag, value in meta.get("const_flags", {}).items():
        parser.add_argument(flag, action=_Consistent.of(argparse._StoreConstAction), const=value, dest=dest,
                            default=argparse.SUPPRESS,
                            help=f"same as {flags[0]} {value}" if not isinstance(value, bool)
                            else f"same as --{'' if value else 'no-'}{flags[0][2:]}")


class _Consistent:
    """A flag sharing its setting with other spellings (``--lowercase`` / ``--cased``): one that
    contradicts a flag given before it is an error, not the last one silently winning."""

    @classmethod
    def of(cls, action: type[argparse.Action]) -> type[argparse.Action]:
        return type(f"Consistent{action.__name__}", (cls, action), {})

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, _UNSET)
        super().__call__(parser, namespace, values, option_string)
        if before is not _UNSET and before != getattr(namespace, self.dest):
            parser.error(f"{option_string} contradicts a flag given before it for the same setting "
                         f"({self.dest.split('.')[-1]}: {before!r}, then {getattr(namespace, self.dest)!r})")


_UNSET = object()


def _add_container(parser, flags, hint, kwargs, name: str) -> None:
    if is_union(hint):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin, items = typing.get_origin(hint), typing.get_args(hint)
    # a list setting given again adds to it (--corpus a.txt --corpus b.txt); a fixed-size tuple (--betas) is one value
    extend = {"action": "extend"} if origin is list or items[1:] == (Ellipsis,) else {}
    if origin is list and items and items[0] in (str, int, float):  # --corpus a.txt b.txt
        parser.add_argument(*flags, nargs="+", type=_scalar_parser((items[0],), name), **extend, **kwargs)
    elif origin is tuple and items and items[0] in (str, int, float):  # comma-separated: --lora-targets q,v, --betas 0.9,0.95
        item = _scalar_parser((items[0],), name)
        parser.add_argument(*flags, type=lambda text: [item(t.strip()) for t in text.split(",") if t.strip()],
                            **extend, **kwargs)
    else:
        raise TypeError(f"no flag type for {name}: {hint}; declare it with setting(cli=False)")


def _scalar_parser(types_: tuple[type, ...], name: str):
    """A flag string -> the first of the field's types it parses as ("none" -> None when allowed)."""
    order = [t for t in (int, float, bool, str) if t in types_]

    def parse(text: str):
        if type(None) in types_ and text.lower() in ("none", "null"):
            return None
        for t in order:
            if t is bool:
                if text.lower() in ("true", "false"):
                    return text.lower() == "true"
                continue
            if t in (int, float) and "_" in text:
                continue  # Python reads "1_0" as 10: a typo, not a number
            try:
                return t(text)
            except ValueError:
                continue
        wanted = " or ".join(t.__name__ for t in order)
        raise argparse.ArgumentTypeError(f"{name} must be {wanted}, got {text!r}")

    return parse


__all__ = ["add_run_flags", "add_settings_flags", "given_values", "run_from_args", "settings_from_args",
           "shown_default"]
