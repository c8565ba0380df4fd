"""Every declared setting, table-driven: a value of the wrong type and a value out of its declared range
are each one error line naming the setting, in Python and on the command line."""
import dataclasses
import importlib
import pkgutil
import typing

import pytest

import plmkit
from plmkit.cli import main
from plmkit.errors import ConfigError
from plmkit.tasks import TASKS
from plmkit.utils.settings import Settings, is_union

BASE = {"TrainConfig": {"max_steps": 1}, "FinetuneTrain": {"max_steps": 1}, "InferenceSettings": {"model": "m"},
        "ExportSettings": {"model": "m", "out": "o"}, "PruneSettings": {"model": "m", "out": "o", "data": "d", "heads": 0.1}}
# numbers that may be any value (a score threshold), or whose range their own check owns (a duration)
UNBOUNDED = {"null_score_diff_threshold", "time_budget", "length_penalty"}


for _module in pkgutil.walk_packages(plmkit.__path__, "plmkit."):  # every module: each declares its settings
    if not _module.name.endswith("__main__"):
        importlib.import_module(_module.name)


def every_settings_class() -> list[type[Settings]]:
    found, todo = [], list(Settings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("plmkit.") and "Flags" not in cls.__name__ and "EveryTask" not in cls.__name__:
            found.append(cls)
    return sorted(set(found) | {t.settings_class for t in TASKS.values()}, key=lambda c: c.__name__)


def kinds(hint) -> set:
    """The types a hint allows; a tuple of numbers counts as one (its items are checked)."""
    options = typing.get_args(hint) if is_union(hint) else (hint,)
    out = set()
    for option in options:
        origin, items = typing.get_origin(option), typing.get_args(option)
        out.add(origin or option)
        if origin is tuple and not set(items) & {int, float}:
            out.add("text tuple")
    return out


def fields():
    for cls in every_settings_class():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name != cls.extras:
                yield pytest.param(cls, f, hints[f.name], id=f"{cls.__name__}.{f.name}")


def wrong_type(hint):
    allowed = kinds(hint)
    if allowed & {int, float} and str not in allowed:
        return "x"
    if allowed & {list, tuple}:
        return 5
    if bool in allowed:
        return "yes"
    if str in allowed:
        return [1]
    return None


def out_of_range(bounds: dict, integer: bool):
    step = 1 if integer else 0.5
    if "at_least" in bounds:
        return bounds["at_least"] - step
    if "above" in bounds:
        return bounds["above"]
    if "at_most" in bounds:
        return bounds["at_most"] + step
    return bounds["below"]


def build(cls, name, value):
    return cls.from_dict({**BASE.get(cls.__name__, {}), name: value})


def assert_named(err: ConfigError, name: str):
    message = str(err)
    assert "\n" not in message and name in message, message


@pytest.mark.parametrize("cls, f, hint", list(fields()))
def test_a_wrong_type_is_one_line_naming_the_setting(cls, f, hint):
    value = wrong_type(hint)
    if value is None:
        pytest.skip(f"{hint}: no scalar type to get wrong")
    with pytest.raises(ConfigError) as err:
        build(cls, f.name, value)
    assert_named(err.value, f.name)


@pytest.mark.parametrize("cls, f, hint", list(fields()))
def test_a_value_out_of_range_is_one_line_naming_the_setting(cls, f, hint):
    numeric = kinds(hint) & {int, float} or (tuple in kinds(hint) and "text tuple" not in kinds(hint))
    bounds = f.metadata.get("bounds")
    if not numeric or f.name in UNBOUNDED:
        return
    assert bounds, f"{cls.__name__}.{f.name} is a number without a declared range (setting(at_least=...))"
    value = out_of_range(bounds, int in kinds(hint))
    if tuple in kinds(hint):
        value = [value, value]
    with pytest.raises(ConfigError) as err:
        build(cls, f.name, value)
    assert_named(err.value, f.name)
    with pytest.raises(ConfigError) as err:  # and never a NaN
        build(cls, f.name, [float("nan")] * 2 if tuple in kinds(hint) else float("nan"))
    assert_named(err.value, f.name)


COMMANDS = {  # a command line that gets as far as its settings, and the flags to feed it
    "finetune": ["finetune", "--task", "qa", "--model", "m", "--train", "t", "--out", "o", "--print-config"],
    "pretrain": ["pretrain", "--corpus", "c", "--out", "o", "--max-steps", "1", "--print-config"],
    "evaluate": ["evaluate", "--model", "m", "--data", "d"],
    "generate": ["generate", "--model", "m", "--prompt", "p"],
    "chat": ["chat", "--model", "m"],
}


def numeric_flags(command):
    from plmkit.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        section, _, name = action.dest.partition(".")
        if name and action.option_strings and action.type is not None:
            yield action.option_strings[0], name


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_numeric_flag_of_every_command_is_checked_where_it_enters(command, capsys):
    checked = 0
    for flag, name in numeric_flags(command):
        for value in ("-7", "nan"):
            code = _run(COMMANDS[command] + [flag, value])
            err = capsys.readouterr().err.strip().splitlines()
            if code == 0 or "does not exist" in err[-1]:
                continue  # a value this setting takes (a threshold may be negative): on to the missing model
            assert code == 2 and (name in err[-1] or flag in err[-1]), (flag, value, err)
            checked += 1
    assert checked >= 4


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse: a value that does not parse
        return exit_.code
