"""Faults at every write of a fine-tuning run, in turn: a disk that fills there (the run stops with one
line naming the file) or a kill -9 there (nothing runs after it). Nothing written before is damaged,
and ``--resume`` then ends exactly where an uninterrupted run ends (the same losses, evaluations and
final weights)."""
import errno
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import finetune_helpers as h
import plmkit.training.trainer as trainer
import plmkit.utils.files as files
from plmkit.errors import WriteError
from plmkit.recipes.finetune import finetune
from plmkit.training.run_dir import earlier_run

ROWS = [("a fine film", "pos"), ("dull and slow", "neg"), ("warm and funny", "pos"), ("a waste", "neg")] * 3
RUN = dict(max_steps=4, save_every=2, keep_last=1, batch_size=4, lr=1e-3, log_every=1, eval_every=2,
           device="cpu", precision="fp32", progress_bar=False, max_length=16)


class FullDisk:
    """`plmkit.utils.files.os`, whose k-th durable write (an fsync of a written file, or a log
    append) fails with ENOSPC, as a disk that has just filled up; `writes` counts them."""

    def __init__(self, fail_at: int | None):
        self.fail_at, self.writes = fail_at, 0

    def _count(self):
        self.writes += 1
        if self.writes == self.fail_at:
            self.fault()

    def fault(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fsync(self, fd):
        self._count()  # (and no real flush: this test is about failures, not power cuts)

    def write(self, fd, data):
        self._count()
        return os.write(fd, data)

    def __getattr__(self, name):
        return getattr(os, name)


def quick_curves(records, path):
    """plot_curves' write without matplotlib's drawing (most of a tiny run's time)."""
    files.atomic_write_text(path, json.dumps(records))


def run(tmp_path, monkeypatch, disk, out, **extra):
    monkeypatch.setattr(trainer, "plot_curves", quick_curves)
    monkeypatch.setattr(files, "os", disk)
    try:
        return finetune("classification", h.tiny_model_dir(), tmp_path / "t.jsonl", out, tmp_path / "t.jsonl",
                        **{**RUN, **extra})
    finally:
        monkeypatch.setattr(files, "os", os)


class Kill(FullDisk):
    """The process dies at its k-th durable write, as by kill -9: no except or finally clause runs."""

    def fault(self):
        os._exit(137)


def outcome(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s")} for r in records]
    return kept, load_file(out / "model" / "model.safetensors"), json.loads((out / "best" / "best.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this module with one thread (a killed run is a forked child): the same sums in the
    same order, so resumed runs equal the uninterrupted one bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, one_thread):
    """The data, the number of writes of a run, and what an uninterrupted run ends with."""
    tmp = tmp_path_factory.mktemp("faults")
    (tmp / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    h.tiny_model_dir()  # written before the faults begin
    counter = FullDisk(None)
    with pytest.MonkeyPatch.context() as monkeypatch:
        run(tmp, monkeypatch, counter, tmp / "straight")
    assert counter.writes > 30  # run.yaml, logs, checkpoints, best/, model/, curves ...
    return tmp, counter.writes, outcome(tmp / "straight")


def resume_and_compare(tmp, monkeypatch, out, expected, k):
    """Go on as the error said (--resume if the run left itself in `out`), then compare."""
    assert not list(out.rglob(".*.tmp")) or isinstance(k, str), k  # (a kill leaves temporaries: swept later)
    for log in out.glob("metrics.jsonl"):
        assert isinstance(k, str) or log.read_text() == "" or log.read_text().endswith("\n"), k
    resumed = run(tmp, monkeypatch, FullDisk(None), out, resume=bool(earlier_run(out)))
    assert resumed.step == 4, k
    records, weights, best = expected
    got_records, got_weights, got_best = outcome(out)
    assert got_records == records, k
    assert got_best == best, k
    assert got_weights.keys() == weights.keys() and all(torch.equal(got_weights[n], weights[n]) for n in weights), k
    assert not list(out.rglob(".*.tmp")), k  # whatever a kill left is gone


def test_a_disk_that_fills_at_any_write_loses_nothing_and_resume_is_exact(straight, monkeypatch):
    tmp, writes, expected = straight
    for k in range(1, writes + 1):
        out = tmp / f"full-{k}"
        with pytest.raises(WriteError) as err:
            run(tmp, monkeypatch, FullDisk(k), out)
        message = str(err.value)
        assert "\n" not in message and "the disk is full: free some space" in message and str(out) in message, k
        assert ("--resume" in message) == bool(earlier_run(out)), k  # says how to go on
        resume_and_compare(tmp, monkeypatch, out, expected, k)


def test_a_kill_at_any_write_loses_nothing_and_resume_is_exact(straight, monkeypatch):
    tmp, writes, expected = straight
    for k in range(1, writes + 1):
        out = tmp / f"killed-{k}"
        pid = os.fork()
        if pid == 0:  # the run, killed at its k-th write
            try:
                run(tmp, monkeypatch, Kill(k), out)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 137, k
        resume_and_compare(tmp, monkeypatch, out, expected, f"kill {k}")


def test_real_write_errors_of_every_writer_are_one_line(tmp_path):
    """The bytes of a file written by safetensors (Rust) and by torch.save fail as they would on a full
    disk (a file-size limit makes the OS refuse the write): a WriteError naming the file, not a
    SafetensorError or torch's "unexpected pos"."""
    import subprocess
    import sys
    script = f"""
import resource, signal, torch
from pathlib import Path
from plmkit.errors import WriteError
from plmkit.utils.files import atomic_write_dir, write_safetensors, write_torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
big = {{"w": torch.zeros(100_000)}}
root = Path({str(tmp_path)!r})
for name, write in [("st", lambda: write_safetensors(root / "w.safetensors", big)),
                    ("pt", lambda: atomic_write_dir(root / "ckpt", lambda d: write_torch(d / "state.pt", big)))]:
    try:
        write()
        print(name, "no error")
    except WriteError as err:
        print(name, str(err))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith(f"st cannot write {tmp_path / 'w.safetensors'}: the file is too large")
    assert lines[1].startswith(f"pt cannot write {tmp_path / 'ckpt'}: the file is too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written left
