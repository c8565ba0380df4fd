"""The task protocol: everything plmkit knows about one task lives in one `Task` subclass.

A task is its settings (a `TaskSettings` dataclass, saved next to a fine-tuned model as
``plmkit_task.json``, or for a Hugging Face model without one read from its config by `from_config`,
and turned into flags of ``plmkit finetune``), plus:

* data: `read` training/eval files (errors name file:line), `discover` the labels and what else the
  data decides (problem type, tag scheme ...), `encode` examples into features, `collate` batches;
* model: `model_task`, the family registry's name of the model class it needs
  (``plmkit.models.auto.model_class(model_type, model_task)``), `model_overrides` for its config,
  `adapt` (after loading: new tokens, a pad token), `check_model`, `train_extra` (after freezing);
* evaluation: `evaluate` (streamed metrics) and `main_metric` (the one choosing the best checkpoint);
* prediction: `predict` (records -> one result dict each), `for_stream` (a stream predicted a few
  records at a time), `read_prediction_input`, and `pipeline` for the Hugging Face pipeline names in
  `pipelines`.

The fine-tuning recipe (plmkit.recipes.finetune), `plmkit evaluate/predict` and `plmkit.pipeline`
call only these; none of them knows a task by name. A task registers itself in
plmkit.tasks.registry.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable

from plmkit.data.collate import pad_collate
from plmkit.errors import ConfigError, DataError
from plmkit.utils.settings import Settings, setting

TASK_FILE = "plmkit_task.json"


@dataclass
class TaskSettings(Settings):
    """What every task's settings have; a task's own settings subclass this (``section`` = its name)."""

    max_length: int | None = setting(128, "tokens per input (QA and long NER sentences: per window; "
                                          "sft: default the model's context window)", metavar="N", at_least=2)


class Task:
    """Base of the tasks (see the module docstring). Subclasses set the class attributes and
    implement `read`, `encode`, `evaluate` and `predict`; the rest has defaults."""

    name: ClassVar[str]  # as in --task and plmkit_task.json
    model_task: ClassVar[str]  # the family registry's model class for it, e.g. "sequence-classification"
    settings_class: ClassVar[type[TaskSettings]] = TaskSettings
    run_defaults: ClassVar[dict[str, Any]] = {}  # a fine-tuning run's defaults for this task, by section
    forward_kwargs: ClassVar[dict[str, Any]] = {}  # added to every training forward call
    pipelines: ClassVar[tuple[str, ...]] = ()  # the Hugging Face pipeline names it serves
    inference_settings: ClassVar[dict[str, Any]] = {}  # a loaded model's settings that evaluate/predict replace
    pipeline_arguments: ClassVar[tuple[str, ...]] = ()  # keyword arguments its `pipeline` takes
    pipeline_positional: ClassVar[int] = 0  # how many of them (the first) a pipeline call may also give by position
    any_directory: ClassVar[bool] = False  # its pipelines load their `model_task` model from any directory holding it
    unread_weights: ClassVar[tuple[str, ...]] = ()  # weights its model has but never reads (may be missing), by prefix
    description: ClassVar[str] = ""  # what `plmkit finetune --help` says about its data
    reader: ClassVar[Callable[..., list]]  # reader(path, labelled) -> examples, errors naming file:line
    sharded_evaluation: ClassVar[bool] = False  # `evaluate` takes `part`: several processes share it
    progress: bool = True  # progress bars of long evaluations (a run's --no-progress turns them off)

    def __init__(self, settings: TaskSettings | None = None):
        self.settings = settings if settings is not None else self.settings_class()

    @classmethod
    def of(cls, **settings) -> "Task":
        """The task with these settings (the others at their defaults)."""
        return cls(cls.settings_class(**settings))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"

    # ------------------------------------------------------------------ data
    def read(self, path, labelled: bool | None = True) -> list:
        """Examples of a training / evaluation file (`labelled`: labels required; None: labels where a
        record has them, for the tasks with `soft_targets`): the task's `reader(path, labelled)` unless
        it overrides this."""
        return type(self).reader(path, labelled)

    def shared_text(self, example) -> Hashable | None:
        """What `example` shares with other examples of its file (a QA question's paragraph, a relation's
        sentence): `--eval-fraction` holds such examples out together, so that no held-out text is trained
        on; None: nothing (each example is held out alone)."""
        return None

    def discover(self, examples: list, path) -> list[str] | None:
        """The label names of the training examples (None: the model has no label head), after
        setting what else the data decides in `self.settings`."""
        return None

    def encode(self, tokenizer, examples: list, label2id: dict[str, int] | None, path="data",
               training: bool = False) -> list[dict]:
        """Features (token ids, labels ...) of `examples`; unknown labels name file:line."""
        raise NotImplementedError

    def collate(self, tokenizer):
        """The batch collator of this task's features."""
        return pad_collate(tokenizer.pad_token_id)

    # ------------------------------------------------------------------ model
    def model_overrides(self) -> dict[str, Any]:
        """Config fields of the task model that the task sets (besides labels and dropout)."""
        return {}

    def adapt(self, model, tokenizer) -> None:
        """After the task model is loaded for fine-tuning: tokens the task adds, and the like."""

    def check_model(self, model, where) -> None:
        """Refuse settings the model cannot honour (a max_length beyond its positions)."""
        positions = model.config.max_positions
        if positions is not None and self.settings.max_length is not None and self.settings.max_length > positions:
            raise ConfigError(f"max_length={self.settings.max_length} is longer than {where} takes ({positions} "
                              f"positions); use --max-length {positions} or less")

    def train_extra(self, model, tokenizer) -> None:
        """After freezing and LoRA: parameters the task needs trained whatever was frozen."""

    # ------------------------------------------------------------------ distillation (plmkit distill)
    def soft_targets(self) -> str | None:
        """What a student matches of its teacher's logits: "example" (one class distribution per
        example, logits (B, C)), "token" (one per token, logits (B, T, C)) or "span" (start and end
        logits (B, T), each a distribution over the input's tokens); None: the task's models are not
        distilled by their logits (plmkit.compression.distill.TARGETS)."""
        return None

    def teacher_targets(self, teacher, tokenizer, examples: list, batch_size: int = 32) -> list | None:
        """Sequence-level distillation (Kim & Rush, 2016): `examples` with their targets replaced by
        what `teacher` generates for their inputs; None: the task's targets are not generated."""
        return None

    # ------------------------------------------------------------------ evaluation
    def main_metric(self) -> str | None:
        """The metric that picks the best checkpoint when there is evaluation data (None: no best)."""
        return "f1"

    def evaluate(self, model, tokenizer, examples: list, features: list, batch_size: int = 32) -> dict[str, float]:
        """Metrics of `model` on encoded `features` of `examples`, accumulated batch by batch. A task
        with `sharded_evaluation` (every task of plmkit) takes `part` too (an EvalShard of
        plmkit.training.distributed): under torchrun each process evaluates its rows and the metrics
        are reduced across them (rank 0's are the ones kept); another task's is run by rank 0 alone."""
        raise NotImplementedError

    def finished(self, result) -> str | None:
        """A line for the user at the end of a fine-tuning run (None: the Trainer's summary says it all)."""
        return None

    # ------------------------------------------------------------------ prediction
    def predict(self, model, tokenizer, records: list, batch_size: int = 32, where: str = "input",
                lines: list[int] | None = None, align_to_words: bool = True) -> list[dict]:
        """One result dict per (non-empty list of) input record(s); errors name `where`:line, the line
        from `lines` or else the record's number."""
        raise ConfigError(f"plmkit predict does not support {self.name} models (see {type(self).__module__})")

    def for_stream(self) -> "Task":
        """The task to predict one stream of records a few at a time (`plmkit predict --input -`), which
        keeps what holds across the stream's `predict` calls (QA's record numbers and the ids seen); a
        task that keeps nothing is itself."""
        return self

    def read_prediction_input(self, path: str) -> tuple[list, list[int]]:
        """Records, and the line each starts on, from a JSONL file or '-' (stdin JSONL)."""
        from plmkit.tasks.common import jsonl_records
        return jsonl_records(path)

    def pipeline(self, name: str, model, tokenizer, inputs, batch_size: int, **kwargs):
        """The Hugging Face-shaped output of pipeline `name` (one of `pipelines`) for `inputs`."""
        raise ConfigError(f"{self.name} models serve no pipeline")

    # ------------------------------------------------------------------ plmkit_task.json
    def save(self, directory: str | Path) -> None:
        from plmkit.utils.files import atomic_write_text
        atomic_write_text(Path(directory) / TASK_FILE,
                          json.dumps({"task": self.name, **self.settings.to_dict()}, indent=2) + "\n")

    @classmethod
    def from_file_values(cls, values: dict[str, Any], source: str) -> "Task":
        """The task of plmkit_task.json's values (the "task" key removed). Files written before
        tasks had their own settings hold every task's fields; those of other tasks are dropped."""
        known = cls.settings_class.field_names()
        values = {k: v for k, v in values.items() if k in known or k not in LEGACY_FIELDS}
        return cls(cls.settings_class.from_dict(values, source))

    @classmethod
    def from_config(cls, config) -> "Task":
        """The task of a model directory without plmkit_task.json (a Hugging Face model), with what the
        training data would have decided read from the model's config (a ModelConfig) where it says;
        the default settings unless a task overrides this."""
        return cls()


# every field of the one settings class all tasks shared before (plmkit_task.json of older versions)
LEGACY_FIELDS = frozenset({"max_length", "problem_type", "scheme", "stride", "no_relation", "doc_stride",
                           "max_query_length", "max_answer_length", "version_2", "null_score_diff_threshold"})


def need_two_labels(labels: list[str], path) -> list[str]:
    if len(labels) < 2:
        raise DataError(f"{path}: the training data has only one label ({labels}); a classifier needs two or more")
    return labels


__all__ = ["LEGACY_FIELDS", "TASK_FILE", "Task", "TaskSettings", "need_two_labels"]
