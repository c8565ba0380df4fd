"""A disk that fills at any write of a fine-tuning run, in turn: the run stops with one line naming the
file, nothing written before is damaged, and ``--resume`` then ends exactly where an uninterrupted run
ends (the same losses, evaluations and final weights)."""
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


def outcome(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s")} for r in records]
    return kept, load_file(out / "model" / "model.safetensors"), json.loads((out / "best" / "best.json").read_text())


def test_a_disk_that_fills_at_any_write_loses_nothing_and_resume_is_exact(tmp_path, monkeypatch):
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    h.tiny_model_dir()  # written before the disk fills
    counter = FullDisk(None)
    run(tmp_path, monkeypatch, counter, tmp_path / "straight")
    records, weights, best = outcome(tmp_path / "straight")
    assert counter.writes > 30  # run.yaml, logs, checkpoints, best/, model/, curves ...
    for k in range(1, counter.writes + 1):
        out = tmp_path / f"full-{k}"
        with pytest.raises(WriteError) as err:
            run(tmp_path, monkeypatch, FullDisk(k), out)
        message = str(err.value)
        assert "\n" not in message and "the disk is full: free some space" in message and str(out) in message, k
        assert ("--resume" in message) == bool(earlier_run(out)), k  # says how to go on
        assert not list(out.rglob(".*.tmp")), k  # no temporary left behind
        for log in out.glob("metrics.jsonl"):
            assert log.read_text() == "" or log.read_text().endswith("\n"), k  # whole lines only
        resumed = run(tmp_path, monkeypatch, FullDisk(None), out, resume=bool(earlier_run(out)))  # as the error says
        assert resumed.step == 4, k
        got_records, got_weights, got_best = outcome(out)
        assert got_records == records, k
        assert got_best == best, k
        assert got_weights.keys() == weights.keys() and all(torch.equal(got_weights[n], weights[n]) for n in weights), k


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
