"""RunConfig: defaults < run file < flags, unknown keys named, flags generated from the fields."""
import argparse
from dataclasses import dataclass

import pytest

from plmkit.cli.flags import add_run_flags, run_from_args
from plmkit.errors import ConfigError
from plmkit.training.config import TrainConfig
from plmkit.training.run_config import RunConfig
from plmkit.utils.settings import Settings, setting


@dataclass
class DataSettings(Settings):
    section = "data"
    seq_len: int = setting(128, "tokens per example")
    corpus: list[str] = setting(help="files", default_factory=list)
    targets: tuple[str, ...] = setting(("q", "v"), "modules")
    lowercase: bool = setting(True, "lowercase", const_flags={"--cased": False})

    def validate(self):
        self.need(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")


@dataclass
class ToyRun(RunConfig):
    defaults = {"train": {"lr": 5e-4, "warmup_ratio": 0.06, "max_steps": 100}}
    out: str | None = None
    data: DataSettings = None
    train: TrainConfig = None


def parse(argv):
    parser = argparse.ArgumentParser()
    add_run_flags(parser, ToyRun)
    return run_from_args(parser.parse_args(argv), ToyRun)


def test_layers_defaults_file_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("out: runs/a\ndata:\n  seq_len: 64\ntrain:\n  lr: 1e-3\n  max_steps: 7\n")
    run = parse(["--config", str(path), "--max-steps", "9", "--grad-accum", "2", "--cased", "--targets", "q,k,v"])
    assert run.out == "runs/a" and run.data.seq_len == 64 and run.data.lowercase is False
    assert run.data.targets == ("q", "k", "v")
    assert (run.train.lr, run.train.max_steps, run.train.grad_accum_steps) == (1e-3, 9, 2)  # 1e-3: a number
    assert run.train.warmup_ratio == 0.06  # the run type's default
    assert ToyRun.build(run.to_dict()) == run  # the effective run file reads back unchanged


def test_a_warmup_given_one_way_replaces_the_default_of_the_other():
    run = parse(["--warmup-steps", "5"])
    assert (run.train.warmup_steps, run.train.warmup_ratio) == (5, 0.0)


def test_bool_flags_and_none():
    run = parse(["--no-progress-bar", "--eval-every", "none"])
    assert run.train.progress_bar is False and run.train.eval_every is None
    assert parse(["--no-progress"]).train.progress_bar is False  # the old spelling


def test_print_config(capsys):
    assert parse(["--print-config", "--seq-len", "32"]) is None
    text = capsys.readouterr().out
    assert "seq_len: 32" in text and "lr: 0.0005" in text


@pytest.mark.parametrize("text, message", [
    ("train:\n  max_step: 3\n", r"unknown key\(s\) 'max_step' \(did you mean 'max_steps'\?\)"),
    ("dta:\n  seq_len: 3\n", r"'dta' \(did you mean 'data'\?\)"),
    ("data:\n  seq_len: '64'\n", r"seq_len \(--seq-len\) must be int, got '64'"),
    ("data:\n  seq_len: 4\n", r"data: seq_len must be >= 8"),
    ("data: 3\n", r"section 'data' must be a mapping"),
    ("- 1\n", r"must be a mapping"),
    ("train: {lr: [1\n", r"not valid YAML"),
])
def test_bad_run_files_are_named(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        ToyRun.load(path)
    assert str(path) in str(err.value)


def test_bad_flag_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse(["--seq-len", "many"])
    assert "seq_len must be int" in capsys.readouterr().err


@dataclass
class ModelSettings(Settings):
    section = "model"
    extras = "fields"
    preset: str = setting("small", "size")
    fields: dict = setting(help="family fields", default_factory=dict, cli=False)


@dataclass
class VariantRun(RunConfig):
    defaults = {"train": {"max_steps": 10}}
    variant_key = ("data", "seq_len")
    variant_defaults = {512: {"train": {"lr": 1e-4}, "model": {"preset": "large"}}}
    model: ModelSettings
    data: DataSettings
    train: TrainConfig


def test_a_setting_picks_further_defaults_and_the_help_says_so():
    assert VariantRun.build({}).train.lr == 5e-5 and VariantRun.build({}).model.preset == "small"
    long = VariantRun.build({"data": {"seq_len": 512}}, {"train": {"seed": 1}})
    assert (long.train.lr, long.model.preset, long.train.max_steps) == (1e-4, "large", 10)
    assert VariantRun.build({"data": {"seq_len": 512}}, {"train": {"lr": 3e-4}}).train.lr == 3e-4  # given wins
    parser = argparse.ArgumentParser()
    add_run_flags(parser, VariantRun)
    help_text = parser.format_help()
    assert "(default: small; seq_len 512: large)" in help_text and "--fields" not in help_text


def test_extras_take_undeclared_keys_and_are_written_flat():
    run = VariantRun.build({"model": {"width": 64, "fields": {"depth": 2}}})
    assert run.model.fields == {"width": 64, "depth": 2}
    assert run.to_dict()["model"] == {"preset": "small", "width": 64, "depth": 2}
    assert VariantRun.build(run.to_dict()) == run
    with pytest.raises(ConfigError, match="fields must be a mapping"):
        VariantRun.build({"model": {"fields": 3}})


def test_tuple_flags_are_comma_separated():
    assert parse(["--betas", "0.8,0.95"]).train.betas == (0.8, 0.95)
    with pytest.raises(ConfigError, match=r"betas \(--betas\) must be 2 values \(float, float\)"):
        parse(["--betas", "0.8"])
