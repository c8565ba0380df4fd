import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clm_helpers import tiny_tokenizer  # noqa: E402
from plmkit.chat import (IGNORE_INDEX, SFTCollator, SFTDataset, StopFilter, encode_text, ensure_pad_token,
                         format_prompt, read_pairs, truncate_history)
from plmkit.errors import ConfigError, DataError
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel


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


def test_sft_labels_cover_only_the_response(tok):
    data = SFTDataset([("hello", "hi there")], tok, max_length=64)
    ex = data[0]
    prompt_ids = encode_text(tok, "<|user|>\nhello\n<|assistant|>\n")
    reply_ids = encode_text(tok, "hi there") + [tok.eos_token_id]
    assert ex["input_ids"] == prompt_ids + reply_ids
    assert ex["labels"] == [IGNORE_INDEX] * len(prompt_ids) + reply_ids
    assert tok.decode(ex["input_ids"]) == "<|user|>\nhello\n<|assistant|>\nhi there<|endoftext|>"


def test_loss_depends_only_on_the_response(tok):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=64,
                                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    pad = ensure_pad_token(tok, model)
    collate = SFTCollator(pad)
    data = SFTDataset([("hello", "hi there"), ("a much longer question here", "ok")], tok, 64)
    batch = collate([data[0], data[1]])
    assert batch["input_ids"].shape[0] == 2 and (batch["input_ids"][batch["attention_mask"] == 0] == pad).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    loss = model(**batch).loss
    # the loss equals a hand-computed mean over response tokens (+ eos) only
    logits = model(batch["input_ids"], batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    torch.testing.assert_close(loss, manual)
    n_reply = len(encode_text(tok, "hi there")) + 1 + len(encode_text(tok, "ok")) + 1
    assert int(keep.sum()) == n_reply


def test_pad_token_is_added_not_eos():
    from clm_helpers import corpus_text
    from plmkit.tokenization import Tokenizer
    tok = Tokenizer.train_bpe([corpus_text()], 300)
    assert tok.pad_token_id is None
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=32))
    before = len(tok)
    pad = ensure_pad_token(tok, model)
    assert pad != tok.eos_token_id and tok.pad_token == "<|pad|>" and len(tok) == before + 1
    assert model.get_input_embeddings().num_embeddings == len(tok) and model.config.pad_token_id == pad


def test_long_examples_are_cut_or_skipped(tok):
    data = SFTDataset([("hi", "word " * 100), ("word " * 100, "x"), ("hi", "short")], tok, max_length=40)
    assert len(data) == 2 and data.skipped == 1 and data.truncated == 1 and len(data[0]["input_ids"]) == 40


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


def test_stop_filter_never_shows_the_stop_string():
    f = StopFilter(["<|user|>"])
    pieces = ["Hello", " there<", "|us", "er|>", "more"]
    shown = "".join(f.push(p) for p in pieces) + f.flush()
    assert shown == "Hello there" and f.done
    f = StopFilter(["<|user|>"])
    assert "".join(f.push(p) for p in ["a <", "b"]) + f.flush() == "a <b"


def test_jsonl_errors_name_file_and_line(tmp_path):
    good = {"prompt": "hi", "response": "hello"}
    cases = [("{bad json", "malformed JSON"), (json.dumps({"prompt": "hi"}), 'missing "response"'),
             (json.dumps({"prompt": 3, "response": "x"}), '"prompt" must be a string'), ("[1, 2]", "JSON object")]
    for text, message in cases:
        path = tmp_path / "d.jsonl"
        path.write_text(json.dumps(good) + "\n\n" + text + "\n")
        with pytest.raises(DataError, match=f"d.jsonl:3: .*{message}"):
            list(read_pairs(path))


def test_text_that_is_not_utf8_is_a_data_error(tok):
    from plmkit.errors import DataError
    bad = b"hel\xfflo".decode("utf-8", "surrogateescape")  # what sys.argv / sys.stdin hold for such bytes
    with pytest.raises(DataError, match="UTF-8"):
        encode_text(tok, bad)
    with pytest.raises(DataError, match="UTF-8"):
        truncate_history(tok, [], bad, max_tokens=100)
