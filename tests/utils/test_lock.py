"""One owner per run directory: a second process is refused by name; a killed owner frees it."""
import contextlib
import json
import subprocess
import sys
import threading
import time

import pytest

from plmkit.cli import main
from plmkit.errors import ConfigError, WriteError
from plmkit.utils import lock as lock_module
from plmkit.utils.lock import LOCK_FILE, run_lock, waiting_lock

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


def test_a_failed_start_removes_its_lock_file_and_empty_directory_while_holding_the_lock(tmp_path):
    """``remove_if_failed``: the lock file, then the directory if nothing else is there, go before the lock is
    released; nothing goes when the block succeeds or the check says no."""
    for name, check, fails in (("kept", lambda: False, True), ("fine", lambda: True, False)):
        (tmp_path / name).mkdir()
        with contextlib.suppress(RuntimeError), run_lock(tmp_path / name, "finetune", remove_if_failed=check):
            if fails:
                raise RuntimeError("a failed start")
        assert (tmp_path / name / LOCK_FILE).is_file()
    run, other = tmp_path / "run", tmp_path / "other"
    for directory in (run, other):
        directory.mkdir()
    (other / "keep.txt").write_text("x")
    for directory in (run, other):
        with pytest.raises(RuntimeError), run_lock(directory, "finetune", remove_if_failed=lambda: True):
            raise RuntimeError("a failed start")
    assert not run.exists() and sorted(p.name for p in other.iterdir()) == ["keep.txt"]


def test_a_lock_file_removed_between_open_and_lock_is_locked_anew(tmp_path, monkeypatch):
    """A failed start removes its lock file (and empty directory) after this run opened the file, before it
    locked it: this run locks the file now at the path (the directory made again), never the removed one, so a
    third run is refused rather than given the directory too."""
    run = tmp_path / "run"
    run.mkdir()
    flock, removed = lock_module.fcntl.flock, []

    def removed_first(fd, operation):
        if not removed:  # the other run's cleanup, just before our flock
            removed.append(True)
            (run / LOCK_FILE).unlink()
            run.rmdir()
        return flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", removed_first)
    with run_lock(run, "finetune") as path:
        monkeypatch.setattr(lock_module.fcntl, "flock", flock)
        assert removed and path.is_file() and json.loads(path.read_text())["command"] == "finetune"
        with pytest.raises(ConfigError, match="in use by another run"):
            with run_lock(run, "pretrain"):
                pass


def test_a_missing_directory_is_still_a_named_error(tmp_path):
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path / 'none' / LOCK_FILE}"):
        with run_lock(tmp_path / "none", "finetune"):
            pass
    assert not (tmp_path / "none").exists()


def test_waiting_lock_waits_for_the_holder_then_takes_the_lock(tmp_path, caplog):
    path = tmp_path / ".lock"
    order = []
    with waiting_lock(path, "waiting for the first"):
        def second():
            with waiting_lock(path, "waiting for the first"):
                order.append("second")

        with caplog.at_level("INFO", logger="plmkit.utils.lock"):
            thread = threading.Thread(target=second)
            thread.start()
            deadline = time.monotonic() + 30
            while "waiting for the first" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
            order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"] and path.is_file()
