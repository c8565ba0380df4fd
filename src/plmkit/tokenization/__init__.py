"""Tokenizers: a small Hugging Face compatible layer over the Rust `tokenizers` library.

`Tokenizer` loads BERT WordPiece (tokenizer.json or vocab.txt) and byte-level BPE
(GPT-2 style) tokenizers from local directories, encodes text exactly like
transformers' fast tokenizers, saves directories transformers can load, and
trains new vocabularies (`train_wordpiece`, `train_bpe`).

    tok = Tokenizer.from_pretrained("path/to/dir")
    batch = tok(["a first text", "a second"], padding=True, truncation=True, return_tensors="pt")
    model(**batch)

Unlike transformers, input longer than the model allows is an error (not a
warning), and a tokenizer without a pad token never pads with eos silently.

Modules: `tokenizer` (the `Tokenizer` class), `specials` (special tokens), `files` (reading
tokenizer directories), `training` (learning vocabularies).
"""
from plmkit.tokenization.specials import BERT_SPECIAL_TOKENS, END_OF_TEXT, SPECIAL_NAMES
from plmkit.tokenization.tokenizer import AutoTokenizer, BatchEncoding, Tokenizer

__all__ = ["AutoTokenizer", "BatchEncoding", "BERT_SPECIAL_TOKENS", "END_OF_TEXT", "SPECIAL_NAMES", "Tokenizer"]
