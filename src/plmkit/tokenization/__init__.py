"""Tokenizers: a small Hugging Face compatible layer over the Rust `tokenizers` library.

`Tokenizer` loads WordPiece (BERT, also from vocab.txt), byte-level BPE (GPT-2, BART),
SentencePiece-like BPE and Unigram (Marian style) tokenizers from local directories, encodes text
exactly like transformers' fast tokenizers, saves directories transformers can load, and trains
new vocabularies (`Tokenizer.train`: one path for every model kind and style, a joint
source/target vocabulary from parallel JSONL).

    tok = Tokenizer.from_pretrained("path/to/dir")
    batch = tok(["a first text", "a second"], padding=True, truncation=True, return_tensors="pt")
    model(**batch)
    batch = tok(sources, text_target=targets, max_length=256, max_target_length=128, truncation=True)
    batch.labels, sum(batch.truncated["labels"])   # seq2seq labels (padding -100) and how many were cut
    tok(words, is_split_into_words=True).word_ids()  # pre-tokenized input (NER), tokens mapped to words
    tok(questions, contexts, truncation="only_second", max_length=384, stride=128,
        return_overflowing_tokens=True, return_offsets_mapping=True)  # QA windows, overflow_to_sample_mapping

Unlike transformers, input longer than the model allows is an error (not a
warning), and a tokenizer without a pad token never pads with eos silently.

Modules: `tokenizer` (the `Tokenizer` class), `specials` (special tokens and the styles bert,
gpt2, bart, marian), `files` (reading tokenizer directories), `training` (learning vocabularies).
"""
from plmkit.tokenization.specials import BERT_SPECIAL_TOKENS, END_OF_TEXT, SPECIAL_NAMES
from plmkit.tokenization.tokenizer import AutoTokenizer, BatchEncoding, Tokenizer

__all__ = ["AutoTokenizer", "BatchEncoding", "BERT_SPECIAL_TOKENS", "END_OF_TEXT", "SPECIAL_NAMES", "Tokenizer"]
