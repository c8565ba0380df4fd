"""A chat template and context-window bookkeeping for conversations (`plmkit chat`, generation).

The template (one turn; a conversation is its turns back to back)::

    <|system|>\\n{system}\\n                     (optional, once, at the start)
    <|user|>\\n{user text}\\n<|assistant|>\\n{reply}<|endoftext|>

A conversation may open with the assistant's message (a greeting): ``<|assistant|>\\n{reply}<|endoftext|>``,
the reply's half of a turn.

Why these markers: they are plain text, tokenized by the model's own BPE into ordinary pieces
("<|", "user", "|>"), so a small model trained from scratch (or any pretrained one) can learn them
from a few hundred examples without new embedding rows that start out random, and any byte-level
tokenizer handles them. The reply ends with the tokenizer's EOS (``<|endoftext|>``), which the
model already knows from pretraining as "the document ends here": generation stops on it.

Supervised fine-tuning on this template (prompt -> response pairs, the loss on the replies only)
is the ``sft`` task: plmkit.tasks.sft.
"""
from __future__ import annotations

from typing import Sequence

from plmkit.errors import ConfigError, DataError

SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
ROLES = ("system", "user", "assistant")


# ------------------------------------------------------------------------------------ template
def format_system(system: str | None) -> str:
    return f"{SYSTEM}\n{system}\n" if system else ""


def format_user(user_text: str) -> str:
    """A user turn up to where the assistant's reply begins: the prompt of one generation."""
    return f"{USER}\n{user_text}\n{ASSISTANT}\n"


def format_turn(user_text: str | None, reply: str, eos: str = "<|endoftext|>") -> str:
    """A user turn and its reply; ``user_text`` None: the reply alone (a conversation's opening greeting)."""
    head = format_user(user_text) if user_text is not None else f"{ASSISTANT}\n"
    return f"{head}{reply}{eos}"


def _pairs(history: Sequence) -> list[tuple[str | None, str]]:
    """History as (user, assistant) pairs; accepts pairs or HF-style [{"role", "content"}, ...], which may open
    with an assistant message (its pair's user None)."""
    if not history:
        return []
    if isinstance(history[0], dict):
        messages = [m for m in history if m.get("role") != "system"]
        for m in messages:
            if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ConfigError(f"bad chat message {m!r}: need role in {ROLES} and string content")
        opening = [(None, messages[0]["content"])] if messages and messages[0]["role"] == "assistant" else []
        messages = messages[len(opening):]
        if len(messages) % 2 or any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(messages)):
            raise ConfigError("chat history must alternate user, assistant messages (an assistant's may come "
                              "first), ending with an assistant reply")
        return opening + [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]
    return [(u if u is None else str(u), str(a)) for u, a in history]


def _system_of(history: Sequence, system: str | None) -> str | None:
    """`system`, else the content of a {"role": "system"} message in `history`, else None."""
    if system is None and history and isinstance(history[0], dict):
        system = next((m.get("content") for m in history if m.get("role") == "system"), None)
    return system


def format_prompt(history: Sequence, user_text: str, system: str | None = None,
                  eos: str = "<|endoftext|>") -> str:
    """The text a model continues to answer `user_text` after the earlier turns in `history`.

    history: [(user, reply), ...] or [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...]
    (a {"role": "system"} message there is used when `system` is None).
    """
    system = _system_of(history, system)
    turns = "".join(format_turn(u, a, eos) for u, a in _pairs(history))
    return format_system(system) + turns + format_user(user_text)


def truncate_history(tokenizer, history: Sequence, user_text: str, max_tokens: int,
                     system: str | None = None) -> tuple[list[tuple[str | None, str]], list[int]]:
    """Drop the oldest turns until the prompt fits in `max_tokens` tokens.

    Returns (kept turns as (user, reply) pairs, prompt token ids). The system text and the new user
    turn are always kept; if even they do not fit, ConfigError says by how much (shorten the message
    or lower max_new_tokens). `max_tokens` is usually context window - max_new_tokens.
    """
    eos = tokenizer.eos_token or "<|endoftext|>"
    system = _system_of(history, system)
    pairs = _pairs(history)
    head = encode_prompt(tokenizer, format_system(system))  # (the tokenizer's BOS first, where it puts one)
    tail = encode_text(tokenizer, format_user(user_text))
    turns = [encode_text(tokenizer, format_turn(u, a, eos)) for u, a in pairs]
    budget = max_tokens - len(head) - len(tail)
    if budget < 0:
        raise ConfigError(f"the message needs {len(head) + len(tail)} tokens (system text included) but only "
                          f"{max_tokens} fit in the context window after room for the reply; shorten it or lower "
                          "max_new_tokens")
    keep = len(turns)
    used = sum(len(t) for t in turns)
    while keep and used > budget:
        used -= len(turns[len(turns) - keep])
        keep -= 1
    kept = turns[len(turns) - keep:]
    return pairs[len(pairs) - keep:], head + [i for t in kept for i in t] + tail


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt a decoder continues: `encode_text` after `leading_bos` (Llama's <s>), as
    Hugging Face's text-generation pipeline and vLLM tokenize a prompt."""
    return leading_bos(tokenizer) + encode_text(tokenizer, text)


def leading_bos(tokenizer) -> list[int]:
    """[bos_token_id] when the tokenizer puts its BOS before every text it encodes with special tokens
    (Llama's <s>), else []: none of its other special tokens (BERT-style [CLS] ... [SEP] around a text,
    which a decoder never reads: plmkit's causal-LM data ends documents with EOS and adds nothing else)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)

    def ids(specials: bool) -> list[int]:
        enc = (backend.encode("a", add_special_tokens=specials) if backend is not None
               else tokenizer.encode("a", add_special_tokens=specials))
        return list(enc.ids) if hasattr(enc, "ids") else list(enc)

    return [bos] if ids(True)[:1] == [bos] != ids(False)[:1] else []


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without added specials (plmkit, transformers or tokenizers tokenizers)."""
    if not text:
        return []
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # undecodable bytes kept as surrogates (sys.argv, sys.stdin)
            char = text[err.start]
            byte = f" (byte {ord(char) - 0xDC00:#04x})" if 0xDC80 <= ord(char) <= 0xDCFF else ""
            raise DataError(f"the text is not UTF-8{byte}; re-encode it as UTF-8") from None
    backend = getattr(tokenizer, "backend_tokenizer", None)  # no model_max_length check: we cut ourselves
    enc = backend.encode(text, add_special_tokens=False) if backend is not None \
        else tokenizer.encode(text, add_special_tokens=False)
    return list(enc.ids) if hasattr(enc, "ids") else list(enc)


class StopFilter:
    """Cut a stream of text pieces at the first stop string, never emitting any part of it.

    Text that might be the beginning of a stop string is held back until the next piece decides.
    ``push(piece) -> text to show``; ``done`` turns True once a stop string was seen.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.done = False

    def push(self, piece: str) -> str:
        if self.done:
            return ""
        text = self.held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.done, self.held = True, ""
            return text[:cut]
        hold = 0
        for s in self.stops:  # longest suffix of text that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold]

    def flush(self) -> str:
        rest, self.held = ("" if self.done else self.held), ""
        return rest


__all__ = ["ASSISTANT", "SYSTEM", "USER", "StopFilter", "encode_prompt", "encode_text", "format_prompt",
           "format_system", "format_turn", "format_user", "leading_bos", "truncate_history"]
