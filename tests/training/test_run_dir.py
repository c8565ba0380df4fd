"""A run directory keeps an earlier run unless told to replace it, and a failed start leaves nothing."""
import json
from pathlib import Path

import pytest

import finetune_helpers as h
from plmkit.errors import ConfigError, DataError
from plmkit.recipes.finetune import finetune

QUICK = dict(max_steps=2, batch_size=4, lr=1e-3, device="cpu", precision="fp32", progress_bar=False)
ROWS = [("a fine film", "pos"), ("dull and slow", "neg")] * 4


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS))
    return path


def tune(train, out, **extra):
    return finetune("classification", h.tiny_model_dir(), train, out, **{**QUICK, **extra})


def test_an_earlier_run_is_kept_unless_overwrite_says_to_replace_it(tmp_path, train):
    out = tmp_path / "run"
    tune(train, out, eval_data=train)
    def files():
        return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".plmkit.lock"}

    before = files()
    with pytest.raises(ConfigError, match=r"already holds a run \(run.yaml, .*model, best\): --resume it, give "
                                          r"another --out, or add --overwrite"):
        tune(train, out, lr=5e-4)
    assert files() == before
    tune(train, out, lr=5e-4, overwrite=True)
    assert not (out / "best").exists()  # the earlier run's best model went with it
    assert "lr: 0.0005" in (out / "run.yaml").read_text()
    with pytest.raises(ConfigError, match="--overwrite replaces the run in --out and --resume continues it"):
        tune(train, out, overwrite=True, resume=True)


def test_a_failed_start_leaves_no_directory_and_no_run_file(tmp_path, train):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "pos"}\n[1, 2]\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        tune(bad, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    tune(train, kept)
    saved = (kept / "run.yaml").read_text()
    with pytest.raises(DataError, match="bad.jsonl:2"):
        tune(bad, kept, overwrite=True)
    assert (kept / "run.yaml").read_text() == saved and (kept / "model").is_dir()


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, train):
    with pytest.raises(ConfigError, match=r"--resume: .*typo holds no run to resume; check --out"):
        tune(train, tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()


def test_python_paths_may_be_paths_and_other_types_are_named(tmp_path, train):
    with pytest.raises(ConfigError, match=r"out \(--out\) must be str or None, got 3"):
        tune(train, 3)
    with pytest.raises(ConfigError, match=r"say the output directory"):
        tune(train, None)
    assert not (tmp_path.parent / "None").exists()


def test_a_failed_starts_cleanup_never_takes_the_directory_from_a_run_that_took_the_lock(tmp_path, monkeypatch):
    """A failed start removes its lock file (and the empty directory) while it still holds the lock: a run that
    tries to start during the cleanup is refused or keeps the directory to itself, never shares it with a third."""
    import contextlib
    import os

    from plmkit.training.run_dir import claimed
    from plmkit.utils.lock import run_lock
    out, listdir, second = tmp_path / "run", os.listdir, contextlib.ExitStack()
    tried = []

    def another_run_starts(path):  # the failed start's cleanup looks at the directory: a second run starts now
        if Path(path) == out and not tried:
            tried.append(True)
            with contextlib.suppress(ConfigError):  # (refused while the failed start holds the lock)
                second.enter_context(run_lock(out, "second"))
                tried.append("took it")
        return listdir(path)

    monkeypatch.setattr(os, "listdir", another_run_starts)
    with pytest.raises(RuntimeError), claimed(out, "first", resume=False, overwrite=False):
        raise RuntimeError("a failed start")
    monkeypatch.setattr(os, "listdir", listdir)
    assert tried
    with second:
        if "took it" in tried:
            with pytest.raises(ConfigError, match="in use by another run"), claimed(out, "third", False, False):
                pass
    with claimed(out, "fourth", resume=False, overwrite=False):  # free again once the second run is done
        pass


def test_a_pretraining_runs_tokenizer_is_part_of_it_and_alone_what_a_failed_start_left(tmp_path, train):
    from plmkit.training.run_dir import clear, earlier_run
    out = tmp_path / "run"
    (out / "tokenizer").mkdir(parents=True)
    assert earlier_run(out) == []  # a failed start's: the next start reuses or replaces it (plmkit.recipes.pretrain)
    (out / "metrics.jsonl").write_text("")
    assert earlier_run(out) == ["metrics.jsonl", "tokenizer"]
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics.jsonl, tokenizer\)"):
        tune(train, out)
    clear(out)  # what --overwrite does, for any command
    assert not (out / "tokenizer").exists() and not (out / "metrics.jsonl").exists()
