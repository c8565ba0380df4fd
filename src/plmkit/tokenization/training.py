"""Training vocabularies: one path for every model kind and style, over the Rust trainers.

Model kinds (`MODELS`) decide how text is split and learned:

* ``wordpiece``: BERT's (BERT normalizer, every CJK character apart, ``##`` continuations);
* ``byte-bpe``: GPT-2's and BART's byte-level BPE: any text encodes, nothing is unknown;
* ``bpe`` / ``unigram``: SentencePiece-like: a space becomes ``▁`` at the start of the next
  piece, so text without spaces (Chinese, Japanese, Thai) is learned as it stands, in pieces of
  at most `MAX_PIECE` characters; byte fallback spells a character that training never saw as
  its UTF-8 bytes (``<0xE5>`` ...), so nothing is unknown and every text decodes back.

Styles (`plmkit.tokenization.specials.STYLES`: bert, gpt2, bart, marian) decide the special
tokens and how they wrap a text.
"""
from __future__ import annotations

import json
import logging
import os
from collections import abc
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from plmkit.errors import ConfigError, DataError
from plmkit.tokenization.specials import STYLES, Style, token_list
from plmkit.utils.constants import MAX_VOCAB_SIZE
from plmkit.utils.text import describe

MODELS = ("wordpiece", "byte-bpe", "bpe", "unigram")
DEFAULT_STYLES = {"wordpiece": "bert", "byte-bpe": "gpt2", "bpe": "marian", "unigram": "marian"}
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
BYTE_FALLBACK = ("bpe", "unigram")  # the kinds that spell unseen characters with BYTE_TOKENS
MAX_PIECE = 16  # characters in a bpe or unigram piece: no whole-sentence pieces in text without spaces


@dataclass
class Trained:
    """A trained backend with what a `Tokenizer` needs to wrap it."""

    backend: tokenizers.Tokenizer
    special_tokens: dict  # {"eos_token": ..., "additional_special_tokens": [...]}
    tokenizer_class: str  # the transformers class that loads it
    style: Style


def train_vocabulary(source, vocab_size: int, *, model: str, style: str | None, fields, special_tokens,
                     lowercase: bool | None, min_frequency: int | None, show_progress: bool) -> Trained:
    """Learn a vocabulary of `model` kind in `style` (None: the kind's own) from `source`.

    `special_tokens`: all special tokens in id order (None: the style's); the style's required
    ones that are missing go first. See `Tokenizer.train` for the other arguments.
    """
    rules, specials = check_arguments(vocab_size, model=model, style=style, special_tokens=special_tokens,
                                      lowercase=lowercase, min_frequency=min_frequency)
    if model == "wordpiece" and isinstance(source, abc.Iterator):
        source = list(source)  # read twice, below
    read = _reader(source, fields)  # (the sources and fields checked here, read while training)
    roles = {name: token for name, token in rules.tokens.items() if token in specials}
    backend = _untrained(model, roles.get("unk"), lowercase is not False)
    learned = vocab_size - len(BYTE_TOKENS) if model in BYTE_FALLBACK else vocab_size  # bytes come after
    continuing = _continuing_pieces(read(), roles["unk"], lowercase is not False) if model == "wordpiece" else []
    trainer = _trainer(model, learned, specials + continuing, roles.get("unk"),
                       2 if min_frequency is None else min_frequency, show_progress)
    _train(backend, trainer, read())
    if model == "wordpiece":
        backend = _canonical_wordpiece(backend, specials, continuing)
    if model in BYTE_FALLBACK:
        backend = _with_byte_fallback(backend)
    backend.post_processor = rules.wrap(backend, roles)
    named = {f"{name}_token": token for name, token in roles.items()}
    named["additional_special_tokens"] = [t for t in specials if t not in rules.tokens.values()]
    hf_class = rules.hf_class if model == rules.hf_model else "PreTrainedTokenizerFast"
    return Trained(backend, named, hf_class, rules)


def check_arguments(vocab_size, *, model, style, special_tokens, lowercase, min_frequency) -> tuple[Style, list[str]]:
    """The style and the special tokens (in id order) of a training with these arguments, each checked
    (a command checks them before it creates its output); errors name the argument and its flag."""
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is not a tokenizer model; use one of {', '.join(MODELS)}.")
    for name, flag, value, applies, kinds in (
            ("lowercase", "--no-lowercase", lowercase, model == "wordpiece", "wordpiece"),
            ("min_frequency", "--min-frequency", min_frequency, model != "unigram", "wordpiece, bpe, byte-bpe")):
        if value is not None and not applies:
            raise ConfigError(f"{name} ({flag}) is for model {kinds}, not {model}: leave it out")
    if lowercase is not None and not isinstance(lowercase, bool):
        raise ConfigError(f"lowercase must be true or false, got {describe(lowercase)}.")
    if min_frequency is not None and not (isinstance(min_frequency, int) and not isinstance(min_frequency, bool)
                                          and min_frequency >= 0):
        raise ConfigError(f"min_frequency (--min-frequency) must be an integer >= 0, got {describe(min_frequency)}.")
    style = style or DEFAULT_STYLES[model]
    if style not in STYLES:
        raise ConfigError(f"style={style!r} is not a tokenizer style; use one of {', '.join(STYLES)}.")
    if (model == "wordpiece") != (style == "bert"):
        raise ConfigError(f"model={model!r} with style={style!r}: WordPiece vocabularies are BERT's, so "
                          "model='wordpiece' and style='bert' go together only; pick "
                          f"{'byte-bpe, bpe or unigram' if model == 'wordpiece' else 'gpt2, bart or marian'}.")
    rules = STYLES[style]
    specials = list(dict.fromkeys(rules.tokens.values() if special_tokens is None
                                  else token_list(special_tokens, "special_tokens")))
    missing = [rules.tokens[name] for name in rules.required if rules.tokens[name] not in specials]
    specials = list(dict.fromkeys(missing)) + specials
    check_vocab_size(vocab_size, specials, base=0 if model == "wordpiece" else len(BYTE_TOKENS))
    return rules, specials


def use_bert_pipeline(backend: tokenizers.Tokenizer, *, lowercase: bool, strip_accents: bool | None = None,
                      handle_chinese_chars: bool = True) -> None:
    """BERT's normalizer (clean text, CJK characters apart, lowercasing), pre-tokenizer and decoder."""
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=handle_chinese_chars, strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _untrained(model: str, unk: str | None, lowercase: bool) -> tokenizers.Tokenizer:
    """A backend with the model kind's normalizer, pre-tokenizer and decoder, before training."""
    if model == "wordpiece":
        backend = tokenizers.Tokenizer(models.WordPiece(unk_token=unk, continuing_subword_prefix="##"))
        use_bert_pipeline(backend, lowercase=lowercase)
    elif model == "byte-bpe":
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
    else:
        backend = tokenizers.Tokenizer(models.Unigram() if model == "unigram" else models.BPE(unk_token=unk))
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    return backend


def _trainer(model: str, vocab_size: int, specials: list[str], unk: str | None, min_frequency: int,
             show_progress: bool):
    common = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=show_progress)
    if model == "wordpiece":
        return trainers.WordPieceTrainer(min_frequency=min_frequency, continuing_subword_prefix="##", **common)
    if model == "unigram":
        return trainers.UnigramTrainer(unk_token=unk, max_piece_length=MAX_PIECE, **common)
    if model == "byte-bpe":
        return trainers.BpeTrainer(min_frequency=min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                   **common)
    return trainers.BpeTrainer(min_frequency=min_frequency, max_token_length=MAX_PIECE, **common)


def _continuing_pieces(texts: Iterator[str], unk: str, lowercase: bool) -> list[str]:
    """The "##" pieces (a character inside a word) a WordPiece training on `texts` starts from, sorted.

    The Rust trainer numbers them as it meets them in a per-process hash order, and breaks ties between
    equally frequent merges by those numbers, so its vocabulary (not only its ids) changes from process to
    process; given them as special tokens, in this order, it learns the same vocabulary every time.
    """
    backend = _untrained("wordpiece", unk, lowercase)
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1, special_tokens=[], show_progress=False,
                                                                 continuing_subword_prefix="##"))
    return sorted(piece for piece in backend.get_vocab() if len(piece) > 1)  # no merges: characters and "##" ones


def _canonical_wordpiece(backend: tokenizers.Tokenizer, specials: list[str],
                         continuing: list[str]) -> tokenizers.Tokenizer:
    """`backend` trained with `continuing` after `specials` as special tokens: without them as special
    tokens, and numbered as the trainer numbers pieces (specials, characters, "##" characters, merges)."""
    spec = json.loads(backend.to_str())
    model = spec["model"]
    order = sorted(model["vocab"], key=model["vocab"].get)
    extra = set(continuing) - set(specials)
    rest = [piece for piece in order[len(specials):] if piece not in extra]
    order = order[:len(specials)] + [p for p in rest if len(p) == 1] + sorted(extra) + [p for p in rest if len(p) > 1]
    model["vocab"] = {piece: i for i, piece in enumerate(order)}
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in extra]
    for token in spec["added_tokens"]:
        token["id"] = model["vocab"][token["content"]]
    return tokenizers.Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _with_byte_fallback(backend: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """`backend` with the 256 byte pieces appended to its vocabulary and byte fallback on."""
    spec = json.loads(backend.to_str())
    model = spec["model"]
    if model["type"] == "Unigram":
        # Scored far below every learned piece: a literal "<0x41>" in a text stays characters.
        have = {piece for piece, _ in model["vocab"]}
        lowest = min(score for _, score in model["vocab"]) - 1000.0
        model["vocab"] += [[piece, lowest] for piece in BYTE_TOKENS if piece not in have]
    else:
        for piece in BYTE_TOKENS:
            model["vocab"].setdefault(piece, len(model["vocab"]))
    model["byte_fallback"] = True
    return tokenizers.Tokenizer.from_str(json.dumps(spec))


def _looks_like_path(item) -> bool:
    if isinstance(item, os.PathLike):
        return True
    return isinstance(item, str) and (
        os.path.exists(item) or (not any(c.isspace() for c in item) and item.endswith((".txt", ".gz", ".jsonl"))))


def training_texts(source, fields="auto") -> Iterator[str]:
    """Texts from a path, a list of paths (read with plmkit.data.corpus, JSONL `fields` as
    `iter_texts` takes them), or an iterable of texts.

    A list counts as paths when every item is a PathLike, an existing path, or a
    space-free name ending in .txt/.gz/.jsonl (so a missing file is reported, not trained on).
    """
    return _reader(source, fields)()


def _reader(source, fields) -> Callable[[], Iterator[str]]:
    """`training_texts`, checked now, as a function that reads them (again at each call)."""
    if isinstance(source, (str, os.PathLike)):
        paths = [source]
    elif isinstance(source, (list, tuple)) and source and all(_looks_like_path(s) for s in source):
        paths = list(source)
    elif isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise DataError(f"the corpus must be a path, a list of paths or an iterable of texts, got {describe(source)}.")
    else:
        return lambda: (_checked_text(t, i) for i, t in enumerate(source))
    from plmkit.data.corpus import SUFFIXES, corpus_files, iter_texts

    files = list(corpus_files(paths))  # a missing path is an error now, before any training
    if not files:
        raise DataError(f"no corpus files ({', '.join(SUFFIXES)}) in {', '.join(map(str, paths))}")
    if fields != "auto":
        _check_fields_apply(files, fields)
    return lambda: iter_texts(paths, fields=fields)


def _check_fields_apply(files: list, fields) -> None:
    """JSONL `fields` named for the corpus `files`: an error if none is JSONL, a warning naming the
    plain-text files (their paragraphs are read whole) if some are."""
    from plmkit.data.corpus import JSONL_SUFFIXES
    plain = [str(f) for f in files if not f.name.endswith(JSONL_SUFFIXES)]
    if not plain:
        return
    named = ", ".join(plain[:3]) + (f" and {len(plain) - 3} more" if len(plain) > 3 else "")
    what = f"fields {fields if isinstance(fields, str) else ','.join(map(str, fields))} (--fields) name JSONL fields"
    if len(plain) == len(files):
        raise ConfigError(f"{what}, but the corpus is plain text ({named}), whose paragraphs are read whole: "
                          "leave them out")
    logging.getLogger("plmkit").warning("plmkit: %s; they do not apply to %s (plain text: its paragraphs are read "
                                        "whole)", what, named)


def _checked_text(text, index: int) -> str:
    if not isinstance(text, str):
        raise DataError(f"training text {index} is {describe(text)}; expected str.")
    return text


def check_vocab_size(vocab_size: int, specials: Sequence[str], base: int = 0) -> None:
    """`base`: tokens every vocabulary has (the 256 bytes of byte-level BPE and of byte fallback)."""
    least = len(specials) + base
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size <= least:
        what = f"the {len(specials)} special tokens" + (f" plus {base} byte tokens" if base else "")
        raise ConfigError(f"vocab_size={vocab_size!r} must be an int larger than {least}, {what}.")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ConfigError(f"vocab_size={vocab_size:,} is more than {MAX_VOCAB_SIZE:,} (2**24), far beyond any vocabulary "
                          "in use (the largest have about 256k tokens): give a smaller one")


def _train(backend: tokenizers.Tokenizer, trainer, texts: Iterator[str]) -> None:
    """Train `backend` in place on `texts`; an empty corpus is an error, and so is a unigram
    vocabulary without room for every character of the corpus (plus one piece)."""
    count, chars, too_small = 0, set(), False

    def counted():
        nonlocal count
        for text in texts:
            count += 1
            chars.update(text)
            yield text

    try:
        backend.train_from_iterator(counted(), trainer)
    except Exception as err:  # the Rust library raises plain Exception
        if "not large enough to contain all chars" not in str(err):
            raise
        too_small = True
    if count == 0:
        raise DataError("the training corpus is empty: no text was read, so no vocabulary can be learned.")
    if isinstance(trainer, trainers.UnigramTrainer):
        # below this the Rust trainer fails, or keeps every piece it found (far more than asked)
        least = len(chars) + len(trainer.special_tokens) + 1
        if too_small or trainer.vocab_size < least:
            raise ConfigError(
                f"vocab_size={trainer.vocab_size + len(BYTE_TOKENS)} is too small for this corpus: a unigram "
                f"vocabulary holds each of its {len(chars)} distinct characters, {len(trainer.special_tokens)} "
                f"special tokens and {len(BYTE_TOKENS)} byte tokens; use a vocab_size of at least "
                f"{least + len(BYTE_TOKENS)}, or model='bpe'.")
