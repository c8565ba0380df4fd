"""Causal-LM data: whole documents tokenized once into a memory-mapped array, packed into
fixed-length blocks (their perplexity: plmkit.evaluation.perplexity).

Tokenizing (`build_document_shards`): every document of the corpus (see plmkit.data.corpus: a
paragraph of a .txt file, a "text" field of a .jsonl line) is encoded *whole*, so its whitespace
and line breaks survive, followed by the end-of-text token (``tokenizer.eos_token_id``, GPT-2's
``<|endoftext|>``). The result uses `plmkit.data.shards.TokenShards`' on-disk layout with one
"sentence" per document, cached under ``<cache_root>/<key>/`` keyed by the corpus files, the tokenizer
and `FORMAT` (a changed file or tokenizer builds a new entry). BERT's `build_token_shards` splits
documents into sentences and drops the whitespace between them, which a generative model must
learn, hence this document-level writer next to it.

Packing (`PackedBlocks`): the documents of one split, each ending in EOS, are laid end to end and
cut into blocks of ``seq_len`` tokens; a long document continues in the next block. Each block
carries ``document_ids`` (0, 1, 2, ... per document inside the block). The decoders turn them into a
block-diagonal causal mask and restart position ids at 0 at each document (plmkit.models.decoder),
so nothing leaks between packed documents: a packed block computes exactly what its documents
would compute alone. Labels are the input ids, except -100 at each document's first token: that
target would be predicted from the previous document (the EOS ends a document; the model learns
to stop, not to guess how an unrelated document begins).

Split: held-out documents are a seeded random fraction of whole documents
(`plmkit.data.splits.split_documents`), never parts of a training document.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from plmkit.data.corpus import PathLike, iter_documents
from plmkit.data.shards import TokenShards, cached_shards, token_dtype, tokenizer_hash
from plmkit.errors import ConfigError, DataError
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.progress import progress_bar

FORMAT = "clm-documents-1"
DOCS_PER_BATCH = 256


# ------------------------------------------------------------------------------------ tokenizing
def build_document_shards(paths: Sequence[PathLike] | PathLike, tokenizer, cache_root: str | os.PathLike,
                          progress: bool | None = None) -> TokenShards:
    """Tokenize every document of `paths` whole, each followed by EOS, into `cache_root/<key>/`,
    or reuse that entry. Document d is ``tokens[documents[d]:documents[d + 1]]`` (EOS included)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no eos token to separate documents; set tokenizer.eos_token")
    return cached_shards(paths, tokenizer, cache_root,
                         lambda directory, files: _write_documents(directory, paths, tokenizer, files, progress),
                         key={"format": FORMAT, "eos": eos})


def _write_documents(directory: Path, paths, tokenizer, files: list[dict], progress: bool | None) -> None:
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    dtype = token_dtype(len(tokenizer))
    ends, doc_files, n_tokens = [0], [], 0
    file_index = {f["path"]: i for i, f in enumerate(files)}
    # bytes of the corpus files on disk (compressed for .gz), as iter_documents reports reading them
    bar = progress_bar(total=sum(f["size"] for f in files), unit="B", unit_scale=True, desc="tokenizing corpus",
               dynamic_ncols=True, disable=not (sys.stderr.isatty() if progress is None else progress))
    read: list[int] = []

    def flush(docs, out):
        nonlocal n_tokens
        for doc, enc in zip(docs, backend.encode_batch([d.text for d in docs], add_special_tokens=False)):
            if not enc.ids:
                continue
            out.write(np.asarray(enc.ids + [eos], dtype=dtype).tobytes())
            n_tokens += len(enc.ids) + 1
            ends.append(n_tokens)
            doc_files.append(file_index.get(str(Path(doc.source.rsplit(":", 1)[0]).resolve()), -1))
        bar.update(sum(read))
        read.clear()

    with open(directory / "tokens.bin", "wb") as out:
        docs = []
        for doc in iter_documents(paths, on_read=read.append):
            docs.append(doc)
            if len(docs) == DOCS_PER_BATCH:
                flush(docs, out)
                docs = []
        if docs:
            flush(docs, out)
    bar.update(sum(read))  # the end of the last file
    bar.close()
    if len(ends) == 1:
        raise DataError("empty corpus: the tokenizer produced no tokens for any document")
    offsets = np.asarray(ends, dtype=np.int64)
    np.save(directory / "sentences.npy", offsets)  # one "sentence" per document
    np.save(directory / "documents.npy", np.arange(len(ends), dtype=np.int64))
    np.save(directory / "doc_files.npy", np.asarray(doc_files, dtype=np.int32))
    meta = {"format": FORMAT, "dtype": dtype.name, "vocab_size": len(tokenizer), "num_tokens": n_tokens,
            "num_sentences": len(ends) - 1, "num_documents": len(ends) - 1, "eos_token_id": eos,
            "tokenizer": tokenizer_hash(tokenizer), "files": files}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def document_spans(shards: TokenShards) -> np.ndarray:
    """(D, 2) [start, end) token offsets of every document of a document-level TokenShards."""
    starts = shards.sentences[shards.documents[:-1]]
    ends = shards.sentences[shards.documents[1:]]
    return np.stack([starts, ends], axis=1)


# ------------------------------------------------------------------------------------ packing
class PackedBlocks:
    """Blocks of ``seq_len`` tokens packed from `documents` (each ending in EOS) of a token array.

    tokens: (N,) array (memory-mapped is fine); spans: (D, 2) [start, end) of the documents to pack,
    in order. Item i: {"input_ids": (L,) int64, "document_ids": (L,) int64} with L = seq_len, except a
    shorter last block when ``keep_partial`` (held-out data: every token counts).
    """

    def __init__(self, tokens: np.ndarray, spans: np.ndarray, seq_len: int, keep_partial: bool = False):
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ConfigError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        self.tokens, self.seq_len = tokens, seq_len
        self.spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        lengths = self.spans[:, 1] - self.spans[:, 0]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])  # stream offset of each document
        self.total = int(self.offsets[-1])
        full = self.total // seq_len
        self.num_blocks = full + (1 if keep_partial and self.total % seq_len else 0)
        if self.total and not self.num_blocks:  # fewer tokens than one block: keep them anyway
            self.num_blocks = 1

    @classmethod
    def from_shards(cls, shards: TokenShards, doc_indices, seq_len: int, keep_partial: bool = False):
        return cls(shards.tokens, document_spans(shards)[np.asarray(doc_indices, dtype=np.int64)], seq_len,
                   keep_partial)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < self.num_blocks:
            raise IndexError(i)
        start, end = i * self.seq_len, min((i + 1) * self.seq_len, self.total)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        ids, docs = [], []
        d = first
        while d < len(self.spans) and self.offsets[d] < end:
            a, b = max(start, self.offsets[d]), min(end, self.offsets[d + 1])
            if b > a:
                base = self.spans[d, 0] - self.offsets[d]
                ids.append(np.asarray(self.tokens[base + a:base + b], dtype=np.int64))
                docs.append(np.full(b - a, d - first, dtype=np.int64))
            d += 1
        return {"input_ids": np.concatenate(ids), "document_ids": np.concatenate(docs)}

    @property
    def num_tokens(self) -> int:
        return self.total


def collate_blocks(examples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack blocks (right-padded when lengths differ) into input_ids, document_ids, labels and
    attention_mask (B, L); labels are -100 at padding and at each document's first token."""
    width = max(len(e["input_ids"]) for e in examples)
    b = len(examples)
    ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    docs = torch.full((b, width), -1, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.as_tensor(e["input_ids"])
        docs[row, :n] = torch.as_tensor(e["document_ids"])
        docs[row, n:] = docs[row, n - 1] + 1  # padding: a "document" of its own
        mask[row, :n] = 1
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    starts = torch.zeros_like(mask, dtype=torch.bool)
    starts[:, 1:] = docs[:, 1:] != docs[:, :-1]
    labels = labels.masked_fill(starts, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "document_ids": docs, "labels": labels}


__all__ = ["FORMAT", "PackedBlocks", "build_document_shards", "collate_blocks", "document_spans"]
