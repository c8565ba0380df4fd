"""`RunConfig`: one way to configure every run (pretraining, fine-tuning, SFT ...).

A run type is a dataclass of sections, each a `plmkit.utils.settings.Settings` (``model``,
``data``, ``train``; a task adds its own), plus a few top-level values such as ``out``. Values come
in layers, each overriding the one before: the run type's `defaults`, the run file (``--config
run.yaml``), the command-line flags (generated from the same fields by `plmkit.cli.flags`). The
effective configuration is written back as a run file (``--print-config``, and into the output
directory), which `load` reads unchanged.

    @dataclass
    class PretrainRun(RunConfig):
        defaults = {"train": {"lr": 5e-4}}
        data: DataSettings
        train: TrainConfig
        out: str | None = None

    run = PretrainRun.load("run.yaml", {"train": {"max_steps": 10}})

A setting may pick further defaults (`variant_key`): pretraining's ``data.objective`` chooses the
learning rate, schedule and preset of a decoder run (``variant_defaults["clm"]``), each declared once.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping

from plmkit.errors import ConfigError
from plmkit.utils.settings import Settings, check_field_types, check_known, field_flags
from plmkit.utils.text import bad_byte, parse_json


@dataclasses.dataclass
class RunConfig:
    """Base of the run types; subclasses are dataclasses of sections and top-level values."""

    defaults: ClassVar[dict[str, Any]] = {}  # {section: {field: value}, top-level field: value}
    # (section, field) whose value picks defaults over `defaults`: variant_defaults[value]
    variant_key: ClassVar[tuple[str, str] | None] = None
    variant_defaults: ClassVar[dict[Any, dict[str, Any]]] = {}

    @classmethod
    def sections(cls) -> dict[str, type[Settings]]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)
                if isinstance(hints[f.name], type) and issubclass(hints[f.name], Settings)}

    @classmethod
    def top_level(cls) -> list[str]:
        sections = cls.sections()
        return [f.name for f in dataclasses.fields(cls) if f.name not in sections]

    @classmethod
    def build(cls, *layers: Mapping[str, Any], source: str = "run file") -> "RunConfig":
        """The run from `layers` (whole run dicts, later ones win) over the run type's defaults."""
        sections = cls.sections()
        for layer in layers:
            if not isinstance(layer, Mapping):
                raise ConfigError(f"{source}: a run file must be a mapping with sections {', '.join(sections)}")
            check_known(layer, list(sections) + cls.top_level(), source)
            for name in sections:
                if layer.get(name) is not None and not isinstance(layer[name], Mapping):
                    raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(layer[name]).__name__}")
        defaults = cls.defaults_for(layers)
        layers = defaults + layers
        values: dict[str, Any] = {}
        for name, section in sections.items():
            values[name] = section.layered(*(layer.get(name) or {} for layer in layers), source=source,
                                           defaults=len(defaults))
        for name in cls.top_level():
            chosen = [layer[name] for layer in layers if name in layer]
            if chosen:
                values[name] = chosen[-1]
        run = cls(**values)
        top = {f.name: f for f in dataclasses.fields(cls)}
        check_field_types(run, source, lambda name: f"{name} ({field_flags(top[name])[0]})"
                          if top[name].metadata.get("cli", True) and top[name].metadata else name)
        run.validate()
        try:
            run.check_given({name: getattr(run, name).given for name in sections})
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        return run

    def check_given(self, given: dict[str, set[str]]) -> None:
        """Checks across sections of what the run gave (`given`: section -> its fields that the run
        file or flags set to something else than their default): a setting that another section's
        makes meaningless is an error (subclasses)."""

    @classmethod
    def defaults_for(cls, layers: tuple[Mapping[str, Any], ...] = ()) -> tuple[Mapping[str, Any], ...]:
        """The default layers of a run given `layers`: `defaults`, then those of the variant chosen."""
        if cls.variant_key is None:
            return (cls.defaults,)
        section, name = cls.variant_key
        chosen = cls.default(section, name)
        for layer in layers:
            if isinstance(layer.get(section), Mapping) and name in layer[section]:
                chosen = layer[section][name]
        variant = next((d for value, d in cls.variant_defaults.items() if value == chosen), {})
        return (cls.defaults, variant)

    @classmethod
    def default(cls, section: str | None, name: str, variant: Any = None) -> Any:
        """The default of a field (`section` None: a top-level one), of `variant` when given."""
        for layer in ((cls.variant_defaults.get(variant, {}),) if variant is not None else ()) + (cls.defaults,):
            values = layer if section is None else layer.get(section, {})
            if name in values:
                return values[name]
        owner = cls if section is None else cls.sections()[section]
        return field_default(next(f for f in dataclasses.fields(owner) if f.name == name))

    def validate(self) -> None:
        """Checks across sections (subclasses)."""

    @classmethod
    def load(cls, path: str | Path | None, *overrides: Mapping[str, Any]) -> "RunConfig":
        """The run of a YAML/JSON run file (None: defaults only) with `overrides` on top."""
        if path is None:
            return cls.build(*overrides, source="flags")
        return cls.build(read_run_file(path), *overrides, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        kept = {f.name for f in dataclasses.fields(self) if f.metadata.get("in_run_file", True)}
        out: dict[str, Any] = {name: getattr(self, name) for name in self.top_level() if name in kept}
        out.update({name: getattr(self, name).to_dict() for name in self.sections()})
        return out

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        """The effective run file (YAML, or JSON for a .json path), written atomically."""
        from plmkit.utils.files import atomic_write_text
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) + "\n" if path.suffix == ".json" else self.to_yaml()
        atomic_write_text(path, text)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def read_run_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON run file as a dict (validated by `RunConfig.build`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")  # a BOM dropped, in YAML and JSON alike
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {bad_byte(raw, err)})") from None
    except OSError as err:
        raise ConfigError(f"cannot read run file {path}: {err.strerror or err}") from None
    values = parse_json(text, path, ConfigError) if path.suffix == ".json" else _parse_yaml(text, path)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run file must be a mapping of sections, got {type(values).__name__}")
    return values


def _parse_yaml(text: str, path: Path) -> Any:
    import yaml
    try:
        return yaml.load(text, Loader=_run_file_loader())
    except ConfigError as err:  # a key given twice, an integer that is not one: line:column: ...
        raise ConfigError(f"{path}:{err}") from None
    except Exception as err:  # yaml's errors carry their place as a mark
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or str(err)
        raise ConfigError(f"{where}: not valid YAML ({what})") from None


def _run_file_loader():
    """yaml.SafeLoader with YAML 1.2's numbers where PyYAML keeps YAML 1.1's: exponent floats without a
    dot (``5e-4``, ``1E-8``) are numbers (1.1 leaves them strings), and integers are ``[-+]?[0-9]+``
    in decimal (``010`` is 10, not 1.1's octal 8), ``0o17`` and ``0x1F`` (1.1's ``0b1``, ``1_000`` and
    ``1:30`` are strings, which the settings then refuse by name). A key given twice in a mapping is an
    error (PyYAML keeps the last one silently: a whole second ``train:`` section would replace the
    first)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in keys:
                    raise ConfigError(f"{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: "
                                      f"{key!r} is given twice; one of them would be dropped silently")
                keys.add(key)
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    int_tag = "tag:yaml.org,2002:int"
    Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != int_tag]
                                      for first, resolvers in Loader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(int_tag, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                 list("-+0123456789"))
    Loader.add_constructor(int_tag, _yaml12_int)
    return Loader


def _yaml12_int(loader, node) -> int:
    """A YAML 1.2 core-schema integer: decimal (leading zeros too), 0o octal or 0x hexadecimal."""
    text = loader.construct_scalar(node)
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    try:
        return int(text[2:] if base != 10 else text, base)
    except ValueError:
        raise ConfigError(f"{node.start_mark.line + 1}:{node.start_mark.column + 1}: {text!r} is not an integer "
                          "(decimal, 0o octal or 0x hexadecimal)") from None


__all__ = ["RunConfig", "field_default", "read_run_file"]
