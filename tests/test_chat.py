import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clm_helpers import tiny_tokenizer  # noqa: E402
from plmkit.chat import StopFilter, encode_prompt, encode_text, format_prompt, truncate_history
from plmkit.errors import ConfigError


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_template_text():
    assert format_prompt([], "hi") == "<|user|>\nhi\n<|assistant|>\n"
    text = format_prompt([("hi", "hello!")], "how are you?", system="Be brief.")
    assert text == ("<|system|>\nBe brief.\n<|user|>\nhi\n<|assistant|>\nhello!<|endoftext|>"
                    "<|user|>\nhow are you?\n<|assistant|>\n")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]
    assert format_prompt(messages, "x") == format_prompt([("hi", "hello!")], "x")
    with_system = [{"role": "system", "content": "Be brief."}] + messages
    assert format_prompt(with_system, "x") == format_prompt([("hi", "hello!")], "x", system="Be brief.")
    with pytest.raises(ConfigError):
        format_prompt([{"role": "user", "content": "hi"}], "x")


def test_eos_in_template_is_the_eos_token(tok):
    ids = encode_text(tok, format_prompt([("a", "b")], "c"))
    assert ids.count(tok.eos_token_id) == 1


def test_truncate_history_drops_oldest_turns_first(tok):
    history = [(f"question {i}", f"answer number {i}") for i in range(6)]
    full = len(encode_text(tok, format_prompt(history, "last one")))
    kept, ids = truncate_history(tok, history, "last one", max_tokens=full)
    assert kept == history and ids == encode_text(tok, format_prompt(history, "last one"))
    kept, ids = truncate_history(tok, history, "last one", max_tokens=full - 1)
    assert kept == history[1:] and ids == encode_text(tok, format_prompt(history[1:], "last one"))
    only_new = len(encode_text(tok, format_prompt([], "last one", system="sys")))
    kept, ids = truncate_history(tok, history, "last one", max_tokens=only_new, system="sys")
    assert kept == [] and len(ids) == only_new
    with pytest.raises(ConfigError, match="context window"):
        truncate_history(tok, history, "last one", max_tokens=only_new - 1, system="sys")


def test_a_prompt_starts_with_the_bos_its_tokenizer_puts_before_a_text(tok, tmp_path):
    """As Hugging Face's pipeline and vLLM: Llama-style tokenizers (a BOS before every text) give prompts that
    start with it, also in the chat template and after history is cut; others (GPT-2's: none; BERT's [CLS] ...
    [SEP] around a text) nothing added."""
    from tokenizers.processors import TemplateProcessing
    from plmkit.tokenization import Tokenizer
    assert encode_prompt(tok, "hello there") == encode_text(tok, "hello there")
    tok.save_pretrained(tmp_path / "bos")
    llama_like = Tokenizer.from_pretrained(tmp_path / "bos")
    bos = llama_like.bos_token_id
    llama_like.backend_tokenizer.post_processor = TemplateProcessing(single=f"{llama_like.bos_token} $A",
                                                                     special_tokens=[(llama_like.bos_token, bos)])
    assert encode_prompt(llama_like, "hello there") == [bos] + encode_text(tok, "hello there")
    history = [(f"question {i}", f"answer number {i}") for i in range(3)]
    full = len(encode_prompt(llama_like, format_prompt(history, "last one")))
    kept, ids = truncate_history(llama_like, history, "last one", max_tokens=full - 1)
    assert kept == history[1:] and ids == encode_prompt(llama_like, format_prompt(history[1:], "last one"))
    bert_like = Tokenizer.train(["hello there, general kenobi"] * 5, 120, model="wordpiece", style="bert")
    assert bert_like.encode("hello")[0] == bert_like.cls_token_id  # ([CLS] ... [SEP]: no BOS)
    assert encode_prompt(bert_like, "hello there") == encode_text(bert_like, "hello there")


def test_stop_filter_never_shows_the_stop_string():
    f = StopFilter(["<|user|>"])
    pieces = ["Hello", " there<", "|us", "er|>", "more"]
    shown = "".join(f.push(p) for p in pieces) + f.flush()
    assert shown == "Hello there" and f.done
    f = StopFilter(["<|user|>"])
    assert "".join(f.push(p) for p in ["a <", "b"]) + f.flush() == "a <b"


def test_text_that_is_not_utf8_is_a_data_error(tok):
    from plmkit.errors import DataError
    bad = b"hel\xfflo".decode("utf-8", "surrogateescape")  # what sys.argv / sys.stdin hold for such bytes
    with pytest.raises(DataError, match="UTF-8"):
        encode_text(tok, bad)
    with pytest.raises(DataError, match="UTF-8"):
        truncate_history(tok, [], bad, max_tokens=100)
