"""Shared by the causal-LM / chat tests: a small English corpus, a tiny BPE tokenizer and tiny models."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from plmkit.data.clm import PackedBlocks
from plmkit.tokenization import END_OF_TEXT, Tokenizer

EOS = 0  # the end-of-document id of `packed_blocks`

PARAGRAPHS = [
    "The old sailor walked down to the harbour every morning.\nHe watched the boats and counted the gulls.",
    "In the spring the farmers sowed wheat and barley.\nBy summer the fields were green and tall.",
    "A small dog lived in the house at the end of the street.\nIt barked at every cart that passed.",
    "The library opened at nine and closed at five.\nStudents read there in silence all day long.",
    "Rain fell on the town for seven days.\nThe river rose and the bridge was closed.",
    "The baker made bread before the sun came up.\nThe smell of it filled the whole street.",
]


def corpus_text(repeat: int = 6) -> str:
    return "\n\n".join(p.replace("The", t, 1) for t in ("The", "One", "That", "This", "Each", "Our")[:repeat]
                       for p in PARAGRAPHS) + "\n"


def tiny_tokenizer(texts=None, vocab_size: int = 400) -> Tokenizer:
    texts = texts or [corpus_text()] + ["<|user|>\nhello\n<|assistant|>\nhi there"]
    tok = Tokenizer.train_bpe(texts, vocab_size, special_tokens=(END_OF_TEXT, "<|pad|>"), model_max_length=128)
    tok.pad_token = "<|pad|>"
    return tok


# prompt -> response pairs for SFT
PAIRS = [("hello", "hi there"), ("how are you?", "I am well, thank you."),
         ("what is your name?", "I am a small model."),
         ("good morning", "good morning to you"), ("bye", "goodbye!"), ("thanks", "you are welcome")]


def clm_run(corpus, out, **settings):
    """The PretrainRun of a decoder run: `settings` (model, data or train fields) sorted into their sections."""
    from plmkit.recipes.pretrain import PretrainRun
    sections = {"model": {}, "data": {"objective": "clm", "corpus": [str(corpus)]}, "train": {}}
    for key, value in settings.items():
        section = next(name for name, cls in PretrainRun.sections().items() if key in cls.field_names())
        sections[section][key] = str(value) if isinstance(value, Path) else value
    return PretrainRun.build({"out": str(out), **sections})


def pretrain_tiny_gpt(root):
    """A GPT-2-tiny pretrained for 40 steps on `corpus_text` (run in root/run, evaluated twice)."""
    from plmkit.recipes.pretrain import run
    (root / "corpus.txt").write_text(corpus_text())
    return run(clm_run(root / "corpus.txt", root / "run", vocab_size=400, preset="gpt2-tiny", seq_len=64,
                       batch_size=8, max_steps=40, lr=3e-3, eval_every=20, eval_fraction=0.15,
                       progress_bar=False, cache_dir=root / "cache"))


def packed_blocks(doc_lengths, seq_len, keep_partial=False):
    """PackedBlocks of synthetic documents: document d is 10(d+1), 10(d+1)+1, ... then EOS."""
    tokens, spans, start = [], [], 0
    for d, n in enumerate(doc_lengths):
        tokens += [10 * (d + 1) + i for i in range(n - 1)] + [EOS]
        spans.append((start, start + n))
        start += n
    return PackedBlocks(np.asarray(tokens), np.asarray(spans), seq_len, keep_partial)
