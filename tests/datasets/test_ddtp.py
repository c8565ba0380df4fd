"""The DDTP sets (fr-en, ja-en, zh-en, de-en, debian-summaries): Translation and Packages files in their
real format → aligned pairs, package families, deduplication and splits without leakage; the download
from a mirror (a file:// one here) checked against InRelease; and one real fetch, of the smallest set."""
from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import random
import urllib.request

import pytest

from plmkit import datasets as F
from plmkit.cli import main as cli_main
from plmkit.datasets import download
from plmkit.datasets.common import normalize, split_of, template_keys
from plmkit.datasets.ddtp import (Archive, Description, Pair, convert_translation, descriptions, families,
                                  parse_description, source_packages, translation_pairs)
from plmkit.datasets.de_en import convert_de_en
from plmkit.datasets.debian_summaries import convert_summaries

# Records as bookworm's main/i18n/Translation-* and main/binary-amd64/Packages have them (the text is ours).
TRANSLATION_EN = """\
Package: towers
Description-md5: 1c6f24b0cf0b2ec24e8e0d8e4a6e0c01
Description-en: real-time strategy game of ancient towers
 Towers is a free real-time strategy game in which players raise
 towers and defend them against waves of invaders.
 .
 This package contains the game engine.

Package: towers-data
Description-md5: 2d7e35c1d01c3fd35f9f1e9f5b7f1d02
Description-en: real-time strategy game of ancient towers (data files)
 Towers is a free real-time strategy game in which players raise
 towers and defend them against waves of invaders.
 .
 This package contains the maps, sounds and pictures of the game.

Package: libquux-dev
Description-md5: 3e8f46d2e12d40e4601f2f0f6c802e03
Description-en: calendar parsing library - development files
 Quux reads and writes iCalendar files.
 .
 This package contains the development files.

Package: libquux1
Description-md5: 4f90570ef23e51f5712f3f107d913f04
Description-en: calendar parsing library
 Quux reads and writes iCalendar files.

Package: hello
Description-md5: 5a01681f034f62060823404118e24005
Description-en: GNU Hello
 The GNU hello program produces a familiar, friendly greeting.
 .
 It lets you:
  * greet the world;
  * show how GNU programs are written.

Package: hello-traditional
Description-md5: 5a01681f034f62060823404118e24005
Description-en: GNU Hello
 The GNU hello program produces a familiar, friendly greeting.
 .
 It lets you:
  * greet the world;
  * show how GNU programs are written.
"""

TRANSLATION_FR = """\
Package: towers
Description-md5: 1c6f24b0cf0b2ec24e8e0d8e4a6e0c01
Description-fr: jeu de stratégie en temps réel de tours antiques
 Towers est un jeu libre de stratégie en temps réel dans lequel les
 joueurs élèvent des tours
 et les défendent contre des vagues d'envahisseurs.
 .
 Ce paquet contient le moteur du jeu.

Package: towers-data
Description-md5: 2d7e35c1d01c3fd35f9f1e9f5b7f1d02
Description-fr: jeu de stratégie en temps réel de tours antiques (données)
 Towers est un jeu libre de stratégie en temps réel dans lequel les
 joueurs élèvent des tours et les défendent contre des vagues d'envahisseurs.
 .
 Ce paquet contient les cartes, les sons et les images du jeu.

Package: libquux-dev
Description-md5: 3e8f46d2e12d40e4601f2f0f6c802e03
Description-fr: bibliothèque d'analyse de calendriers - fichiers de développement
 Quux lit et écrit des fichiers iCalendar. Ce paquet contient les fichiers
 de développement.

Package: hello
Description-md5: 5a01681f034f62060823404118e24005
Description-fr: GNU Hello
 Le programme GNU hello produit un salut familier et amical.
 .
 Il vous permet :
  * de saluer le monde ;
  * de montrer comment les programmes GNU sont écrits.

Package: oldpkg
Description-md5: 6b12792a145a73171934515229f35106
Description-fr: une description que l'anglais n'a plus
 Ce texte traduit un original disparu.
"""

TRANSLATION_ZH = """\
Package: hello
Description-md5: 5a01681f034f62060823404118e24005
Description-zh_CN: GNU 问候程序
 GNU hello 程序会输出一句熟悉而友好的
 问候语。
 .
 它可以让您：
  * 向世界问好；
  * 展示 GNU 程序是怎样写成的。
"""

PACKAGES = """\
Package: towers
Version: 0.26-1
Installed-Size: 2046
Maintainer: Debian Games Team <pkg-games-devel@lists.alioth.debian.org>
Architecture: amd64
Source: towers-game (0.26-1)
Depends: towers-data (>= 0.26), libc6 (>= 2.34)
Description: real-time strategy game of ancient towers
Description-md5: 1c6f24b0cf0b2ec24e8e0d8e4a6e0c01
Section: games

Package: towers-data
Version: 0.26-1
Architecture: all
Description: real-time strategy game of ancient towers (data files)
Section: games

Package: libquux-dev
Source: quux
Version: 1.2-3
Architecture: amd64
Description: calendar parsing library - development files

Package: libquux1
Source: quux
Version: 1.2-3
Architecture: amd64
Description: calendar parsing library
"""


def small_archive() -> Archive:
    return Archive.from_texts(TRANSLATION_EN, PACKAGES, {"fr": TRANSLATION_FR, "zh_CN": TRANSLATION_ZH})


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- parsing and aligning the real format ---------------------------------------------------------

def test_descriptions_parse_synopsis_and_paragraphs_and_join_wrapped_lines():
    english = descriptions(TRANSLATION_EN, "en")
    assert len(english) == 5  # hello and hello-traditional share one md5
    hello = english["5a01681f034f62060823404118e24005"]
    assert hello.packages == ("hello", "hello-traditional")
    assert hello.description == Description("GNU Hello", (
        "The GNU hello program produces a familiar, friendly greeting.",
        "It lets you: * greet the world; * show how GNU programs are written."))
    chinese = descriptions(TRANSLATION_ZH, "zh_CN")["5a01681f034f62060823404118e24005"].description
    assert chinese.paragraphs[0] == "GNU hello 程序会输出一句熟悉而友好的问候语。"  # no space between wrapped CJK lines
    assert chinese.paragraphs[1] == "它可以让您： * 向世界问好； * 展示 GNU 程序是怎样写成的。"
    assert parse_description("synopsis only") == Description("synopsis only", ())


def test_source_packages_and_families():
    sources = source_packages(PACKAGES)
    assert sources == {"towers": "towers-game", "towers-data": "towers-data", "libquux-dev": "quux",
                       "libquux1": "quux"}
    family = small_archive().family
    # towers and towers-data come from two source packages that share a paragraph: one family
    assert family["towers"] == family["towers-data"] == "towers-data"
    assert family["libquux-dev"] == family["libquux1"] == "quux"
    assert family["hello"] == family["hello-traditional"] == "hello"  # not in Packages: its own source


def test_a_text_shared_by_many_source_packages_is_a_template_and_joins_nothing():
    def entry(package, paragraph):
        return {f"md5-{package}": descriptions(
            f"Package: {package}\nDescription-md5: md5-{package}\nDescription-en: {package} tool\n {paragraph}\n",
            "en")[f"md5-{package}"]}

    shared = "This package contains the development files."
    english = {k: v for i in range(6) for k, v in entry(f"lib{i}-dev", shared).items()}
    assert len(set(families(english, {}).values())) == 6  # 6 source packages > FAMILY_LINK: no links
    english = {k: v for i in range(5) for k, v in entry(f"lib{i}-dev", shared).items()}
    assert set(families(english, {}).values()) == {"lib0-dev"}


def test_translation_pairs_align_by_md5_and_keep_equal_paragraph_counts_only():
    archive = small_archive()
    pairs = translation_pairs(archive.english, archive.translated["fr"], archive.family)
    assert [(p.kind, p.target) for p in pairs] == [
        ("synopsis", "real-time strategy game of ancient towers"),
        ("paragraph", "Towers is a free real-time strategy game in which players raise towers and defend them "
                      "against waves of invaders."),
        ("paragraph", "This package contains the game engine."),
        ("synopsis", "real-time strategy game of ancient towers (data files)"),
        ("paragraph", "Towers is a free real-time strategy game in which players raise towers and defend them "
                      "against waves of invaders."),
        ("paragraph", "This package contains the maps, sounds and pictures of the game."),
        ("synopsis", "calendar parsing library - development files"),  # 1 paragraph against 2: none
        # hello's synopsis is an untranslated copy ("GNU Hello"): dropped; oldpkg has no English: dropped
        ("paragraph", "The GNU hello program produces a familiar, friendly greeting."),
        ("paragraph", "It lets you: * greet the world; * show how GNU programs are written."),
    ]
    assert pairs[1].source == ("Towers est un jeu libre de stratégie en temps réel dans lequel les joueurs élèvent "
                               "des tours et les défendent contre des vagues d'envahisseurs.")
    assert {p.family for p in pairs[:6]} == {"towers-data"} and pairs[-1].family == "hello"


def test_convert_translation_writes_source_target_deduplicated(tmp_path):
    counts = convert_translation(small_archive(), "fr", tmp_path)
    records = [r for s in ("train", "dev", "test") for r in read_jsonl(tmp_path / f"{s}.jsonl")]
    assert all(set(r) == {"source", "target"} for r in records)
    # the towers paragraph is in two descriptions, translated with other line breaks: kept once
    assert len(records) == 8 and sum(counts[f"{s}.jsonl"] for s in ("train", "dev", "test")) == 8
    assert sum(counts[f"synopses.{s}.jsonl"] for s in ("train", "dev", "test")) == 3
    assert sum(counts[f"paragraphs.{s}.jsonl"] for s in ("train", "dev", "test")) == 5
    # each family whole in its split: towers (5 pairs), quux (1), hello (2)
    for family, n in (("towers-data", 5), ("quux", 1), ("hello", 2)):
        assert sum(r["target"].startswith(("real-time", "Towers", "This package contains the", "calendar", "The GNU",
                                           "It lets"))
                   for r in read_jsonl(tmp_path / f"{split_of(family)}.jsonl")) >= n
    if len({split_of(f) for f in ("towers-data", "quux", "hello")}) == 3:
        assert sorted(counts[f"{s}.jsonl"] for s in ("train", "dev", "test")) == [1, 2, 5]


def test_debian_summaries_pairs_description_with_synopsis(tmp_path):
    counts = convert_summaries(small_archive(), tmp_path)
    records = [r for s in ("train", "dev", "test") for r in read_jsonl(tmp_path / f"{s}.jsonl")]
    assert sum(counts.values()) == len(records) == 5  # hello and hello-traditional's description once
    assert {"text": "Quux reads and writes iCalendar files.\nThis package contains the development files.",
            "summary": "calendar parsing library - development files"} in records
    assert {"text": "Quux reads and writes iCalendar files.", "summary": "calendar parsing library"} in records


def test_de_en_joins_descriptions_and_dictionary_sentences(tmp_path):
    german = TRANSLATION_FR.split("\n\nPackage: hello")[0].replace("Description-fr", "Description-de")
    archive = Archive.from_texts(TRANSLATION_EN, PACKAGES, {"de": german})
    dictionary = tmp_path / "de-en"
    dictionary.write_text("# Version :: devel\nEr schläft tief. :: He is fast asleep.\n"
                          "Er schläft tief. :: He is fast asleep.\nHund {m} | Hunde {pl} :: dog | dogs\n",
                          encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    counts = convert_de_en(archive, dictionary, out)
    every = [r for s in ("train", "dev", "test") for r in read_jsonl(out / f"{s}.jsonl")]
    assert {"source": "Er schläft tief.", "target": "He is fast asleep."} in every
    assert sum(counts[f"sentences.{s}.jsonl"] for s in ("train", "dev", "test")) == 1
    assert sum(counts[f"dictionary.{s}.jsonl"] for s in ("train", "dev", "test")) == 3
    assert len(every) == 1 + 6  # the sentence + towers (5 pairs, one shared paragraph) + libquux's synopsis
    sentence_split = next(s for s in ("train", "dev", "test")
                          if {"source": "Er schläft tief.", "target": "He is fast asleep."} in read_jsonl(out / f"{s}.jsonl"))
    assert {"source": "Er schläft tief.", "target": "He is fast asleep."} in read_jsonl(out / f"dictionary.{sentence_split}.jsonl")


# --- splits without leakage, on a generated archive of a few hundred packages ---------------------

def letters(i: int, width: int = 3) -> str:
    """A name made of letters ("aab"): `normalize` makes every number 0, so names must not be numbers."""
    return "".join(chr(97 + i // 26 ** k % 26) for k in reversed(range(width)))


def generated_texts(n_sources: int = 300, langs=("fr",), seed: int = 0):
    """Translation-en, Packages and Translation-<lang> texts for `n_sources` source packages, with
    the patterns that leak when split naively: two binaries per source, every tenth source sharing its
    intro with the one before, a paragraph in every -dev package (a template), templated synopses
    ("development files for libX"). Returns ({"en", "Packages", *langs: text}, {normalized English
    text: the source packages that have it})."""
    rng = random.Random(seed)
    vocabulary = [letters(i) + "o" for i in range(400)]
    texts = {"en": [], "Packages": [], **{lang: [] for lang in langs}}
    owners: dict[str, set[str]] = {}

    def sentence(k):
        return " ".join(rng.choice(vocabulary) for _ in range(k)).capitalize() + "."

    def record(lang, package, md5, synopsis, paragraphs):
        body = "\n .\n".join(" " + p for p in paragraphs)
        return f"Package: {package}\nDescription-md5: {md5}\nDescription-{lang}: {synopsis}\n{body}\n"

    def translate(text):  # a stand-in for a translation: every word reversed
        return " ".join(word[::-1] for word in text.split())

    intro = None
    for i in range(n_sources):
        source, name = f"src-{letters(i)}", letters(i)
        intro = intro if i % 10 == 1 else sentence(12)
        binaries = [(f"app{name}", f"Tool{name} for {rng.choice(vocabulary)}", [intro, sentence(8)]),
                    (f"lib{name}-dev", f"development files for lib{name}",
                     [intro, "This package contains the development files."])]
        for package, synopsis, paragraphs in binaries:
            md5 = hashlib.md5(f"{synopsis}{paragraphs}".encode()).hexdigest()
            texts["en"].append(record("en", package, md5, synopsis, paragraphs))
            for lang in langs:
                texts[lang].append(record(lang, package, md5, translate(synopsis), [translate(p) for p in paragraphs]))
            texts["Packages"].append(f"Package: {package}\nSource: {source}\nVersion: 1.0-1\nArchitecture: amd64\n")
            for text in (synopsis, *paragraphs):
                owners.setdefault(normalize(text), set()).add(source)
    return {key: "\n".join(records) for key, records in texts.items()}, owners


def test_generated_archive_splits_by_family_without_twins_in_training(tmp_path):
    texts, owners = generated_texts()
    archive = Archive.from_texts(texts["en"], texts["Packages"], {"fr": texts["fr"]})
    counts = convert_translation(archive, "fr", tmp_path)
    parts = {s: read_jsonl(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test")}
    total = sum(len(p) for p in parts.values())
    assert 0.7 < len(parts["train"]) / total < 0.9 and parts["dev"] and parts["test"]
    assert counts["train.jsonl"] == len(parts["train"])
    # a source package (and the one sharing its intro) sits in one split only
    splits_of_source: dict[str, set[str]] = {}
    for split, records in parts.items():
        for r in records:
            sources = owners[normalize(r["target"])]
            for source in sources if len(sources) <= 2 else ():  # not the template paragraph
                splits_of_source.setdefault(source, set()).add(split)
    assert len(splits_of_source) == 300 and all(len(s) == 1 for s in splits_of_source.values())
    assert len(set(archive.family.values())) == 300 - 30  # every tenth source package joins the one before
    # no twin on either side, and no template twin ("development files for *")
    for side in ("source", "target"):
        train = {normalize(r[side]) for r in parts["train"]}
        assert not train & {normalize(r[side]) for r in parts["dev"] + parts["test"]}
        keys = template_keys([r[side] for records in parts.values() for r in records])
        n_train = len(parts["train"])
        assert not ({k for k in keys[:n_train] if k} & {k for k in keys[n_train:] if k})
    # the template paragraph, shared by every -dev package, is there once
    assert sum(r["target"] == "This package contains the development files." for rs in parts.values() for r in rs) == 1
    templated = [r for r in parts["train"] if r["target"].startswith("development files for")]
    assert templated and not [r for r in parts["test"] if r["target"].startswith("development files for")]


def test_split_of_is_a_stable_hash():
    assert [split_of(name) for name in ("towers-data", "quux", "hello", "src001", "src002")] == [
        split_of(name) for name in ("towers-data", "quux", "hello", "src001", "src002")]
    counts = {s: 0 for s in ("train", "dev", "test")}
    for i in range(10000):
        counts[split_of(f"package{i}")] += 1
    assert 7800 < counts["train"] < 8200 and 900 < counts["dev"] < 1100 and 900 < counts["test"] < 1100
    assert (split_of("a"), split_of("d"), split_of("hello", seed=7)) == ("train", "test", "dev")


# --- fetching from a mirror, checked against InRelease --------------------------------------------

def write_mirror(root, files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> str:
    """A mirror's ``dists/bookworm`` with `files` and an InRelease listing the SHA256 of `listed`
    (default: the files themselves); returns its file:// URL."""
    dists = root / "dists" / "bookworm"
    for path, data in files.items():
        (dists / path).parent.mkdir(parents=True, exist_ok=True)
        (dists / path).write_bytes(data)
    lines = [f" {hashlib.sha256(data).hexdigest()} {len(data):>8} {path}" for path, data in (listed or files).items()]
    dists.mkdir(parents=True, exist_ok=True)
    (dists / "InRelease").write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nCodename: bookworm\nMD5Sum:\n"
        " 0123456789abcdef0123456789abcdef 1 main/i18n/Translation-en.xz\nSHA256:\n" + "\n".join(lines)
        + "\n-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQ\n-----END PGP SIGNATURE-----\n", encoding="utf-8")
    return root.as_uri()


def mirror_files(*langs: str, n_sources: int = 60, seed: int = 0) -> dict[str, bytes]:
    """Translation-en.xz, Packages.xz and Translation-<lang>.bz2 of a generated archive."""
    texts, _ = generated_texts(n_sources, langs, seed)
    files = {"main/i18n/Translation-en.xz": lzma.compress(texts["en"].encode()),
             "main/binary-amd64/Packages.xz": lzma.compress(texts["Packages"].encode())}
    files.update({f"main/i18n/Translation-{lang}.bz2": bz2.compress(texts[lang].encode()) for lang in langs})
    return files


def test_fetch_from_a_mirror_checks_hashes_and_reuses_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMKIT_DEBIAN_MIRROR", write_mirror(tmp_path / "mirror", mirror_files("fr")))
    path = F.fetch("fr-en", tmp_path / "cache")
    counts = F.counts_of(path)
    assert counts["train.jsonl"] == len(read_jsonl(path / "train.jsonl")) > 0 and counts["test.jsonl"] > 0
    kept = tmp_path / "cache" / "downloads" / "debian-bookworm"
    assert sorted(p.name for p in kept.iterdir()) == [
        "InRelease", "main_binary-amd64_Packages.xz", "main_i18n_Translation-en.xz", "main_i18n_Translation-fr.bz2"]
    # fetching again uses the kept files, and a corrupted one is downloaded again
    (kept / "main_i18n_Translation-en.xz").write_bytes(b"broken")
    opened = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **kw: opened.append(url) or real_urlopen(url, **kw))
    F.fetch("fr-en", tmp_path / "cache", force=True)
    assert [url.rsplit("/", 1)[1] for url in opened] == ["Translation-en.xz"]
    assert (kept / "main_i18n_Translation-en.xz").read_bytes() == mirror_files()["main/i18n/Translation-en.xz"]


def test_a_changed_mirror_refreshes_inrelease_and_a_bad_file_is_named(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("PLMKIT_DEBIAN_MIRROR", write_mirror(mirror, mirror_files("fr")))
    F.fetch("fr-en", tmp_path / "cache")
    # the mirror moves on: other descriptions, a new language; the kept InRelease lists neither
    files = mirror_files("zh_CN", seed=1)
    write_mirror(mirror, files)
    F.fetch("zh-en", tmp_path / "cache")
    kept = tmp_path / "cache/downloads/debian-bookworm"
    assert "Translation-zh_CN.bz2" in (kept / "InRelease").read_text()
    assert (kept / "main_i18n_Translation-en.xz").read_bytes() == files["main/i18n/Translation-en.xz"]
    # a file that does not match even the fresh InRelease is an error naming it; nothing is kept
    files = mirror_files("ja", seed=1)
    write_mirror(mirror, {**files, "main/i18n/Translation-ja.bz2": b"tampered"}, listed=files)
    with pytest.raises(F.DownloadError, match=r"Translation-ja.bz2: the download does not have the SHA256 that "
                                              r"InRelease lists"):
        F.fetch("ja-en", tmp_path / "cache")
    assert not (tmp_path / "cache" / "ja-en").exists()
    assert not (tmp_path / "cache/downloads/debian-bookworm/main_i18n_Translation-ja.bz2").exists()


def test_what_cannot_be_had_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLMKIT_DEBIAN_MIRROR", write_mirror(tmp_path / "mirror", mirror_files("fr")))
    with pytest.raises(F.DownloadError, match=r"main/i18n/Translation-ja is not in file://.*/dists/bookworm/InRelease: "
                                              r"that mirror does not carry it"):
        F.fetch("ja-en", tmp_path / "cache")
    # the command line fetches what it can and names the rest
    code = cli_main(["data", "fetch", "ja-en", "fr-en", "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 2 and "fr-en: " in out and "train.jsonl" in out
    assert "could not get 1 of 2 datasets (the others are done):\n  ja-en: main/i18n/Translation-ja is not in" in err
    monkeypatch.setenv("PLMKIT_DEBIAN_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(F.DownloadError, match=r"cannot download http://127.0.0.1:9/dists/bookworm/InRelease \(.*\); "
                                              r"check that the mirror is reachable"):
        F.fetch("zh-en", tmp_path / "other-cache")


def test_the_mirror_comes_from_the_environment_then_apt_sources(tmp_path, monkeypatch):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n", encoding="utf-8")
    (etc / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n", encoding="utf-8")
    assert list(download._apt_uris(etc)) == ["http://mirror.example/debian-security", "http://mirror.example/debian/",
                                             "http://old.example/debian"]
    monkeypatch.setattr(download, "_apt_uris", lambda: iter(["http://mirror.example/debian/"]))
    monkeypatch.delenv("PLMKIT_DEBIAN_MIRROR", raising=False)
    assert download.debian_mirror() == "http://mirror.example/debian"
    monkeypatch.setenv("PLMKIT_DEBIAN_MIRROR", "http://other.example/debian/")
    assert download.debian_mirror() == "http://other.example/debian"
    monkeypatch.delenv("PLMKIT_DEBIAN_MIRROR")
    monkeypatch.setattr(download, "_apt_uris", lambda: iter([]))
    assert download.debian_mirror() == "http://deb.debian.org/debian"


def test_fetch_zh_en_from_debian_for_real(tmp_path):
    """The smallest set, from the real mirror: Translation-en, Packages and Translation-zh_CN, 15 MB."""
    try:
        path = F.fetch("zh-en", tmp_path)
    except F.DownloadError as err:
        pytest.skip(f"the Debian mirror cannot be reached: {err}")
    counts = F.counts_of(path)
    assert counts["train.jsonl"] > 1500 and counts["dev.jsonl"] > 100 and counts["test.jsonl"] > 100
    parts = {s: read_jsonl(path / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert all(set(r) == {"source", "target"} for rs in parts.values() for r in rs)
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in r["source"]) for r in parts["train"]) > 0.9 * counts["train.jsonl"]
    for side in ("source", "target"):
        train = {normalize(r[side]) for r in parts["train"]}
        assert not train & {normalize(r[side]) for r in parts["test"]}
