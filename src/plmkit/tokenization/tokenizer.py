"""`Tokenizer`: encoding, decoding and the vocabulary, with transformers' calling conventions."""
from __future__ import annotations

import json
import numbers
import os
import re
from typing import Iterable, NamedTuple, Sequence, Union

import tokenizers
from tokenizers import AddedToken, models, normalizers, pre_tokenizers, processors

from plmkit.errors import CheckpointError, ConfigError, DataError
from plmkit.tokenization.files import (NAMED_KEY, UNLIMITED, apply_bert_options, check_options, check_specials,
                                       apply_pipeline_options, checkpoint_dir, default_class, named_tokens,
                                       read_configs, read_tokenizer_json, register_specials,
                                       special_tokens_with_sources, wordpiece_from_vocab)
from plmkit.tokenization.specials import (BERT_SPECIAL_TOKENS, END_OF_TEXT, SPECIAL_NAMES, guess_special_tokens,
                                          token_list, token_str)
from plmkit.tokenization.training import train_vocabulary
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.files import atomic_write, atomic_write_text, output_dir, staged_writes
from plmkit.utils.settings import is_int
from plmkit.utils.text import check_path, describe, lone_surrogate

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length",
            False: None, None: None, "do_not_pad": None}
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: None, None: None, "do_not_truncate": None}
STYLE_DEFAULT = object()  # Tokenizer.train's model_max_length: the style's
HOLD_GIL_UP_TO = 1000  # characters: one text this short is encoded without releasing the GIL (_encode_unprocessed)
TextInput = Union[str, Sequence[str], Sequence[tuple]]


class BatchEncoding(dict):
    """The output of a tokenizer call: a dict (so `model(**enc)` works) with attribute access.

    `encodings` holds the underlying `tokenizers.Encoding` objects, one per row. `truncated`:
    field -> one bool per row, True where truncation cut its example ("input_ids", and "labels" for
    targets; with return_overflowing_tokens, each window of a cut example): `sum(batch.truncated["labels"])`
    counts the targets that were cut. As in transformers, the token, word and character helpers (`tokens`,
    `word_ids`, `sequence_ids`, `token_to_word`, `word_to_tokens`, `char_to_token` ...) take the row first when
    given two indices, and the row 0 when given one.
    """

    def __init__(self, data: dict, encodings: list | None = None, truncated: dict[str, list[bool]] | None = None):
        super().__init__(data)
        self.encodings = encodings
        self.truncated = truncated or {}

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it has {sorted(self)}") from None

    def to(self, device) -> "BatchEncoding":
        """Move every tensor to `device` (in place) and return self."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    @property
    def n_sequences(self) -> int | None:
        """How many texts made each row: 1, or 2 for pairs (None without encodings), as in transformers."""
        return self.encodings[0].n_sequences if self.encodings else None

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of a row (special and pad tokens included)."""
        return self.encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Index of the word each token comes from (None for special and pad tokens)."""
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Which text of the pair each token comes from, 0 or 1 (None for special and pad tokens)."""
        return self.encodings[batch_index].sequence_ids

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        """Which text of the pair (0 or 1) holds a token (one argument: the token, of row 0); None for special
        and pad tokens. A negative token index counts from the row's end, as in a list."""
        encoding, token = self._token(batch_or_token_index, token_index)
        return encoding.sequence_ids[token]

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        """The word (of its text) a token comes from (one argument: the token, of row 0); None for special and
        pad tokens."""
        encoding, token = self._token(batch_or_token_index, token_index)
        return encoding.word_ids[token]

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The (start, end) characters of a token in its text (one argument: the token, of row 0); None for
        special and pad tokens."""
        encoding, token = self._token(batch_or_token_index, token_index)
        return None if encoding.sequence_ids[token] is None else CharSpan(*encoding.offsets[token])

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None,
                       sequence_index: int = 0) -> TokenSpan | None:
        """The tokens (start, end: one past the last) of word `word_index` of text `sequence_index` (one index:
        the word, of row 0); None where the row holds none of that word (cut by truncation)."""
        encoding, word = self._indexed(batch_or_word_index, word_index, "word")
        span = encoding.word_to_tokens(word, _sequence(sequence_index))
        return None if span is None else TokenSpan(*span)

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None,
                      sequence_index: int = 0) -> CharSpan | None:
        """The (start, end) characters of word `word_index` of text `sequence_index` (one index: the word, of
        row 0); None where the row holds none of that word."""
        encoding, word = self._indexed(batch_or_word_index, word_index, "word")
        span = encoding.word_to_chars(word, _sequence(sequence_index))
        return None if span is None else CharSpan(*span)

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        """The token holding character `char_index` of text `sequence_index` of row `batch_or_char_index`
        (one argument: the character, of row 0), as in transformers; None where no token holds it (a space)."""
        encoding, char = self._indexed(batch_or_char_index, char_index, "char")
        return encoding.char_to_token(char, _sequence(sequence_index))

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None,
                     sequence_index: int = 0) -> int | None:
        """The word holding character `char_index` of text `sequence_index` (one index: the character, of row 0);
        None where no word holds it (a space)."""
        encoding, char = self._indexed(batch_or_char_index, char_index, "char")
        return encoding.char_to_word(char, _sequence(sequence_index))

    def _token(self, batch_or_token_index: int, token_index: int | None):
        """(encoding, token index) for the token accessors, a negative token index counted from the row's end."""
        row, token = (0, batch_or_token_index) if token_index is None else (batch_or_token_index, token_index)
        encoding = self._row(row)
        if not is_int(token) or not -len(encoding) <= token < len(encoding):
            raise DataError(f"token index {token!r} is out of range for a row of {len(encoding)} tokens.")
        return encoding, token % len(encoding)

    def _indexed(self, batch_or_index: int, index: int | None, what: str):
        """(encoding, index) for the word and character accessors; an index must be >= 0."""
        row, position = (0, batch_or_index) if index is None else (batch_or_index, index)
        if not is_int(position) or position < 0:
            raise DataError(f"{what} index must be an integer >= 0, got {describe(position)}.")
        return self._row(row), position

    def _row(self, row: int):
        if not self.encodings:
            raise DataError("this BatchEncoding has no encodings (it was not made by a tokenizer call).")
        if not is_int(row) or not -len(self.encodings) <= row < len(self.encodings):
            raise DataError(f"batch index {row!r} is out of range for {len(self.encodings)} rows.")
        return self.encodings[row]


class TokenSpan(NamedTuple):
    """Tokens start to end (one past the last) of a word, as transformers' TokenSpan."""

    start: int
    end: int


class CharSpan(NamedTuple):
    """Characters start to end (one past the last) of a token or word in its text, as transformers' CharSpan."""

    start: int
    end: int


def _sequence(index) -> int:
    if index not in (0, 1) or isinstance(index, bool):
        raise DataError(f"sequence_index must be 0 (the text) or 1 (its pair), got {describe(index)}.")
    return index


def _special_token(name: str) -> property:
    def get(self) -> str | None:
        return self._special.get(name)

    def set(self, token: str | None) -> None:
        self._set_special(name, token)

    return property(get, set, doc=f"The {name} token string, or None if this tokenizer has none.")


def _special_token_id(name: str) -> property:
    def get(self) -> int | None:
        token = self._special.get(name)
        return None if token is None else self._backend.token_to_id(token)

    def set(self, token_id: int | None) -> None:
        self._set_special(name, None if token_id is None else self.convert_ids_to_tokens(token_id))

    return property(get, set, doc=f"The id of the {name} token, or None.")


def _side(value, name: str) -> str:
    if value not in ("right", "left"):
        raise ConfigError(f"{name} must be 'right' or 'left', got {value!r}.")
    return value


def _count(value, name: str, low: int = 1) -> int | None:
    """`value` if it is None or an integer >= `low`; a ConfigError naming `name` otherwise."""
    if value is not None and not (is_int(value) and value >= low):
        raise ConfigError(f"{name} must be an integer >= {low} or None, got {describe(value)}.")
    return value


class _Checked:
    """A tokenizer attribute checked when set: `check(value, name)` returns it or raises."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, tokenizer, owner=None):
        return self if tokenizer is None else tokenizer.__dict__[self.name]

    def __set__(self, tokenizer, value) -> None:
        tokenizer.__dict__[self.name] = self.check(value, self.name)

class Tokenizer:
    """A fast tokenizer with the calling conventions of transformers' `PreTrainedTokenizerFast`.

    Build one with `from_pretrained`, `train_wordpiece` or `train_bpe`. Attributes:
    `model_max_length` (None: no limit), `padding_side` and `truncation_side`
    ("right" or "left"), `model_input_names` (fields returned by default),
    `clean_up_tokenization_spaces` (decode's default), `named_special_tokens` (name -> token, e.g.
    {"image_token": "<img>"}: also read-only attributes, ``tok.image_token`` and ``tok.image_token_id``,
    for the names ending in ``_token``, as in transformers 5).
    """

    bos_token = _special_token("bos")
    eos_token = _special_token("eos")
    unk_token = _special_token("unk")
    sep_token = _special_token("sep")
    pad_token = _special_token("pad")
    cls_token = _special_token("cls")
    mask_token = _special_token("mask")
    bos_token_id = _special_token_id("bos")
    eos_token_id = _special_token_id("eos")
    unk_token_id = _special_token_id("unk")
    sep_token_id = _special_token_id("sep")
    pad_token_id = _special_token_id("pad")
    cls_token_id = _special_token_id("cls")
    mask_token_id = _special_token_id("mask")

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        special_tokens: dict | None = None,
        model_max_length: int | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        model_input_names: Sequence[str] | None = None,
        tokenizer_class: str | None = None,
        clean_up_tokenization_spaces: bool = False,
        named_special_tokens: dict[str, str] | None = None,
    ):
        # Truncation and padding are done per call, never by backend state.
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._special: dict[str, str] = {}
        self.additional_special_tokens: list[str] = []
        for key, value in (special_tokens or {}).items():
            if key == "additional_special_tokens":
                self.additional_special_tokens = token_list(value, key)
            elif value is not None:
                self._set_special(key.removesuffix("_token"), token_str(value, key))
        # special tokens (additional ones) under a name ({"image_token": "<img>"}: transformers' extra_special_tokens
        # given as a dict, or its *_token keys), which save_pretrained writes back as that dict
        self.named_special_tokens = named_tokens(named_special_tokens or {}, "named_special_tokens")
        self.additional_special_tokens += [t for t in self.named_special_tokens.values()
                                           if t not in self.additional_special_tokens]
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        is_wordpiece = isinstance(backend.model, models.WordPiece)
        if model_input_names is None:
            model_input_names = ["input_ids", "token_type_ids", "attention_mask"] if is_wordpiece \
                else ["input_ids", "attention_mask"]
        self.model_input_names = list(model_input_names)
        self.tokenizer_class = tokenizer_class or default_class(backend)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "Tokenizer":
        """Load from a local directory holding tokenizer.json, or vocab.txt for BERT.

        tokenizer_config.json and special_tokens_map.json are read when present, each value checked
        by type, and the two must agree on the special tokens, which must be in the vocabulary and
        (cls / sep) be those the tokenizer puts around a text; named special tokens (transformers 5's
        ``"image_token": "<img>"`` keys, a dict of extra_special_tokens) are `named_special_tokens`. `overrides` (e.g.
        `model_max_length=256`, `padding_side="left"`, `pad_token="[PAD]"`) take precedence over them.
        """
        directory = checkpoint_dir(path)
        config, source = read_configs(directory)
        overrides.pop("use_fast", None)  # plmkit tokenizers are always fast
        unknown = set(overrides) - _OVERRIDABLE - {f"{n}_token" for n in SPECIAL_NAMES}
        if unknown:
            raise ConfigError(f"Tokenizer.from_pretrained: unknown option(s) {sorted(unknown)}; "
                              f"supported: {sorted(_OVERRIDABLE)} and the <name>_token special tokens.")
        overrides = {k: v for k, v in check_options(overrides, "Tokenizer.from_pretrained").items() if v is not None}
        config.update(overrides)
        source.update(dict.fromkeys(overrides, "Tokenizer.from_pretrained"))

        if (directory / "tokenizer.json").is_file():
            backend = read_tokenizer_json(directory / "tokenizer.json")
            apply_bert_options(backend, config)
        elif (directory / "vocab.txt").is_file():
            backend = wordpiece_from_vocab(directory / "vocab.txt", config)
        else:
            found = sorted(p.name for p in directory.iterdir())
            raise CheckpointError(f"{directory} holds neither tokenizer.json nor vocab.txt (found: {found}); "
                                  "point to a directory written by save_pretrained.")
        apply_pipeline_options(backend, config, source)
        check_specials(backend, config, source)
        register_specials(backend, [token for _, token in special_tokens_with_sources(config, source)])
        special = {f"{n}_token": config[f"{n}_token"] for n in SPECIAL_NAMES if config.get(f"{n}_token")}
        if not special:
            special = guess_special_tokens(backend)
        special["additional_special_tokens"] = config.get("additional_special_tokens") or []
        limit = config.get("model_max_length")
        return cls(
            backend,
            special_tokens=special,
            model_max_length=None if limit is None or limit > UNLIMITED else int(limit),
            padding_side=config.get("padding_side", "right"),
            truncation_side=config.get("truncation_side", "right"),
            model_input_names=config.get("model_input_names"),
            tokenizer_class=config.get("tokenizer_class"),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces")),
            named_special_tokens=config.get(NAMED_KEY),
        )

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (and vocab.txt
        for WordPiece) so that plmkit and transformers' AutoTokenizer both load it."""
        out = output_dir(check_path(directory, "save_pretrained(directory)"), "save_pretrained(directory)")
        special_map = {f"{n}_token": t for n, t in self._special.items()}
        named = self.named_special_tokens
        unnamed = [t for t in self.additional_special_tokens if t not in named.values()]
        if unnamed:
            special_map["additional_special_tokens"] = unnamed
        # named ones as a dict of extra_special_tokens, in tokenizer_config.json only: transformers 5 reads it as
        # its own *_token keys (the same attributes and all_special_ids), 4.x (>= 4.47) reads only the dict, and
        # reads one in special_tokens_map.json as one token's fields
        config = {"tokenizer_class": self.tokenizer_class, **special_map,
                  **({"extra_special_tokens": dict(named)} if named else {}),
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "model_input_names": self.model_input_names,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        normalizer, pre_tokenizer = self._backend.normalizer, self._backend.pre_tokenizer
        if isinstance(normalizer, normalizers.BertNormalizer):
            config.update(do_lower_case=normalizer.lowercase, strip_accents=normalizer.strip_accents,
                          tokenize_chinese_chars=normalizer.handle_chinese_chars)
        if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
            config["add_prefix_space"] = pre_tokenizer.add_prefix_space
        if isinstance(self._backend.post_processor, processors.RobertaProcessing):  # (RobertaTokenizer reads it)
            config["trim_offsets"] = json.loads(self._backend.post_processor.__getstate__())["trim_offsets"]

        # One change (staged_writes: every file, or none on a full disk), tokenizer.json renamed last: its
        # presence means the directory is complete (pretraining reuses a directory holding one).
        files = [out / "tokenizer.json", out / "tokenizer_config.json", out / "special_tokens_map.json"]
        with staged_writes():
            atomic_write_text(files[1], json.dumps(config, indent=2, ensure_ascii=False) + "\n")
            atomic_write_text(files[2], json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
            if isinstance(self._backend.model, models.WordPiece):
                vocab = self._backend.get_vocab(with_added_tokens=False)
                files.append(out / "vocab.txt")
                atomic_write_text(files[-1], "".join(t + "\n" for t in sorted(vocab, key=vocab.get)))
            atomic_write(files[0], lambda tmp: self._backend_to_save().save(str(tmp)))
        return tuple(str(f) for f in files)

    def _backend_to_save(self) -> tokenizers.Tokenizer:
        """The backend with every special token an added special token (`register_specials`: one set as
        ``tok.pad_token = "[unused0]"`` may be an ordinary one), so that plmkit and transformers read the
        saved directory alike; a copy when a token needs it, the backend itself otherwise."""
        backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
        return backend if register_specials(backend, self.all_special_tokens) else self._backend

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        files_or_iterator: str | os.PathLike | Iterable,
        vocab_size: int,
        *,
        model: str = "wordpiece",
        style: str | None = None,
        fields: Sequence[str] | str = "auto",
        special_tokens: Sequence[str] | None = None,
        lowercase: bool | None = None,
        min_frequency: int | None = None,
        model_max_length: int | None | object = STYLE_DEFAULT,
        show_progress: bool = False,
    ) -> "Tokenizer":
        """Learn a vocabulary of `vocab_size` tokens from a corpus.

        `files_or_iterator`: a path or list of paths (.txt, .txt.gz, .jsonl files or
        directories), or any iterable of texts. `fields`: the JSONL fields to read; "auto" reads
        both sides of translation ({"source", "target"}) and summarization ({"text", "summary"})
        records into one joint vocabulary, else "text".
        `model`: "wordpiece" (BERT), "byte-bpe" (GPT-2, BART), "bpe" or "unigram"
        (SentencePiece-like, for text with or without spaces; see `plmkit.tokenization.training`).
        `style`: the special tokens and how they wrap a text: "bert" ([CLS] A [SEP]), "gpt2"
        (<|endoftext|>, nothing added), "bart" (<s> A </s>, <pad>, <unk>, <mask>), "marian"
        (A </s>, <pad>, <unk>); None: wordpiece bert, byte-bpe gpt2, bpe and unigram marian.
        `special_tokens`: every special token in id order (None: the style's); the style's
        required ones that are missing go first, tokens the style does not name become
        additional special tokens. `lowercase`: wordpiece only (None: True). `min_frequency`: the
        fewest occurrences of a merged pair (not unigram; None: 2). An argument that does not apply
        to `model` is an error, not ignored. `model_max_length`: default the style's (bert and
        marian 512, gpt2 and bart 1024); None: no limit.
        """
        trained = train_vocabulary(
            files_or_iterator, vocab_size, model=model, style=style, fields=fields, special_tokens=special_tokens,
            lowercase=lowercase, min_frequency=min_frequency, show_progress=show_progress)
        if model_max_length is STYLE_DEFAULT:
            model_max_length = trained.style.model_max_length
        _count(model_max_length, "model_max_length")
        return cls(trained.backend, special_tokens=trained.special_tokens, model_max_length=model_max_length,
                   tokenizer_class=trained.tokenizer_class)

    @classmethod
    def train_wordpiece(
        cls,
        files_or_iterator: str | os.PathLike | Iterable,
        vocab_size: int,
        *,
        lowercase: bool = True,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
        model_max_length: int | None = 512,
        show_progress: bool = False,
    ) -> "Tokenizer":
        """A BERT WordPiece tokenizer, every CJK character its own token: `train(model="wordpiece")`."""
        return cls.train(files_or_iterator, vocab_size, model="wordpiece", special_tokens=special_tokens,
                         lowercase=lowercase, min_frequency=min_frequency, model_max_length=model_max_length,
                         show_progress=show_progress)

    @classmethod
    def train_bpe(
        cls,
        files_or_iterator: str | os.PathLike | Iterable,
        vocab_size: int,
        *,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (END_OF_TEXT,),
        model_max_length: int | None = 1024,
        show_progress: bool = False,
    ) -> "Tokenizer":
        """A GPT-2 byte-level BPE tokenizer (any text round-trips through decode): `train(model="byte-bpe")`.

        `<|endoftext|>` is the bos, eos and unk token; there is no pad token (set one with
        `tokenizer.pad_token = ...` before padding).
        """
        return cls.train(files_or_iterator, vocab_size, model="byte-bpe", special_tokens=special_tokens,
                         min_frequency=min_frequency, model_max_length=model_max_length,
                         show_progress=show_progress)

    # ------------------------------------------------------------------ encoding

    def __call__(
        self,
        text: TextInput | None = None,
        text_pair: str | Sequence[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = True,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        add_special_tokens: bool = True,
        *,
        text_target: str | Sequence[str] | None = None,
        max_target_length: int | None = None,
        return_length: bool = False,
        is_split_into_words: bool = False,
        return_overflowing_tokens: bool = False,
        stride: int = 0,
        **unsupported,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch (list of texts, or `text_pair` list, or list of (a, b)).

        padding: False/"do_not_pad", True/"longest" (to the longest in the batch), or
        "max_length" (to `max_length`, else `model_max_length`).
        truncation: False, True/"longest_first", "only_first" or "only_second"; cuts to
        `max_length`, else `model_max_length`. Without truncation, an input longer than
        `max_length` or `model_max_length` raises DataError.
        return_tensors: None (lists; a single text gives flat lists) or "pt" (LongTensors (B, T)).
        text_target: the target text of each text, for sequence-to-sequence training: encoded
        alike (special tokens, padding, truncation) but to `max_target_length` (default
        `max_length`), and returned as `labels`, padded with -100 so that the loss skips
        padding (transformers pads them with the pad id). Given alone, targets are encoded as
        `input_ids` ... as in transformers. `truncated` on the result says what was cut.
        return_length: add `length`, the number of tokens of each row (padding included), as in transformers
        (a list even for one text). transformers arguments plmkit lacks raise ConfigError saying what to use.
        is_split_into_words: the texts (and pairs, targets) come as words, as transformers reads them: a list of
        str is one text, a list of lists a batch; each word is pre-tokenized alone, `word_ids()` index the words
        and offsets count characters within each word.
        return_overflowing_tokens: with truncation, what is cut from a text becomes rows of its own (windows),
        each with the special tokens (and the whole other text of a pair for "only_first"/"only_second"; both
        texts' windows in every combination for "longest_first", as transformers gives them); the result has
        `overflow_to_sample_mapping`, the input each row comes from, and keeps the batch dimension for one text.
        stride: how many tokens each window repeats from the end of the one before (with
        return_overflowing_tokens only); it must be less than the tokens a window holds of the text cut.
        """
        _refuse_unsupported(unsupported)
        pad = _choose(padding, _PADDING, "padding")
        trunc = _choose(truncation, _TRUNCATION, "truncation")
        for name, value in (("max_length", max_length), ("max_target_length", max_target_length),
                            ("pad_to_multiple_of", pad_to_multiple_of)):
            _count(value, name)
        _check_windows(stride, return_overflowing_tokens, trunc, text_target)
        if return_tensors not in (None, "pt"):
            raise ConfigError(f"return_tensors={return_tensors!r} is not supported; use None (lists) or 'pt'.")
        if pad and self.pad_token_id is None:
            raise ConfigError(
                "this tokenizer has no pad token, so it cannot pad. Set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token (its positions are masked out by attention_mask), "
                "or tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the model's embeddings.")
        if text is None and text_target is None:
            raise DataError("nothing to encode: give text (and text_target for sequence-to-sequence labels).")
        options = dict(padding=pad, truncation=trunc, multiple=pad_to_multiple_of,
                       add_special_tokens=add_special_tokens, words=is_split_into_words, stride=stride,
                       overflow=return_overflowing_tokens)
        if text is not None:
            encodings, truncated, single, samples = self._encode_texts(
                text, text_pair, max_length=max_length, limit_name="max_length", what="input", **options)
        if text_target is not None:
            targets, targets_cut, single_target, _ = self._encode_texts(
                text_target, None, max_length=max_target_length if max_target_length is not None else max_length,
                limit_name="max_target_length" if max_target_length is not None else "max_length",
                what="target", **options)
            if text is None:
                encodings, truncated, single, samples = targets, targets_cut, single_target, None
            elif (single, len(encodings)) != (single_target, len(targets)):
                raise DataError(f"text has {'one text' if single else len(encodings)} but text_target "
                                f"{'one text' if single_target else len(targets)}; give one target per text.")

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        fields = {"input_ids": "ids"}
        if return_token_type_ids:
            fields["token_type_ids"] = "type_ids"
        if return_attention_mask or return_attention_mask is None:
            fields["attention_mask"] = "attention_mask"
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = "special_tokens_mask"
        if return_offsets_mapping:
            fields["offset_mapping"] = "offsets"
        data = {key: [getattr(e, attr) for e in encodings] for key, attr in fields.items()}
        cut = {"input_ids": truncated}
        if text is not None and text_target is not None:
            data["labels"] = [[i if real else IGNORE_INDEX for i, real in zip(e.ids, e.attention_mask)]
                              for e in targets]
            cut["labels"] = targets_cut
        if return_tensors == "pt":
            data = _to_tensors(data)
        elif single:
            data = {key: value[0] for key, value in data.items()}
        extra = {"length": [len(e.ids) for e in encodings] if return_length else None,
                 "overflow_to_sample_mapping": samples}
        for key, value in extra.items():
            if value is not None:
                data[key] = value if return_tensors != "pt" else _long_tensor(value)
        return BatchEncoding(data, encodings, cut)

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               **kwargs) -> list[int]:
        """The input ids of one text (or pair); `kwargs` as for `__call__`."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def _encode_texts(self, text, text_pair, *, padding, truncation, max_length, limit_name, what, multiple,
                      add_special_tokens, words, stride, overflow):
        """Encodings of the inputs (or targets): one per input, or with `overflow` each input's windows in turn;
        whether truncation cut each; whether it was one text (never with `overflow`); and with `overflow`, the
        input of each window (else None)."""
        if what == "target" and not words and not (isinstance(text, str) or (
                isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text))):
            raise DataError(f"text_target must be a str or a non-empty list of str, got {describe(text)}.")
        examples, single = (_as_word_examples if words else _as_examples)(text, text_pair)
        if truncation and max_length is None:
            max_length = self.model_max_length  # None: no limit, nothing to cut
        if truncation and padding and multiple and max_length is not None and max_length % multiple:
            raise ConfigError(f"{limit_name}={max_length} is not a multiple of pad_to_multiple_of={multiple}, "
                              f"so padded {what}s would be longer than {limit_name}; make it a multiple.")
        encodings, cut = self._encode(examples, truncation if max_length is not None else None, max_length,
                                      add_special_tokens, limit_name, words, stride)
        if overflow:
            self._window_pairs(encodings, examples, cut, truncation, max_length, stride, add_special_tokens, words)
        samples = None
        if overflow:
            rows = [(window, c, i) for i, (e, c) in enumerate(zip(encodings, cut)) for window in (e, *e.overflowing)]
            encodings, cut, samples = (list(column) for column in zip(*rows))
            single = False
        if not truncation:
            self._check_lengths(encodings, max_length, single, what, limit_name)
        if padding:
            self._pad(encodings, padding, max_length, multiple)
        return encodings, cut, single, samples

    def _encode(self, examples, truncation, max_length, add_special_tokens, limit_name: str, words: bool,
                stride: int) -> tuple[list[tokenizers.Encoding], list[bool]]:
        """Encode each sequence alone, truncate (what is cut as overflow windows `stride` tokens apart), then
        post-process (as the Rust library does); also whether truncation cut each example."""
        texts = [t for pair in examples for t in pair if t is not None]
        pieces = iter(self._encode_unprocessed(texts, words))
        if truncation and stride:
            added = self.num_special_tokens_to_add(any(b is not None for _, b in examples)) if add_special_tokens \
                else 0
            if stride >= max_length - added:
                raise ConfigError(f"stride={stride} must be less than {limit_name}={max_length} minus the {added} "
                                  f"special tokens of each row ({max_length - added}): each window must hold new "
                                  f"tokens; lower stride or raise {limit_name}.")
        encodings, cuts = [], []
        for index, (first, second) in enumerate(examples):
            a = next(pieces)
            b = next(pieces) if second is not None else None
            cut = False
            if truncation:
                added = self.num_special_tokens_to_add(b is not None) if add_special_tokens else 0
                if max_length < added:
                    raise DataError(f"{limit_name}={max_length} is too small: {added} special tokens are added "
                                    f"to each input; use {limit_name} > {added}.")
                cut = self._truncate(a, b, truncation, max_length - added, stride, index)
            cuts.append(cut)
            encodings.append(self._backend.post_process(a, b, add_special_tokens))
        return encodings, cuts

    def _window_pairs(self, encodings, examples, cut, truncation, max_length, stride, add_special_tokens,
                      words) -> None:
        """Encode again, in place, the pairs that truncation cut, with the Rust library's truncation: the windows
        cut from a second text keep its type id 1 (it encodes that text with it), which plmkit's encodings (each
        text alone, `_encode`) cannot give them. `_encode` checked that every cut fits, so nothing raises."""
        redo = [i for i, ((_, second), was_cut) in enumerate(zip(examples, cut)) if second is not None and was_cut]
        if not redo:
            return
        params = dict(max_length=max_length, stride=stride, strategy=truncation, direction=self.truncation_side)
        key = (self._pipeline_key(), self._backend.post_processor.__getstate__()
               if self._backend.post_processor is not None else None, tuple(params.items()))
        cached = self.__dict__.get("_truncating")  # (key, copy), as `_unprocessed_backend`'s
        if cached is None or cached[0] != key:
            copy = tokenizers.Tokenizer.from_str(self._backend.to_str())
            copy.enable_truncation(**params)
            cached = (key, copy)
            self.__dict__["_truncating"] = cached
        again = cached[1].encode_batch([examples[i] for i in redo], is_pretokenized=words,
                                       add_special_tokens=add_special_tokens)
        for i, encoding in zip(redo, again):
            encodings[i] = encoding

    def _encode_unprocessed(self, texts: list, words: bool = False) -> list[tokenizers.Encoding]:
        """Encodings before post-processing, which must run once: RoBERTa's and BART's moves
        offsets past a leading space each time. They come from a copy of the backend without
        post-processor (`_unprocessed_backend`): the shared backend is never changed, so threads may
        share a Tokenizer. One short text goes through ``encode``, which keeps the GIL: ``encode_batch``
        lets it go, and taking it back from a thread that runs a model took ~4x the encoding's
        own time (a server's event loop: 440 against 115 us a sentence, measured). A text longer
        than ``HOLD_GIL_UP_TO`` characters (~0.3 ms of encoding) lets it go: other threads run
        meanwhile. `words`: each text is a list of words (is_split_into_words)."""
        backend = self._unprocessed_backend()
        if len(texts) == 1 and (sum(map(len, texts[0])) if words else len(texts[0])) <= HOLD_GIL_UP_TO:
            return [backend.encode(texts[0], is_pretokenized=words, add_special_tokens=False)]
        return backend.encode_batch(texts, is_pretokenized=words, add_special_tokens=False)

    def _unprocessed_backend(self) -> tokenizers.Tokenizer:
        """The backend's copy without post-processor, made on first use and again whenever the backend's
        vocabulary (added tokens included), normalizer or pre-tokenizer changed since (`_pipeline_key`)."""
        key = self._pipeline_key()
        cached = self.__dict__.get("_unprocessed")  # (key, copy); absent after unpickling
        if cached is None or cached[0] != key:
            copy = tokenizers.Tokenizer.from_str(self._backend.to_str())
            copy.post_processor = None
            cached = (key, copy)
            self.__dict__["_unprocessed"] = cached  # one assignment: a thread reads the old pair or the new one
        return cached[1]

    def _pipeline_key(self) -> tuple:
        """What `_unprocessed_backend`'s copy must match: cheap to compute on every call."""
        parts = (self._backend.normalizer, self._backend.pre_tokenizer)
        return (self._backend.get_vocab_size(with_added_tokens=True),
                *(None if part is None else part.__getstate__() for part in parts))

    def __getstate__(self) -> dict:
        """Pickled without the backend's copies (`_unprocessed_backend`, `_window_pairs` make them again)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_unprocessed", "_truncating")}

    def _truncate(self, a, b, strategy: str, budget: int, stride: int = 0, index: int = 0) -> bool:
        """Cut sequences a (and b) in place so that together they fit `budget` tokens, what is cut going to
        overflow windows (`_cut`); whether any was cut. `index`: the input's, for errors."""
        excess = len(a) + (len(b) if b is not None else 0) - budget
        if excess <= 0:
            return False
        if budget == 0:  # only special tokens fit: every strategy keeps nothing (as transformers)
            for encoding in (a, b):
                if encoding is not None:
                    self._cut(encoding, 0, stride, index)
            return True
        if strategy == "longest_first":
            if b is None:
                self._cut(a, budget, stride, index)
                return True
            keep_a, keep_b = _longest_first(len(a), len(b), budget)
            self._cut(a, keep_a, stride, index)
            self._cut(b, keep_b, stride, index, "second ")
            return True
        target = a if strategy == "only_first" else b
        if target is None:
            raise DataError("truncation='only_second' needs a text_pair; use truncation=True for single texts.")
        if len(target) <= excess:
            which = "first" if strategy == "only_first" else "second"
            raise DataError(
                f"truncation={strategy!r} cannot fit max_length: the {which} text has {len(target)} tokens "
                f"but {excess} must go; use truncation='longest_first' or a larger max_length.")
        self._cut(target, len(target) - excess, stride, index, "second " if target is b else "")
        return True

    def _cut(self, encoding, keep: int, stride: int, index: int, which: str = "") -> None:
        """Truncate `encoding` to `keep` tokens in place, on the tokenizer's truncation side; the rest becomes
        its overflow windows, each repeating `stride` tokens of the one before (`Encoding.truncate`, which
        panics where a cut text keeps no more than `stride` tokens: a DataError naming input `index` here)."""
        if stride and len(encoding) > keep and 0 < keep <= stride:
            raise DataError(f"input {index}: its {which}text keeps {keep} tokens a window, not more than "
                            f"stride={stride}, so the windows would not move on; lower stride or raise max_length.")
        encoding.truncate(keep, stride=stride, direction=self.truncation_side)

    def _check_lengths(self, encodings, max_length: int | None, single: bool, what: str, limit_name: str) -> None:
        longest = max(range(len(encodings)), key=lambda i: len(encodings[i]))
        length = len(encodings[longest])
        for limit, name in ((max_length, limit_name), (self.model_max_length, "model_max_length")):
            if limit is not None and length > limit:
                where = f"the {what}" if single else f"{what} {longest} of the batch"
                raise DataError(
                    f"{where} has {length} tokens, more than {name}={limit}. Pass truncation=True to cut "
                    f"inputs to {limit} tokens, or shorten the text. (To tokenize long documents for "
                    "chunking, set tokenizer.model_max_length = None.)")

    def _pad(self, encodings, mode: str, max_length: int | None, multiple: int | None) -> None:
        if mode == "max_length":
            length = max_length if max_length is not None else self.model_max_length
            if length is None:
                raise ConfigError("padding='max_length' needs max_length=... (this tokenizer has no "
                                  "model_max_length); or use padding=True to pad to the longest input.")
        else:
            length = max(len(e) for e in encodings)
        if multiple:
            length = -(-length // multiple) * multiple
        for encoding in encodings:
            encoding.pad(length, direction=self.padding_side, pad_id=self.pad_token_id,
                          pad_type_id=0, pad_token=self.pad_token)

    # ------------------------------------------------------------------ decoding and vocabulary

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Text of a sequence of ids (list, 1-D tensor or a single int). clean_up_tokenization_spaces (None:
        the tokenizer's, from tokenizer_config.json): remove the spaces before punctuation and
        contractions ("it ' s here ." -> "it's here."), as transformers 5 does, which skips it for BPE models."""
        ids = _id_list(ids)
        if any(isinstance(i, (list, tuple)) for i in ids):
            raise DataError("decode takes one sequence of ids; use batch_decode for a batch.")
        try:
            text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        except (OverflowError, TypeError) as err:
            raise DataError(f"decode: ids must be ints in [0, {len(self)}) ({err}); "
                            "replace label padding such as -100 by the pad token id first.") from None
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def clean_up_tokenization(self, text: str) -> str:
        """`text` without the spaces before punctuation and contractions, as decode's clean_up_tokenization_spaces
        (transformers' method of that name); unchanged for BPE models, which transformers 5 never cleans up."""
        if not isinstance(self._backend.model, models.BPE):
            for spaced, joined in _CLEAN_UP:
                text = text.replace(spaced, joined)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """Texts of a batch of id sequences (list of lists or 2-D tensor); the options as `decode`'s."""
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in _id_list(sequences)]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """Token strings of a text (without special tokens by default)."""
        for name, value in (("text", text), ("pair", pair)):
            if not isinstance(value, str) and (name == "text" or value is not None):
                raise DataError(f"tokenize: {name} must be a str, got {describe(value)}.")
        return self._backend.encode(text, pair, add_special_tokens=add_special_tokens).tokens

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        """Id of a token (or ids of a list); unknown tokens map to unk_token_id."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in _strings(tokens, "convert_tokens_to_ids: tokens")]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """Token of an id (or tokens of a list of ids)."""
        if _is_id(ids) or (hasattr(ids, "ndim") and ids.ndim == 0):
            token = self._backend.id_to_token(int(ids)) if 0 <= int(ids) < len(self) else None
            if token is None:
                raise DataError(f"token id {int(ids)} is out of range for a vocabulary of {len(self)} tokens.")
            return token
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.convert_ids_to_tokens(i) for i in _id_list(ids, rows=False) if i not in special]

    def token_bytes(self, ids) -> list[bytes]:
        """The bytes each token adds to decoded text (what OpenAI's logprobs call a token's ``bytes``): a
        byte-level piece's bytes (maybe part of a character), a SentencePiece piece with its '▁' as a space
        and '<0xNN>' as byte NN, a WordPiece piece after a space ('##' ones without); an added or special
        token's text."""
        ids = _id_list(ids, rows=False)
        kinds = set(re.findall(r'"type":"(\w+)"', self._backend.decoder.__getstate__().decode())
                    if self._backend.decoder is not None else ())
        added = self._backend.get_added_tokens_decoder()
        out = []
        for piece, i in zip(self.convert_ids_to_tokens(ids), ids):
            fallback = _BYTE_PIECE.fullmatch(piece) if "ByteFallback" in kinds else None
            if i in added:
                out.append(piece.encode())
            elif "ByteLevel" in kinds:
                out.append(bytes(_BYTE_LEVEL[c] for c in piece))
            elif fallback:
                out.append(bytes([int(fallback[1], 16)]))
            elif "WordPiece" in kinds:
                out.append(piece[2:].encode() if piece.startswith("##") else b" " + piece.encode())
            else:
                out.append(piece.replace("\u2581", " ").encode())
        return out

    def get_vocab(self) -> dict[str, int]:
        """Token → id, added tokens included."""
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens), as in transformers."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding a text (or a pair) adds, as in transformers."""
        return self._backend.num_special_tokens_to_add(pair)

    def add_tokens(self, tokens: str | Sequence[str]) -> int:
        """Add ordinary tokens (one, or a list); returns how many are new (resize the model's embeddings then)."""
        tokens = _strings([tokens] if isinstance(tokens, str) else tokens, "add_tokens: tokens")
        added = self._backend.add_tokens(tokens)
        self.__dict__.pop("_unprocessed", None)  # (a token already in the vocabulary is split out now)
        return added

    def add_special_tokens(self, special_tokens: dict) -> int:
        """Set special tokens, e.g. {"pad_token": "<pad>"}, adding unknown ones to the vocabulary.

        Returns how many tokens are new; resize the model's embeddings when it is > 0.
        """
        if not isinstance(special_tokens, dict):
            raise ConfigError(f"add_special_tokens takes a dict such as {{'pad_token': '<pad>'}} or "
                              f"{{'additional_special_tokens': [...]}}, got {describe(special_tokens)}.")
        before = len(self)
        for key, value in special_tokens.items():
            name = key.removesuffix("_token") if isinstance(key, str) else key
            if key != "additional_special_tokens" and name not in SPECIAL_NAMES:
                raise ConfigError(f"add_special_tokens: unknown key {key!r}; use one of "
                                  f"{[n + '_token' for n in SPECIAL_NAMES]} or 'additional_special_tokens'.")
            where = f"add_special_tokens: {key}"
            tokens = token_list(value, where) if key == "additional_special_tokens" else [token_str(value, where)]
            if None in tokens:
                raise ConfigError(f"{where} must be a token, got None (to drop one: tokenizer.{key} = None).")
            self._backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
            self.__dict__.pop("_unprocessed", None)  # (a token already in the vocabulary is split out now)
            if key == "additional_special_tokens":
                self.additional_special_tokens += [t for t in tokens if t not in self.additional_special_tokens]
            else:
                self._set_special(name, tokens[0])
        return len(self) - before

    def _set_special(self, name: str, token: str | None) -> None:
        if name not in SPECIAL_NAMES:
            raise ConfigError(f"unknown special token {name + '_token'!r}; known: "
                              f"{[n + '_token' for n in SPECIAL_NAMES]}.")
        if token is None:
            self._special.pop(name, None)
            return
        token = token_str(token)
        if self._backend.token_to_id(token) is None:
            raise ConfigError(
                f"{name}_token {token!r} is not in the vocabulary. Use an existing token (e.g. "
                f"tokenizer.{name}_token = tokenizer.eos_token) or add it with "
                f"tokenizer.add_special_tokens({{'{name}_token': {token!r}}}) and resize the model's embeddings.")
        self._special[name] = token

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """Name → special token, e.g. {"pad_token": "[PAD]", ...}."""
        result: dict = {f"{n}_token": self._special[n] for n in SPECIAL_NAMES if n in self._special}
        if self.additional_special_tokens:
            result["additional_special_tokens"] = list(self.additional_special_tokens)
        return result

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens once each, in transformers 5's order: the named ones (pad_token ..., then
        `named_special_tokens`), then the other additional ones."""
        tokens = [self._special[n] for n in SPECIAL_NAMES if n in self._special]
        tokens += list(self.named_special_tokens.values()) + self.additional_special_tokens
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._backend.token_to_id(t) for t in self.all_special_tokens]

    def _named_attribute(self, attribute: str) -> tuple[str, bool] | None:
        """(name, whether its id is asked for) when `attribute` is a named special token's (``image_token``,
        ``image_token_id``); None for any other. Only names ending in ``_token`` are attributes, and none of
        the class's (pad_token and the other SPECIAL_NAMES' are refused as names anyway)."""
        name = attribute.removesuffix("_id")
        named = self.__dict__.get("named_special_tokens") or {}  # (none before __init__ sets it: unpickling)
        if name.endswith("_token") and name in named and not hasattr(type(self), attribute):
            return name, name != attribute
        return None

    def __getattr__(self, attribute: str):
        """A named special token (``tok.image_token``) or its id (``tok.image_token_id``), as transformers 5
        gives them; only called for an attribute the Tokenizer does not have."""
        found = self._named_attribute(attribute)
        if found is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")
        token = self.named_special_tokens[found[0]]
        return self._backend.token_to_id(token) if found[1] else token

    def __setattr__(self, attribute: str, value) -> None:
        found = self._named_attribute(attribute)
        if found is not None:
            raise ConfigError(f"tokenizer.{attribute} is read-only: {found[0]} is one of named_special_tokens, "
                              "which save_pretrained writes back as they were read")
        super().__setattr__(attribute, value)

    padding_side = _Checked(_side)
    truncation_side = _Checked(_side)
    model_max_length = _Checked(_count)

    @property
    def backend_tokenizer(self) -> tokenizers.Tokenizer:
        """The underlying `tokenizers.Tokenizer` (keep its truncation and padding disabled)."""
        return self._backend

    def __repr__(self) -> str:
        kind = type(self._backend.model).__name__
        return (f"Tokenizer({kind}, vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
                f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})")


AutoTokenizer = Tokenizer
_OVERRIDABLE = {"model_max_length", "padding_side", "truncation_side", "model_input_names",
                "do_lower_case", "strip_accents", "tokenize_chinese_chars", "additional_special_tokens",
                "clean_up_tokenization_spaces", "add_prefix_space", "trim_offsets"}


# ---------------------------------------------------------------------- helpers


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable Latin-1 bytes stand for themselves, the
    others for the characters from U+0100 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    shifted = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + n): b for n, b in enumerate(shifted)}}


_BYTE_LEVEL = _byte_level_alphabet()
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback
# transformers' clean_up_tokenization, in its order
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Lengths to keep for a pair: the shorter text is kept whole if it fits in half the
    budget; otherwise both get half, the longer one (the second on a tie) the odd token."""
    short = min(n_a, n_b)
    if 2 * short <= budget:
        keep_short, keep_long = short, budget - short
    else:
        keep_short, keep_long = budget // 2, budget - budget // 2
    return (keep_long, keep_short) if n_a > n_b else (keep_short, keep_long)


def _as_examples(text, text_pair) -> tuple[list[tuple[str, str | None]], bool]:
    """Normalize the call's inputs to a list of (text, pair or None), and whether it was one text."""
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise DataError(f"text is a str, so text_pair must be a str too, not {type(text_pair).__name__}.")
        return _no_surrogates([(text, text_pair or None)]), True  # an empty pair means none (as in transformers)
    if not isinstance(text, (list, tuple)) or not text:
        raise DataError(f"tokenizer input must be a str or a non-empty list of str, got {describe(text)}.")
    if text_pair is None:
        examples = [tuple(t) if isinstance(t, (list, tuple)) else (t, None) for t in text]
    else:
        examples = _zip_pairs(text, text_pair)
    for i, example in enumerate(examples):
        if len(example) != 2 or not isinstance(example[0], str) or not isinstance(example[1], (str, type(None))):
            raise DataError(f"batch item {i} is {describe(example)}; expected a str (or a pair of str).")
    return _no_surrogates(examples), False


def _as_word_examples(text, text_pair) -> tuple[list[tuple[list[str], list[str] | None]], bool]:
    """`_as_examples` for is_split_into_words=True, with transformers' reading of the shapes: a list of str is one
    text's words, a list of lists a batch (each item a text's words, or a pair of them), the pairs' words in
    `text_pair` (an empty one means none)."""
    if not (isinstance(text, (list, tuple)) and text and isinstance(text[0], (list, tuple))):
        pair = _words(text_pair, "text_pair") if text_pair is not None else None
        return _no_surrogates([(_words(text, "text"), pair or None)]), True
    if text_pair is None:
        examples = [(t, None) if _all_str(t) else tuple(t) for t in text]
    else:
        examples = _zip_pairs(text, text_pair)
    for i, example in enumerate(examples):
        if len(example) != 2 or not _all_str(example[0]) or not (example[1] is None or _all_str(example[1])):
            raise DataError(f"is_split_into_words=True: batch item {i} is {describe(example)}; expected a list of "
                            "words (str), or a pair of them.")
    return _no_surrogates([(list(a), None if b is None else list(b)) for a, b in examples]), False


def _zip_pairs(text, text_pair) -> list[tuple]:
    if isinstance(text_pair, (list, tuple)) and len(text_pair) == len(text):
        return list(zip(text, text_pair))
    raise DataError(f"text is a list of {len(text)}, so text_pair must be a list of the same length, "
                    f"got {describe(text_pair)}.")


def _all_str(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _words(value, name: str) -> list[str]:
    """One text's words as a list; DataError naming `name` for anything else."""
    if not _all_str(value):
        raise DataError(f"is_split_into_words=True: {name} must be a list of words (str) or a batch of such "
                        f"lists, got {describe(value)}.")
    return list(value)


def _no_surrogates(examples: list[tuple]) -> list[tuple]:
    """`examples`; a DataError naming the text that holds half a UTF-16 pair (the backend's is a TypeError)."""
    for i, example in enumerate(examples):
        texts = [t for part in example if part is not None for t in ([part] if isinstance(part, str) else part)]
        problem = next(filter(None, map(lone_surrogate, texts)), None)
        if problem:
            raise DataError(f"tokenizer input {i}: the text {problem}.")
    return examples


def _choose(value, table: dict, name: str):
    try:
        return table[value]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in table)
        raise ConfigError(f"{name}={value!r} is not supported; use one of {choices}.") from None


_UNSUPPORTED_CALL_ARGS = {
    "padding_side": "not supported per call: set tokenizer.padding_side before calling",
    "split_special_tokens": "not supported: special tokens in the text are always kept whole",
    "text_pair_target": "not supported: targets are single texts; join the pair into one text_target",
}


def _check_windows(stride, overflow: bool, truncation: str | None, text_target) -> None:
    """A ConfigError for `stride` and return_overflowing_tokens where they would have no effect or no meaning."""
    if not is_int(stride) or stride < 0:
        raise ConfigError(f"stride must be an integer >= 0, got {describe(stride)}.")
    if stride and not (overflow and truncation):
        raise ConfigError(f"stride={stride} is the overlap of the windows that return_overflowing_tokens=True makes "
                          "of texts cut by truncation; without both it would have no effect.")
    if overflow and text_target is not None:
        raise ConfigError("return_overflowing_tokens=True with text_target is not supported: a window has no "
                          "target of its own; encode the targets in a call of their own.")


def _refuse_unsupported(arguments: dict) -> None:
    """A ConfigError naming each transformers argument of `Tokenizer.__call__` that plmkit does not support."""
    if not arguments:
        return
    unknown = sorted(set(arguments) - set(_UNSUPPORTED_CALL_ARGS))
    if unknown:
        raise TypeError(f"Tokenizer.__call__() got unexpected keyword argument(s) {unknown}.")
    raise ConfigError("Tokenizer.__call__: " + "; ".join(
        f"{name} is {_UNSUPPORTED_CALL_ARGS[name]}" for name in sorted(arguments)) + ".")


def _to_tensors(data: dict) -> dict:
    for key, rows in data.items():
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise DataError(f"return_tensors='pt' needs inputs of equal length, but {key} has lengths "
                            f"from {min(lengths)} to {max(lengths)}; pass padding=True.")
    return {key: _long_tensor(rows) for key, rows in data.items()}


def _long_tensor(values: list):
    import torch

    return torch.tensor(values, dtype=torch.long)


def _id_list(ids, rows: bool = True) -> list:
    """Ids (an int, a sequence or a tensor; with `rows`, a batch's rows as lists too) as a list;
    DataError for anything else."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if _is_id(ids):
        return [int(ids)]
    if not isinstance(ids, (list, tuple)) or not all(_is_id(i) or rows and isinstance(i, (list, tuple)) for i in ids):
        raise DataError(f"ids must be an int, a list of ints or a tensor of ids, got {describe(ids)}.")
    return [int(i) if _is_id(i) else i for i in ids]


def _is_id(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _strings(values, name: str) -> list[str]:
    """`values` as a list of str; DataError naming `name` for anything else."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, AddedToken)) for v in values):
        raise DataError(f"{name} must be a str or a list of str, got {describe(values)}.")
    return list(values)


