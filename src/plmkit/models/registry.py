"""The model families: ``model_type`` -> one `Family` entry, the only description of a family that
code outside its own module reads (its config class, its model class per task, its Hugging Face
key table, its presets).

Each family module (plmkit.models.<family>) ends with ``register(Family(...))``; this module imports
the modules named in FAMILY_MODULES on the first lookup, so ``import plmkit`` stays light.

    config = config_from_preset("llama-tiny", vocab_size=8192, context_length=256, dropout=0.1)
    model = family_of_preset("llama-tiny").model_class("causal-lm")(config)
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from plmkit.errors import ConfigError

# A new family: its module here, and a register(Family(...)) at the end of that module.
FAMILY_MODULES = ("plmkit.models.bert", "plmkit.models.gpt2", "plmkit.models.llama", "plmkit.models.bart",
                  "plmkit.models.marian", "plmkit.models.encoder_decoder")

_FAMILIES: dict[str, "Family"] = {}


@dataclass(frozen=True)
class Family:
    """One model family.

    config: its ModelConfig subclass (``config.model_type`` is the family's key).
    tasks: task name -> model class: "base" (the body), and those it has of "pretraining",
        "masked-lm", "next-sentence", "causal-lm", "sequence-classification", "token-classification",
        "question-answering", "relation-classification", "seq2seq-lm" (an encoder-decoder with an LM head),
        "decoder-lm" (a decoder with cross-attention: the second half of an encoder-decoder composite).
    converter: its Hugging Face key table (a plmkit.convert.keys.Converter).
    presets: preset name -> config fields (names are unique across families).
    """

    config: type
    tasks: dict[str, type]
    converter: Any
    presets: dict[str, dict[str, Any]]

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def prefix(self) -> str:
        """The attribute that holds the body in a task model (``bert``, ``transformer``, ``model``):
        also the prefix of the body's keys in a task checkpoint."""
        return next((cls.base_prefix for cls in self.tasks.values() if cls.base_prefix), "")

    def model_class(self, task: str) -> type:
        if task not in self.tasks:
            raise ConfigError(f"{self.model_type} has no {task!r} model; it has: {', '.join(self.tasks)}")
        return self.tasks[task]

    def task_of(self, class_name: str) -> str | None:
        """The task whose class is named ``class_name`` (as config.json's ``architectures`` lists it)."""
        return next((task for task, cls in self.tasks.items() if cls.__name__ == class_name), None)


def register(family: Family) -> Family:
    """Add a family (called once by its module); preset names must not clash with another family's."""
    for other in _FAMILIES.values():
        clash = sorted(set(family.presets) & set(other.presets))
        if clash and other.model_type != family.model_type:
            raise ConfigError(f"presets {', '.join(clash)} of {family.model_type} are already {other.model_type}'s")
    _FAMILIES[family.model_type] = family
    return family


def families() -> dict[str, Family]:
    """model_type -> Family, for every family plmkit has."""
    for module in FAMILY_MODULES:
        importlib.import_module(module)  # each registers itself (once: modules are cached)
    return dict(_FAMILIES)


def family(model_type: str) -> Family:
    known = families()
    if model_type not in known:
        raise ConfigError(f"model_type {model_type!r} is not supported; known: {', '.join(sorted(known))}")
    return known[model_type]


def model_class(model_type: str, task: str) -> type:
    """The class of ``model_type``'s model for ``task`` (e.g. "bert", "sequence-classification")."""
    return family(model_type).model_class(task)


def preset_names(task: str | None = None) -> list[str]:
    """Every preset (of the families that have a ``task`` model, when given)."""
    return [name for f in families().values() if task is None or task in f.tasks for name in f.presets]


def family_of_preset(name: str, task: str | None = None, model_type: str | None = None) -> Family:
    """The family a preset belongs to. ``task``: it must be of a family with that model (e.g.
    "causal-lm"); ``model_type``: of that family. Unknown names are a ConfigError naming the known
    ones, with the closest as a suggestion."""
    every = families().values()
    wanted = [f for f in every if (task is None or task in f.tasks) and model_type in (None, f.model_type)]
    known = [p for f in wanted for p in f.presets]
    what = " ".join(filter(None, (model_type, task)))
    for f in every:
        if name in f.presets:
            if any(f is w for w in wanted):
                return f
            why = f"not {model_type}" if model_type not in (None, f.model_type) else f"which has no {task} model"
            raise ConfigError(f"preset {name!r} is a {f.model_type} model, {why}; {what} presets: {', '.join(known)}")
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown preset {name!r}{' for ' + what if what else ''}{hint}; "
                      f"choose one of {', '.join(known)}")


def config_from_preset(name: str, *, vocab_size: int | None = None, context_length: int | None = None,
                       dropout: float | None = None, model_type: str | None = None, **fields):
    """The config of a preset of any family, with family-neutral settings set through the family:
    ``context_length`` (GPT-2's n_positions, BERT's and Llama's max_position_embeddings), ``dropout``
    (every dropout rate of the body: `ModelConfig.dropout_overrides`), ``vocab_size``. ``fields``:
    the family's own config fields (checked like config.json's); being more specific, they win over
    the neutral settings (``dropout=0.1, attn_pdrop=0.0``: every GPT-2 dropout but attention's).
    ``model_type``: the preset must be of that family (``BertConfig.from_preset``)."""
    f = family_of_preset(name, model_type=model_type)
    source = f"preset {name!r}"
    neutral: dict[str, Any] = {}
    if vocab_size is not None:
        neutral["vocab_size"] = vocab_size
    if context_length is not None:
        neutral[f.config.field_names["context_length"]] = context_length
    if dropout is not None:
        neutral.update(f.config.from_dict(f.presets[name], source).dropout_overrides(dropout))
    return f.config.from_dict({**f.presets[name], **neutral, **fields}, source)


__all__ = ["FAMILY_MODULES", "Family", "config_from_preset", "families", "family", "family_of_preset",
           "model_class", "preset_names", "register"]
