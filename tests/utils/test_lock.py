"""One owner per run directory: a second process is refused by name; a killed owner frees it."""
import json
import subprocess
import sys

import pytest

from plmkit.cli import main
from plmkit.errors import ConfigError
from plmkit.utils.lock import LOCK_FILE, run_lock

HOLDER = """
import sys, time
from plmkit.utils.lock import run_lock
with run_lock(sys.argv[1], "finetune"):
    print("ready", flush=True)
    sys.stdin.readline()  # until the test closes stdin or kills us
"""


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path/run."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield run, proc
    proc.kill()
    proc.wait(timeout=30)


def test_a_second_owner_is_refused_naming_the_first(holder):
    run, proc = holder
    with pytest.raises(ConfigError, match=rf"{run} is in use by another run \(plmkit finetune, pid {proc.pid} on "):
        with run_lock(run, "pretrain"):
            pass
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == proc.pid  # the owner's record is untouched


def test_a_killed_owner_frees_the_directory_at_once(holder):
    run, proc = holder
    proc.kill()
    proc.wait(timeout=30)
    with run_lock(run, "finetune"):  # kill -9 released the kernel lock: nothing stale to clean
        pass


def test_finetune_and_its_resume_stop_before_writing_while_another_run_owns_out(holder, tmp_path, capsys):
    run, proc = holder
    model = tmp_path / "model"
    model.mkdir()
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": "x"}\n')
    for extra in ([], ["--resume"]):
        assert main(["finetune", "--task", "classification", "--model", str(model), "--train", str(train),
                     "--out", str(run), "--max-steps", "1", *extra]) == 2
        assert f"is in use by another run (plmkit finetune, pid {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # no run.yaml, no metrics, nothing written


def test_the_lock_is_released_after_the_block_and_held_within_it(tmp_path):
    with run_lock(tmp_path, "finetune"):
        with pytest.raises(ConfigError, match="in use by another run"):
            with run_lock(tmp_path, "finetune"):  # another open file: flock refuses it even in one process
                pass
    with run_lock(tmp_path, "finetune"):
        pass


def test_pretrain_stops_while_another_run_owns_out(holder, tmp_path, capsys):
    run, proc = holder
    (tmp_path / "corpus.txt").write_text("one two three four five six seven\n")
    assert main(["pretrain", "--corpus", str(tmp_path / "corpus.txt"), "--out", str(run), "--max-steps", "1"]) == 2
    assert f"pid {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_other_commands_write_nothing_inside_a_running_run(holder, tmp_path, capsys):
    """predict --output into the run's log, a tokenizer into its directory, a run inside it: refused."""
    run, _ = holder
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text\n" * 50)
    for argv in (["predict", "--model", str(tmp_path / "m"), "--input", "x.jsonl", "--output", str(run / "metrics.jsonl")],
                 ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "120", "--out", str(run / "tokenizer")],
                 ["finetune", "--task", "classification", "--model", str(tmp_path), "--train", str(corpus),
                  "--out", str(run / "best" / "inner")]):
        assert main(argv) == 2
        assert f"is inside {run}: {run} is in use by another run (plmkit finetune" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n' and not (run / "tokenizer").exists()
