"""`plmkit finetune --task TASK --model DIR --train FILE [--eval FILE] --out DIR [--config run.yaml]`.

The flags are generated from the fields of the fine-tuning run (plmkit.recipes.finetune): sections
model / data / train, and the settings of every task (those of the task given apply; another task's
setting is an error naming it). A run file given with --config holds the same values; flags given win.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from plmkit.cli.flags import add_run_flags, given_values, shown_default
from plmkit.recipes import finetune as recipe
from plmkit.tasks import TASKS
from plmkit.training.run_config import read_run_file
from plmkit.utils.settings import Settings

_TASK_SECTION = "task_settings"  # the flags of every task's settings; the run file's section is the task's name
_REQUIRED = ("task", "out", "data.train")  # dests a run needs, from a flag or the run file (--model or --preset too)
_USAGE = ("plmkit finetune --task TASK --model DIR|--preset NAME --train FILE --out DIR [--eval FILE] [--config FILE] "
          "[options]")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model: " + ", ".join(TASKS), usage=_USAGE,
        description="Fine-tune a pretrained model directory. Writes OUT/run.yaml (the effective run file), "
                    "OUT/model (final), OUT/best (best by the eval metric, with --eval), metrics.jsonl and "
                    "training_curves.png. Model directories carry the tokenizer, the labels and plmkit_task.json, "
                    "so `plmkit evaluate/predict` need nothing else.")
    add_task_run_flags(p, recipe.FinetuneRun)
    p.set_defaults(func=run)


def add_task_run_flags(p: argparse.ArgumentParser, base: type[recipe.FinetuneRun], skip: tuple[str, ...] = ()) -> None:
    """The flags of a run type built on fine-tuning (`base`: FinetuneRun, DistillRun): its sections, and
    the settings of every task in one group (`skip`: dests left out)."""
    add_run_flags(p, _flags_run_type(base), skip)
    _explain_defaults(p, base)
    for group in p._action_groups:
        if group.title == f"{_TASK_SECTION} settings":
            group.title = "task settings (each applies to the tasks that have it)"
    sections = "/".join(s for s in base.sections() if s != _TASK_SECTION)
    for action in p._actions:
        if action.dest == "config":
            action.help = (f"run file (YAML or JSON): task, out, sections {sections} and one named after the "
                           "task; flags given on the command line win")


def _flags_run_type(base: type[recipe.FinetuneRun]):
    """`base` plus one section with the settings of every task (each field once; the help of a
    field that not every task has starts with the tasks that have it)."""
    owners: dict[str, list[str]] = {}
    for name, task in TASKS.items():
        for f in dataclasses.fields(task.settings_class):
            owners.setdefault(f.name, []).append(name)
    fields, seen = [], set()
    for task in TASKS.values():
        hints = typing.get_type_hints(task.settings_class)
        for f in dataclasses.fields(task.settings_class):
            if f.name not in seen:
                seen.add(f.name)
                metadata = dict(f.metadata)
                if len(owners[f.name]) < len(TASKS):
                    metadata["help"] = f"{', '.join(owners[f.name])}: {metadata.get('help', '')}"
                fields.append((f.name, hints[f.name], dataclasses.field(default=f.default, metadata=metadata)))
    every = dataclasses.make_dataclass("EveryTaskSettings", fields, bases=(Settings,),
                                       namespace={"section": _TASK_SECTION})
    return dataclasses.make_dataclass(f"{base.__name__}Flags", [(_TASK_SECTION, every, dataclasses.field(default=None))],
                                      bases=(base,))


def _explain_defaults(parser: argparse.ArgumentParser, base: type[recipe.FinetuneRun]) -> None:
    """Help that says, per flag, what a run gets without it: "required" for what a run needs, and
    after the common default each task's own where it differs (``default: 16; sft: 8``)."""
    for action in parser._actions:
        if action.dest in _REQUIRED:
            action.help = action.help.replace("(default: off)", "(required: the flag or the run file)")
        section, _, name = action.dest.partition(".")
        if not name or not (action.help or "").endswith(")"):
            continue
        if section == _TASK_SECTION:  # the first declaring task's default is the help's; the others' differ
            defaults = {task: _settings_default(TASKS[task].settings_class, name) for task in TASKS
                        if name in {f.name for f in dataclasses.fields(TASKS[task].settings_class)}}
            common = next(iter(defaults.values()))
            own = [f"{task}: {shown_default(value)}" for task, value in defaults.items() if value != common]
        else:
            common = base.default(section, name)
            own = [f"{task}: {shown_default(value)}" for task in TASKS
                   if (value := recipe.run_type(task, base).default(section, name)) != common]
        if own:
            action.help = f"{action.help[:-1]}; {'; '.join(own)})"


def _settings_default(settings: type, name: str):
    field = next(f for f in dataclasses.fields(settings) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def run_of_args(args: argparse.Namespace, base: type[recipe.FinetuneRun] = recipe.FinetuneRun) -> recipe.FinetuneRun:
    """The run of --config (if given) with the flags given on top."""
    given = given_values(args)
    for name in base.top_level():
        if name in vars(args):
            given[name] = getattr(args, name)
    path = getattr(args, "config", None)
    task = given.get("task") or (read_run_file(path).get("task") if path else None)
    task_values = given.pop(_TASK_SECTION, {})
    if task_values and task:
        _refuse_other_tasks_settings(task, task_values)
        given[task] = task_values
    return recipe.load_run(path, given, base=base)


def _refuse_other_tasks_settings(task: str, values: dict) -> None:
    """A task setting given for a task that has none such: say which tasks it is for."""
    from plmkit.errors import ConfigError
    if task not in TASKS:
        return  # (the unknown task is named by the run's check)
    own = set(TASKS[task].settings_class.field_names())
    for name in values:
        if name not in own:
            owners = [t for t, cls in TASKS.items() if name in cls.settings_class.field_names()]
            raise ConfigError(f"--{name.replace('_', '-')} is a setting of {' and '.join(owners)}, not of --task {task}")


def run(args: argparse.Namespace) -> int:
    config = run_of_args(args)
    if getattr(args, "print_config", False):
        sys.stdout.write(config.to_yaml())
        return 0
    from plmkit.training.distributed import is_main
    result = recipe.run(config)
    line = config.make_task().finished(result)
    if line and is_main():  # (under torchrun: rank 0's)
        print(line)
    return 0
