"""plmkit.utils.files: atomic file and directory writes, the directory check."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plmkit.errors import CheckpointError, WriteError
from plmkit.utils import files
from plmkit.utils.files import (atomic_write, atomic_write_bytes, atomic_write_dir, atomic_write_text, local_dir,
                                remove_stale_temps, write_safetensors)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "model.safetensors"
    atomic_write_text(target, "old")

    def dies(tmp):
        open(tmp, "w").write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    assert atomic_write_bytes(target, b"\x00new") == target and target.read_bytes() == b"\x00new"


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.safetensors"
    (tmp_path / ".model.safetensors.abc123.tmp").write_text("a SIGKILLed save")  # no except clause ran
    (tmp_path / f".model.safetensors.{dead_pid()}-0123abcd.tmp").write_text("its process is gone")
    running = tmp_path / f".model.safetensors.{os.getppid()}-0123abcd.tmp"  # a writer that still runs
    running.write_text("being written")
    (tmp_path / ".other.json.abc123.tmp").write_text("not ours")
    atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, ".other.json.abc123.tmp", "model.safetensors"]


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    final = tmp_path / "best"
    atomic_write_dir(final, lambda d: (d / "a.txt").write_text("1"))

    def dies(d):
        (d / "a.txt").write_text("half")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_dir(final, dies)
    assert (final / "a.txt").read_text() == "1" and names(tmp_path) == ["best"]
    atomic_write_dir(final, lambda d: (d / "b.txt").write_text("2"))
    assert names(final) == ["b.txt"] and names(tmp_path) == ["best"]
    atomic_write_dir(final, lambda d: (d / "c.txt").write_text("3"), replace=False)  # someone finished it first
    assert names(final) == ["b.txt"] and names(tmp_path) == ["best"]


def test_a_failed_rename_puts_the_old_directory_back_and_a_killed_one_is_cleaned_up(tmp_path, monkeypatch):
    final = tmp_path / "entry"
    atomic_write_dir(final, lambda d: (d / "old.txt").write_text("old"))
    rename = os.rename

    def fails_into_place(src, dst):
        if dst == final and (src / "new.txt").exists():  # the old copy is aside by now
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(files.os, "rename", fails_into_place)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(final, lambda d: (d / "new.txt").write_text("new"))
    monkeypatch.setattr(files.os, "rename", rename)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"] and (final / "old.txt").is_file()

    aside = final.rename(tmp_path / f".entry.{dead_pid()}-0123abcd.tmp")  # killed between the two renames
    atomic_write_dir(final, lambda d: (d / "new.txt").write_text("new"))
    assert not aside.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_remove_stale_temps_of_every_name(tmp_path):
    pid = dead_pid()
    (tmp_path / f".step-000008.{pid}-0123abcd.tmp").mkdir()
    (tmp_path / f".latest.{pid}-89abcdef.tmp").write_text("step-000008\n")
    (tmp_path / ".user.notes.tmp").write_text("not written by plmkit")
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".user.notes.tmp"]


def test_safetensors_store_tied_tensors_once_and_views_as_copies(tmp_path):
    weight = torch.randn(4, 3)
    block = torch.randn(6)
    tensors = {"embed.weight": weight, "head.weight": weight, "first": block[:3], "second": block[3:],
               "empty_a": torch.zeros(0), "empty_b": torch.zeros(0), "transposed": torch.randn(3, 4).t()}
    path = write_safetensors(tmp_path / "model.safetensors", tensors)
    loaded = load_file(path)
    assert sorted(loaded) == ["embed.weight", "empty_a", "empty_b", "first", "second", "transposed"]
    assert all(torch.equal(loaded[k], tensors[k]) for k in loaded)


def test_local_dir_says_what_is_wrong(tmp_path):
    assert local_dir(tmp_path, "model", "config.json", "hint") == tmp_path
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json is a file; a model is loaded from a directory holding"):
        local_dir(tmp_path / "config.json", "model", "config.json", "hint")
    with pytest.raises(CheckpointError, match=r"tokenizer directory 'org/name' does not exist\. get 'org/name'"):
        local_dir("org/name", "tokenizer", "tokenizer.json", "get {name!r}")
    with pytest.raises(CheckpointError, match=r"does not exist\.$"):  # a path, not a Hub id: no hint
        local_dir(tmp_path / "nope", "model", "config.json", "hint")


def test_an_output_that_is_holds_or_lies_in_an_input_is_refused(tmp_path):
    from plmkit.errors import ConfigError
    from plmkit.utils.files import refuse_overwriting_inputs
    model, data = tmp_path / "model", tmp_path / "data" / "train.jsonl"
    model.mkdir()
    data.parent.mkdir()
    data.write_text("{}\n")
    for out, how in [(model, "is"), (model / "ft", "is inside"), (tmp_path / "data", "holds")]:
        with pytest.raises(ConfigError, match=f"--out {out} {how} the input --"):
            refuse_overwriting_inputs(out, "--out", [("--model", model), ("--train", data)])
    with pytest.raises(ConfigError, match="--output .* is the input --input"):
        refuse_overwriting_inputs(tmp_path / "data" / "." / "train.jsonl", "--output", [("--input", data)])
    refuse_overwriting_inputs(tmp_path / "runs", "--out", [("--model", model), ("--train", data), ("--eval", None),
                                                             ("--input", "-")])  # disjoint: fine


def _full_disk(*args, **kwargs):
    import errno
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_an_atomic_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    from plmkit.errors import WriteError
    from plmkit.utils.files import atomic_write_text
    path = tmp_path / "config.json"
    atomic_write_text(path, "old\n")
    monkeypatch.setattr(Path, "write_text", _full_disk)
    with pytest.raises(WriteError, match=rf"cannot write {path}: the disk is full: free some space") as err:
        atomic_write_text(path, "new\n")
    assert "\n" not in str(err.value) and not str(err.value).startswith("[Errno")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_log_appends_are_whole_lines_or_nothing(tmp_path, monkeypatch, caplog):
    from plmkit.errors import WriteError
    from plmkit.training.metrics import MetricsLog
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "loss": 2.0})
    log.path.write_text(log.path.read_text() + '{"step": 2, "lo')  # a writer killed mid-line
    with caplog.at_level("WARNING", logger="plmkit"):
        assert log.read() == [{"step": 1, "loss": 2.0}]  # resume reads on, with a notice
    assert "dropped a torn last line" in caplog.text
    log.append({"step": 2, "loss": 1.5})  # the torn tail is cut first: no merged garbage line
    assert log.read() == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    before = log.path.read_bytes()
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(WriteError, match="metrics.jsonl: the disk is full"):
        log.append({"step": 3, "loss": 1.0})
    monkeypatch.undo()
    assert log.path.read_bytes() == before


def test_a_damaged_line_inside_the_log_is_named(tmp_path):
    from plmkit.errors import TrainingError
    from plmkit.training.metrics import MetricsLog
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TrainingError, match=r"metrics.jsonl:2: not a JSON record"):
        log.read()


def test_a_device_or_fifo_is_written_in_place_and_a_link_is_followed(tmp_path):
    from plmkit.utils.files import atomic_open
    with atomic_open(os.devnull) as f:  # /dev/null stays a device
        f.write("gone")
    assert Path(os.devnull).is_char_device()
    target = tmp_path / "results.jsonl"
    target.write_text("old\n")
    (tmp_path / "link.jsonl").symlink_to(target)
    with atomic_open(tmp_path / "link.jsonl") as f:
        f.write("new\n")
    assert (tmp_path / "link.jsonl").is_symlink() and target.read_text() == "new\n"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    with atomic_open(fifo) as f:
        f.write("through\n")
    assert reader.communicate(timeout=30)[0] == "through\n" and fifo.is_fifo()


@pytest.mark.parametrize("name", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
def test_an_anonymous_pipe_behind_a_link_is_written_in_place(name):
    """``--output >(gzip > f)`` and ``--output /dev/stdout | jq``: the link names a pipe that has no path."""
    from plmkit.utils.files import atomic_open
    read, write = os.pipe()
    with os.fdopen(read) as reader:
        with atomic_open(name.format(fd=write)) as f:
            f.write("through\n")
        os.close(write)
        assert reader.read() == "through\n"


def test_staged_writes_keep_every_old_file_when_one_fails(tmp_path, monkeypatch):
    """A model saved over another: a full disk at the weights leaves the old config.json too."""
    import safetensors.torch

    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    old = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=16))
    old.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(tensors, path, metadata=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    new = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=40, n_positions=32))
    with pytest.raises(WriteError, match="the disk is full"):
        new.save_pretrained(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no new config.json beside old weights
