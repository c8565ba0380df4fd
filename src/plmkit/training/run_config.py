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
        out: str | None = None
        data: DataSettings = field(default_factory=DataSettings)
        train: TrainConfig = field(default_factory=TrainConfig.for_run)

    run = PretrainRun.load("run.yaml", {"train": {"max_steps": 10}})
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping

from plmkit.errors import ConfigError
from plmkit.utils.settings import Settings, check_field_types, check_known


@dataclasses.dataclass
class RunConfig:
    """Base of the run types; subclasses are dataclasses of sections and top-level values."""

    defaults: ClassVar[dict[str, Any]] = {}  # {section: {field: value}, top-level field: value}

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
        layers = (cls.defaults,) + layers
        sections = cls.sections()
        for layer in layers:
            if not isinstance(layer, Mapping):
                raise ConfigError(f"{source}: a run file must be a mapping with sections {', '.join(sections)}")
            check_known(layer, list(sections) + cls.top_level(), source)
            for name in sections:
                if layer.get(name) is not None and not isinstance(layer[name], Mapping):
                    raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(layer[name]).__name__}")
        values: dict[str, Any] = {}
        for name, section in sections.items():
            values[name] = section.layered(*(layer.get(name) or {} for layer in layers), source=source)
        for name in cls.top_level():
            given = [layer[name] for layer in layers if name in layer]
            if given:
                values[name] = given[-1]
        run = cls(**values)
        check_field_types(run, source)
        run.validate()
        return run

    def validate(self) -> None:
        """Checks across sections (subclasses)."""

    @classmethod
    def load(cls, path: str | Path | None, *overrides: Mapping[str, Any]) -> "RunConfig":
        """The run of a YAML/JSON run file (None: defaults only) with `overrides` on top."""
        if path is None:
            return cls.build(*overrides, source="flags")
        return cls.build(read_run_file(path), *overrides, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.top_level()}
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


def read_run_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON run file as a dict (validated by `RunConfig.build`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"cannot read run file {path}: {err.strerror or err}") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml
            values = yaml.load(text, Loader=_run_file_loader())
    except Exception as err:  # yaml/json syntax errors carry their line
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run file must be a mapping of sections, got {type(values).__name__}")
    return values


def _run_file_loader():
    """yaml.SafeLoader that also reads exponent floats without a dot (``5e-4``, ``1E-8``) as numbers,
    as YAML 1.2 and JSON do; PyYAML's YAML 1.1 rules would leave them strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


__all__ = ["RunConfig", "read_run_file"]
