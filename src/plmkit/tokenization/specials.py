"""Special tokens: their names, the usual tokens of each model family, and how they wrap a text."""
from __future__ import annotations

import tokenizers
from tokenizers import AddedToken, processors

from plmkit.errors import ConfigError

# Special token names in the order transformers lists them (all_special_ids).
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"
# Guesses for directories whose configs do not name their special tokens.
KNOWN_SPECIALS = {
    "[PAD]": ("pad",), "[UNK]": ("unk",), "[CLS]": ("cls",), "[SEP]": ("sep",), "[MASK]": ("mask",),
    END_OF_TEXT: ("bos", "eos", "unk"),
}


def token_str(value) -> str | None:
    """A special token as a str: config files may store {"content": ...} dicts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    if isinstance(value, AddedToken):
        return value.content
    raise ConfigError(f"special token {value!r} must be a str (or a {{'content': ...}} dict).")


def guess_special_tokens(backend: tokenizers.Tokenizer) -> dict[str, str]:
    """Special tokens by their usual names, for directories whose configs name none."""
    found = {}
    for token, names in KNOWN_SPECIALS.items():
        if backend.token_to_id(token) is not None:
            for name in names:
                found.setdefault(f"{name}_token", token)
    return found


def bert_template(backend: tokenizers.Tokenizer, cls: str, sep: str) -> processors.TemplateProcessing:
    """[CLS] A [SEP] and [CLS] A [SEP] B [SEP], with token type ids 0 for A and 1 for B."""
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
