"""The wire format's logprobs: ``text_offset`` indexes into the choice's text, built as the server builds it."""
import pytest

from plmkit.generation import IncrementalDecoder
from plmkit.serving.batching import TokenLogprob
from plmkit.serving.protocol import ChoiceLogprobs
from plmkit.tokenization import Tokenizer

TEXT = "é€😀 café"  # 2-, 3- and 4-byte characters


@pytest.fixture(scope="module")
def byte_bpe():
    """A tiny byte-level BPE (GPT-2's kind) with BART's specials (<s> before a text): "€" and "😀" are unknown to
    its merges, so their bytes are tokens of their own."""
    return Tokenizer.train(["the café serves crème brûlée to everyone"] * 20, 300, model="byte-bpe", style="bart")


def entries(ids: list[int]) -> list[TokenLogprob]:
    return [TokenLogprob(token, -1.0, []) for token in ids]


def served_text(tokenizer, ids: list[int]) -> str:
    """A choice's text as the batcher builds it: the pieces of an `IncrementalDecoder`."""
    decoder = IncrementalDecoder(tokenizer)
    return "".join(decoder.push(token) for token in ids) + decoder.flush()


def char_starts(pieces: list[bytes]) -> list[int]:
    """The characters completed by the bytes before each token (valid UTF-8 text)."""
    return [len(b"".join(pieces[:i]).decode("utf-8", "ignore")) for i in range(len(pieces))]


def test_text_offset_of_a_character_split_across_byte_tokens(byte_bpe):
    """A token holding part of a character adds no characters (not its "bytes:\\xNN" escape) until the token that
    completes the character: every offset indexes into the text, whole or streamed in chunks."""
    ids = byte_bpe.encode(TEXT, add_special_tokens=False)
    pieces = byte_bpe.token_bytes(ids)
    assert pieces == [b"\xc3\xa9", *(bytes([b]) for b in "€😀".encode()), " café".encode()]  # a byte a token
    lp = ChoiceLogprobs(byte_bpe, chat=False).of(entries(ids))
    assert served_text(byte_bpe, ids) == TEXT
    assert lp["tokens"][1] == "bytes:\\xe2"
    assert lp["text_offset"] == char_starts(pieces) == [0, 1, 1, 1, 2, 2, 2, 2, 3]
    streamed = ChoiceLogprobs(byte_bpe, chat=False)
    chunks = [streamed.of(entries(ids[i:i + 2]))["text_offset"] for i in range(0, len(ids), 2)]
    assert sum(chunks, []) == lp["text_offset"]


def test_text_offset_of_an_echoed_prompt_and_its_continuation(byte_bpe):
    """Echo: the prompt's tokens index into the prompt as given (the <s> put before a text prompt shows nothing,
    one in token ids shows as "<s>"), the generated ones into the text after it."""
    prompt = byte_bpe.encode(TEXT)  # <s> ... </s>
    assert byte_bpe.convert_ids_to_tokens(prompt[:1]) == ["<s>"]
    text_prompt, generated = prompt[:-1], byte_bpe.encode("€ é", add_special_tokens=False)
    lp = ChoiceLogprobs(byte_bpe, chat=False, echo=(TEXT, text_prompt))
    offsets = lp.of(entries(text_prompt))["text_offset"] + lp.of(entries(generated))["text_offset"]
    after = char_starts(byte_bpe.token_bytes(generated))
    assert offsets == [0] + char_starts(byte_bpe.token_bytes(text_prompt[1:])) + [len(TEXT) + a for a in after]
    echoed = byte_bpe.decode(prompt[:-1])  # a token-id prompt: its text is decoded, <s> included
    assert echoed.startswith("<s>")
    lp = ChoiceLogprobs(byte_bpe, chat=False, echo=(echoed, prompt[:-1]))
    assert lp.of(entries(prompt[:-1]))["text_offset"] == [0] + [3 + a for a in char_starts(
        byte_bpe.token_bytes(prompt[1:-1]))]
