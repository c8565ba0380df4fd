"""`AutoModel*` entry points: pick the class from config.json's `model_type` and `architectures`."""
from __future__ import annotations

from plmkit.errors import ConfigError
from plmkit.models.config import ModelConfig, config_json_path, read_config_json
from plmkit.models.io import check_model_dir
from plmkit.models.registry import family, model_class


def read_model_type(path) -> tuple[str, list[str]]:
    """config.json's (model_type, architectures) of a model directory, the model_type one plmkit has."""
    from plmkit.models.registry import families
    path = check_model_dir(path) / "config.json"
    config = read_config_json(path)
    if "model_type" not in config:
        raise ConfigError(f"{path}: no model_type field")
    if config["model_type"] not in families():
        raise ConfigError(f"{path}: model_type {config['model_type']!r} is not supported by plmkit; it has "
                          f"{', '.join(sorted(families()))}")
    return config["model_type"], config.get("architectures") or []


class _Auto:
    task = "base"

    @classmethod
    def from_pretrained(cls, path, **config_overrides):
        model_type, _ = read_model_type(path)
        return model_class(model_type, cls.task).from_pretrained(path, **config_overrides)

    @classmethod
    def from_config(cls, config):
        return model_class(config.model_type, cls.task)(config)


def _auto(name: str, task: str) -> type:
    return type(name, (_Auto,), {"task": task, "__doc__": f"Loads the {task} model named by config.json's model_type."})


AutoModel = _auto("AutoModel", "base")
AutoModelForPreTraining = _auto("AutoModelForPreTraining", "pretraining")
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM", "masked-lm")
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification", "sequence-classification")
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification", "token-classification")
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering", "question-answering")
AutoModelForCausalLM = _auto("AutoModelForCausalLM", "causal-lm")
AutoModelForSeq2SeqLM = _auto("AutoModelForSeq2SeqLM", "seq2seq-lm")


class AutoConfig:
    """The config class that config.json's `model_type` names, as transformers' AutoConfig."""

    @staticmethod
    def from_pretrained(path, **overrides) -> ModelConfig:
        """A model directory's (or a config.json file's) config; ``overrides`` replace fields."""
        d = read_config_json(config_json_path(path))
        return AutoConfig.config_class(d.get("model_type"), path).from_pretrained(path, **overrides)

    @staticmethod
    def for_model(model_type: str, **fields) -> ModelConfig:
        return AutoConfig.config_class(model_type)(**fields)

    @staticmethod
    def config_class(model_type: str | None, source="config") -> type[ModelConfig]:
        if model_type is None:
            raise ConfigError(f"{source}: no model_type field")
        return family(model_type).config


def load_any(path, **config_overrides):
    """The exact class named in config.json's `architectures` (falls back to the base model)."""
    model_type, architectures = read_model_type(path)
    f = family(model_type)
    task = next((t for t in map(f.task_of, architectures) if t is not None), "base")
    return f.model_class(task).from_pretrained(path, **config_overrides)


__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForPreTraining",
           "AutoModelForSeq2SeqLM",
           "AutoModelForQuestionAnswering", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
           "load_any", "model_class", "read_model_type"]
