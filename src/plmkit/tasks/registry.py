"""The task registry: a task's name (``--task``, plmkit_task.json) -> its `Task` class.

Adding a task is a module with a `Task` subclass and one entry in `TASKS` below.
"""
from __future__ import annotations

from pathlib import Path

from plmkit.errors import ConfigError
from plmkit.tasks.base import TASK_FILE, Task
from plmkit.tasks.classification import ClassificationTask
from plmkit.tasks.ner import NerTask
from plmkit.tasks.pretrained import FeatureExtractionTask, FillMaskTask
from plmkit.tasks.qa import QATask
from plmkit.tasks.relation import RelationTask
from plmkit.tasks.sft import SFTTask
from plmkit.tasks.summarization import SummarizationTask
from plmkit.tasks.translation import TranslationTask
from plmkit.tasks.zero_shot import ZeroShotClassificationTask
from plmkit.utils.text import read_json_object

TASKS: dict[str, type[Task]] = {t.name: t for t in (ClassificationTask, NerTask, RelationTask, QATask, SFTTask,
                                                    TranslationTask, SummarizationTask)}
# tasks that serve pipelines only, on any directory holding their model class (none is fine-tuned)
PIPELINE_TASKS: tuple[type[Task], ...] = (FillMaskTask, FeatureExtractionTask, ZeroShotClassificationTask)


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> type[Task]:
    """The task class called `name`; ConfigError listing the known ones otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_for_pipeline(pipeline: str) -> type[Task]:
    """The task serving the Hugging Face pipeline name `pipeline`."""
    for task in (*TASKS.values(), *PIPELINE_TASKS):
        if pipeline in task.pipelines:
            return task
    raise ConfigError(f"unknown pipeline task {pipeline!r}; choose one of {', '.join(pipeline_names())}")


def pipeline_names() -> list[str]:
    """Every pipeline name, once (translation and summarization both serve text2text-generation)."""
    return list(dict.fromkeys(p for task in (*TASKS.values(), *PIPELINE_TASKS) for p in task.pipelines))


def load_task(directory: str | Path) -> Task:
    """The task (with its settings) of a fine-tuned model directory: from plmkit_task.json, or for a
    directory without one (a Hugging Face model), from the task model class config.json names, with
    the settings its config gives (`Task.from_config`)."""
    from plmkit.models.auto import AutoConfig
    from plmkit.models.io import check_model_dir
    path = check_model_dir(directory) / TASK_FILE
    if not path.is_file():
        return _task_of_architectures(directory).from_config(AutoConfig.from_pretrained(directory))
    values = read_json_object(path, ConfigError)
    if not isinstance(values.get("task"), str):
        raise ConfigError(f"{path}: not a valid task file (needs a \"task\" name)")
    values = dict(values)
    return get_task(values.pop("task")).from_file_values(values, str(path))


def _task_of_architectures(directory) -> type[Task]:
    from plmkit.models.auto import model_class, read_model_type
    try:
        model_type, architectures = read_model_type(directory)
    except ConfigError:
        model_type, architectures = None, []
    for task in TASKS.values():
        try:
            if model_type is not None and model_class(model_type, task.model_task).__name__ in architectures:
                return task
        except ConfigError:  # the family has no model for this task
            continue
    raise ConfigError(f"{directory}: no {TASK_FILE} and config.json's architectures {architectures} name no task "
                      "model; fine-tune it first (plmkit finetune --task ...)")


__all__ = ["PIPELINE_TASKS", "TASKS", "get_task", "load_task", "pipeline_names", "task_for_pipeline", "task_names"]
