"""Tokenize a corpus once into a memory-mapped token array, cached on disk.

Layout of a cache entry ``<cache_root>/<key>/``::

    tokens.bin       every sentence's token ids back to back (no special tokens),
                     uint16 when the vocabulary has < 65536 ids, else uint32
    sentences.npy    int64 (S + 1,): sentence i is tokens[sentences[i]:sentences[i + 1]]
    documents.npy    int64 (D + 1,): document d is sentences documents[d]:documents[d + 1]
    doc_files.npy    int32 (D,): index (into meta["files"]) of the file each document comes from
    meta.json        counts, dtype, the corpus files and the tokenizer hash

The key hashes the corpus files (resolved path, size, mtime), the tokenizer (its
full serialised pipeline: normalizer, vocabulary, ...) and `FORMAT`, so a changed
file or tokenizer builds a new entry and an unchanged one is reused. Entries are
written into a temporary directory and renamed into place (a crash leaves no
half-written entry). Sentences come from `split_sentences`; documents and
sentences with no tokens are skipped.

Two ways to tokenize (`build_token_shards(..., whole_documents=...)`):

* sentence by sentence (BERT's): each sentence encoded alone, the whitespace between
  sentences dropped (WordPiece has no token for it);
* whole documents (a model that writes text, such as BART's denoising): each document
  encoded whole, so its spaces and line breaks are tokens as a byte-level BPE spells
  them, and cut where its sentences start (the token holding a sentence's first
  character starts it; the whitespace before it ends the sentence before).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from plmkit.data.corpus import PathLike, corpus_files, iter_documents, split_sentences
from plmkit.errors import DataError
from plmkit.utils.files import atomic_write_dir
from plmkit.utils.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = 2
DOCS_PER_BATCH = 512  # documents tokenized together (encode_batch over their sentences)


@dataclass
class TokenShards:
    """A tokenized corpus: tokens, sentence offsets, document offsets (memory-mapped)."""

    directory: Path
    tokens: np.ndarray  # (N,) uint16 | uint32, memory-mapped
    sentences: np.ndarray  # (S + 1,) int64
    documents: np.ndarray  # (D + 1,) int64
    doc_files: np.ndarray  # (D,) int32
    meta: dict
    reused: bool = False

    @classmethod
    def open(cls, directory: str | os.PathLike, reused: bool = False) -> "TokenShards":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        tokens = np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],)) \
            if meta["num_tokens"] else np.zeros(0, dtype=meta["dtype"])
        return cls(directory, tokens, np.load(directory / "sentences.npy"), np.load(directory / "documents.npy"),
                   np.load(directory / "doc_files.npy"), meta, reused)

    @property
    def num_documents(self) -> int:
        return len(self.documents) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentences) - 1

    def document_sentences(self, doc: int) -> range:
        return range(int(self.documents[doc]), int(self.documents[doc + 1]))

    def sentence(self, i: int) -> np.ndarray:
        return self.tokens[self.sentences[i]:self.sentences[i + 1]]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 2**16 else np.dtype(np.uint32)


def corpus_fingerprint(paths: Sequence[PathLike]) -> list[dict]:
    """(path, size, mtime) of every corpus file that `iter_documents(paths)` reads, in order."""
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = []
    for file in corpus_files(roots):
        st = file.stat()
        out.append({"path": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def tokenizer_hash(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def cached_shards(paths: Sequence[PathLike] | PathLike, tokenizer, cache_root: str | os.PathLike, write,
                  key: dict) -> TokenShards:
    """The cache protocol every tokenized corpus follows: the entry is keyed by the corpus files, the
    tokenizer and ``key`` (format, settings); reuse it if it exists, else ``write(directory, files)``
    into a temporary directory and rename it into place (one line logged at INFO either way)."""
    files = corpus_fingerprint(paths)
    if not files:
        listed = ", ".join(map(str, [paths] if isinstance(paths, (str, os.PathLike)) else paths)) or "(no paths given)"
        raise DataError(f"empty corpus: no corpus files in {listed}")
    blob = json.dumps({**key, "files": files, "tokenizer": tokenizer_hash(tokenizer)}, sort_keys=True)
    root = Path(cache_root)
    final = root / hashlib.sha256(blob.encode()).hexdigest()[:20]
    if (final / "meta.json").is_file():
        shards = TokenShards.open(final, reused=True)
        log.info(f"reusing tokenized corpus {final} ({shards.meta['num_tokens']:,} tokens, "
                 f"{shards.num_documents:,} documents)")
        return shards
    # replace=False: an entry another process finished first is kept (it holds the same tokens)
    atomic_write_dir(final, lambda directory: write(directory, files), replace=False)
    shards = TokenShards.open(final)
    log.info(f"tokenized corpus: {shards.meta['num_tokens']:,} tokens, {shards.num_sentences:,} sentences, "
             f"{shards.num_documents:,} documents -> {final}")
    return shards


def build_token_shards(paths: Sequence[PathLike], tokenizer, cache_root: str | os.PathLike,
                       progress: bool | None = None, whole_documents: bool = False) -> TokenShards:
    """Tokenize the corpus at `paths` sentence by sentence (or `whole_documents`, cut at their
    sentences: see the module docstring) into `cache_root/<key>/`, or reuse that entry.

    `progress`: show a tqdm bar (default: when stderr is a terminal). One line logged at INFO
    says whether the cache was reused or built.
    """
    encode = _whole_documents if whole_documents else _sentences
    return cached_shards(paths, tokenizer, cache_root,
                         lambda directory, files: _write_entry(directory, paths, tokenizer, files, progress, encode),
                         key={"format": FORMAT, **({"documents": "whole"} if whole_documents else {})})


def _sentences(backend, texts: list[str]) -> list[list[list[int]]]:
    """Per text, the ids of each of its sentences, encoded one by one."""
    per_doc = [split_sentences(text) for text in texts]
    flat = [s for sentences in per_doc for s in sentences]
    ids = iter(enc.ids for enc in (backend.encode_batch(flat, add_special_tokens=False) if flat else []))
    return [[next(ids) for _ in sentences] for sentences in per_doc]


def _whole_documents(backend, texts: list[str]) -> list[list[list[int]]]:
    """Per text, its ids encoded whole, cut where its sentences start."""
    out = []
    for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False)):
        ids = np.asarray(enc.ids, dtype=np.int64)
        out.append([piece.tolist() for piece in np.split(ids, sentence_starts(text, enc.offsets))])
    return out


_SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)  # every str.isspace()


def sentence_starts(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Token indices (in (0, n), increasing) where the second and later sentences of `text` start,
    given its tokens' character `offsets` (n, 2). `split_sentences` drops or joins whitespace only,
    so sentence k starts at the non-space character that follows the non-space characters of the
    sentences before it; the token holding that character is the sentence's first."""
    sentences = split_sentences(text)
    if len(sentences) < 2 or len(offsets) < 2:
        return np.zeros(0, dtype=np.int64)
    solid = np.cumsum([0] + [_solid_count(s) for s in sentences[:-1]])[1:]  # non-space chars before sentence k
    before = np.concatenate([[0], np.cumsum(~_is_space(text))])  # non-space chars before character i
    ends = before[np.asarray(offsets, dtype=np.int64)[:, 1]]  # ... before each token's end
    starts = np.unique(np.searchsorted(ends, solid, side="right"))
    return starts[(starts > 0) & (starts < len(offsets))]


def _is_space(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.isin(codes, _SPACE_CODES)


def _solid_count(text: str) -> int:
    return len(text) - int(_is_space(text).sum())


def _write_entry(directory: Path, paths, tokenizer, files: list[dict], progress: bool | None, encode) -> None:
    backend = tokenizer.backend_tokenizer
    dtype = token_dtype(len(tokenizer))
    sentence_ends, doc_ends, doc_files = [0], [0], []
    file_index = {f["path"]: i for i, f in enumerate(files)}
    n_tokens = 0
    # bytes of the corpus files on disk (compressed for .gz), as iter_documents reports reading them
    bar = progress_bar(total=sum(f["size"] for f in files), unit="B", unit_scale=True, desc="tokenizing corpus",
               dynamic_ncols=True, disable=not (sys.stderr.isatty() if progress is None else progress))
    read: list[int] = []
    with open(directory / "tokens.bin", "wb") as out:
        for docs in _batched(iter_documents(paths, on_read=read.append), DOCS_PER_BATCH):
            for doc, sentences in zip(docs, encode(backend, [doc.text for doc in docs])):
                kept = 0
                for ids in sentences:
                    if ids:
                        out.write(np.asarray(ids, dtype=dtype).tobytes())
                        n_tokens += len(ids)
                        sentence_ends.append(n_tokens)
                        kept += 1
                if kept:
                    doc_ends.append(len(sentence_ends) - 1)
                    doc_files.append(file_index.get(str(Path(doc.source.rsplit(":", 1)[0]).resolve()), -1))
            bar.update(sum(read))
            read.clear()
    bar.update(sum(read))  # the end of the last file
    bar.close()
    if len(doc_ends) == 1:
        raise DataError("empty corpus: the tokenizer produced no tokens for any document")
    np.save(directory / "sentences.npy", np.asarray(sentence_ends, dtype=np.int64))
    np.save(directory / "documents.npy", np.asarray(doc_ends, dtype=np.int64))
    np.save(directory / "doc_files.npy", np.asarray(doc_files, dtype=np.int32))
    meta = {"format": FORMAT, "dtype": dtype.name, "vocab_size": len(tokenizer), "num_tokens": n_tokens,
            "num_sentences": len(sentence_ends) - 1, "num_documents": len(doc_ends) - 1,
            "tokenizer": tokenizer_hash(tokenizer), "files": files}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
