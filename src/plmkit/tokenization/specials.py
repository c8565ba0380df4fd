"""Special tokens: their names, and each model family's style (its tokens and how they wrap a text)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tokenizers
from tokenizers import AddedToken, processors

from plmkit.errors import ConfigError
from plmkit.utils.text import describe

# Special token names in the order transformers lists them (all_special_ids).
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"

Roles = dict[str, str]  # special token name ("bos", "eos", ...) -> token


@dataclass(frozen=True)
class Style:
    """The special tokens a model family expects and how they wrap one text or a pair.

    `tokens`: name -> token; a trained vocabulary gives them its first ids in this order (one id
    per distinct token). `required`: the names training cannot do without. `wrap(backend, roles)`:
    the post-processor. `hf_class`: the transformers class when the vocabulary is `hf_model`
    (the family's own kind); other kinds load in transformers as PreTrainedTokenizerFast.
    """

    tokens: Roles
    required: tuple[str, ...]
    wrap: Callable[[tokenizers.Tokenizer, Roles], processors.PostProcessor]
    hf_class: str | None
    hf_model: str | None
    model_max_length: int


def _special(backend: tokenizers.Tokenizer, token: str) -> tuple[str, int]:
    return token, backend.token_to_id(token)


def _bert_wrap(backend: tokenizers.Tokenizer, roles: Roles) -> processors.PostProcessor:
    """[CLS] A [SEP] and [CLS] A [SEP] B [SEP], with token type ids 0 for A and 1 for B."""
    cls, sep = roles["cls"], roles["sep"]
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[_special(backend, cls), _special(backend, sep)])


def _gpt2_wrap(backend: tokenizers.Tokenizer, roles: Roles) -> processors.PostProcessor:
    """Nothing added: GPT-2 texts are A, and A B for a pair."""
    return processors.ByteLevel(trim_offsets=False)


def _bart_wrap(backend: tokenizers.Tokenizer, roles: Roles) -> processors.PostProcessor:
    """<s> A </s> and <s> A </s></s> B </s>, as RoBERTa and BART (offsets without the leading space)."""
    return processors.RobertaProcessing(_special(backend, roles["sep"]), _special(backend, roles["cls"]),
                                        trim_offsets=True, add_prefix_space=False)


def _marian_wrap(backend: tokenizers.Tokenizer, roles: Roles) -> processors.PostProcessor:
    """A </s> and A B </s>, as Marian (transformers' MarianTokenizer)."""
    eos = roles["eos"]
    return processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 $B:0 {eos}:0",
                                         special_tokens=[_special(backend, eos)])


STYLES: dict[str, Style] = {
    "bert": Style(dict(zip(("pad", "unk", "cls", "sep", "mask"), BERT_SPECIAL_TOKENS)), ("unk", "cls", "sep"),
                  _bert_wrap, "BertTokenizer", "wordpiece", 512),
    "gpt2": Style({"bos": END_OF_TEXT, "eos": END_OF_TEXT, "unk": END_OF_TEXT}, ("eos",),
                  _gpt2_wrap, "GPT2Tokenizer", "byte-bpe", 1024),
    # BART's ids: <s> 0, <pad> 1, </s> 2, <unk> 3, then <mask>
    "bart": Style({"bos": "<s>", "cls": "<s>", "pad": "<pad>", "eos": "</s>", "sep": "</s>", "unk": "<unk>",
                   "mask": "<mask>"}, ("bos", "eos", "unk"), _bart_wrap, "BartTokenizer", "byte-bpe", 1024),
    # Marian's ids: </s> 0, <unk> 1; its pad comes last in converted vocabularies, 2 here
    "marian": Style({"eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, ("eos", "unk"), _marian_wrap, None, None, 512),
}


def token_str(value, where: str = "special token") -> str | None:
    """A special token as a str: config files may store {"content": ...} dicts. `where` names it in
    errors (``special_tokens_map.json: pad_token``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, AddedToken):
        return value.content
    raise ConfigError(f"{where} must be a token (a str, or a {{'content': ...}} dict), got {describe(value)}")


def token_list(value, where: str) -> list[str]:
    """A list of tokens (each as `token_str` takes it): a lone str is refused, not split into characters."""
    if not isinstance(value, (list, tuple)):
        hint = f"; a single token is a list of one: [{value!r}]" if isinstance(value, str) else ""
        raise ConfigError(f"{where} must be a list of tokens, got {describe(value)}{hint}")
    return [token_str(v, f"{where} item {i}") for i, v in enumerate(value)]


def guess_special_tokens(backend: tokenizers.Tokenizer) -> dict[str, str]:
    """Special tokens by the styles' usual names, for directories whose configs name none."""
    found = {}
    for style in STYLES.values():
        for name, token in style.tokens.items():
            if backend.token_to_id(token) is not None:
                found.setdefault(f"{name}_token", token)
    return found
