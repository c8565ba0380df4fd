"""plmkit serve as OpenAI's clients and vLLM expect, over HTTP on 127.0.0.1 (the openai client, max_retries=0, and
raw requests): null fields left out, unsupported fields that change nothing accepted, assistant messages sent
back as the client dumps them, a greeting before the first user turn, the developer role, prompt lists longer
than --max-queue, tokenization off the event loop, --batch-tokens within a request, HTTP-level errors, CORS,
GET /v1/models/{id} and /v1/translate on a model whose positions equal its max_target_length."""
import concurrent.futures
import threading
import time
import urllib.request

import pytest

import serve_helpers as sh
from plmkit.chat import encode_prompt, format_prompt
from plmkit.serving import ServeSettings, create_app
from plmkit.serving.models import load_served_model

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "tell me about the harbour"}]


class Spy:
    """A tokenizer that records (thread name, characters) of every text it or its backend tokenizes."""

    def __init__(self, tokenizer):
        self._tok, self.calls = tokenizer, []
        backend = tokenizer.backend_tokenizer
        spy = self

        class Backend:
            def __getattr__(self, name):
                return getattr(backend, name)

            def encode(self, text, *args, **kwargs):
                spy.calls.append((threading.current_thread().name, len(text)))
                return backend.encode(text, *args, **kwargs)

        self.backend_tokenizer = Backend()

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, text, *args, **kwargs):
        self.calls.append((threading.current_thread().name, len(text)))
        return self._tok(text, *args, **kwargs)


def spying_loader(shapes: list):
    """Models whose tokenizer is a `Spy` and whose embeddings record each forward's (inputs, tokens)."""
    def load(name, path, device):
        served = load_served_model(name, path, device)
        served.tokenizer = Spy(served.tokenizer)
        embed = served.embed

        def recorded(ids, mask):
            shapes.append(tuple(ids.shape))
            return embed(ids, mask)

        served.embed = recorded
        return served
    return load


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("compat")
    return {"gpt": str(sh.decoder_dir(root)), "minilm": str(minilm_dir),
            "bart": str(sh.seq2seq_dir(root))}  # (128 positions, no task file: max_target_length 128)


@pytest.fixture(scope="module")
def shapes():
    return []


@pytest.fixture(scope="module")
def app(dirs, shapes):
    return create_app(dirs, ServeSettings(device="cpu", max_batch=2, max_queue=3, batch_tokens=64),
                      loader=spying_loader(shapes))


@pytest.fixture(scope="module")
def url(app):
    with sh.running(app) as url:
        yield url


@pytest.fixture(scope="module")
def gpt(dirs):
    return load_served_model("ref", dirs["gpt"], "cpu")


def error(status_body) -> tuple[int, str | None, str | None, str]:
    status, body = status_body
    err = body["error"] if isinstance(body, dict) else {}
    return status, err.get("param"), err.get("code"), err.get("message", "")


def test_null_means_left_out_and_unsupported_fields_that_change_nothing_are_accepted(url, client):
    chat = {"model": "gpt", "messages": USER, "max_tokens": 3, "temperature": 0}
    nulls = dict.fromkeys(["n", "stream", "presence_penalty", "frequency_penalty", "min_tokens", "stop", "seed",
                           "logit_bias", "tools", "tool_choice", "response_format", "parallel_tool_calls",
                           "stream_options", "user", "functions", "function_call"])
    plain = sh.post(url, "/v1/chat/completions", chat)[1]["choices"][0]["message"]["content"]
    for fields in (nulls, {"response_format": {"type": "text"}, "tools": [], "tool_choice": "none",
                           "logit_bias": {}}):
        status, body = sh.post(url, "/v1/chat/completions", {**chat, **fields})
        assert status == 200 and body["choices"][0]["message"]["content"] == plain, body
    completion = {"model": "gpt", "prompt": "Rain", "max_tokens": 3, "temperature": 0}
    for fields in (dict.fromkeys(["n", "stream", "echo", "presence_penalty", "frequency_penalty", "best_of",
                                  "suffix", "logprobs", "logit_bias"]), {"best_of": 2, "n": 2}, {"best_of": 1}):
        status, body = sh.post(url, "/v1/completions", {**completion, **fields})
        assert status == 200 and body["choices"][0]["text"] == client.completions.create(**completion).choices[0].text
    assert client.embeddings.create(model="minilm", input="hi", extra_body={"encoding_format": None}).data
    assert client.chat.completions.create(model="gpt", messages=USER, max_tokens=2, n=None, stream=None,
                                          presence_penalty=None).choices
    for path, body, param in [("/v1/chat/completions", {**chat, "response_format": {"type": "json_object"}},
                               "response_format"),
                              ("/v1/chat/completions", {**chat, "tools": [{"type": "function"}]}, "tools"),
                              ("/v1/chat/completions", {**chat, "logit_bias": {"5": 100}}, "logit_bias"),
                              ("/v1/completions", {**completion, "best_of": 3}, "best_of"),
                              ("/v1/completions", {**completion, "suffix": "end"}, "suffix"),
                              ("/v1/chat/completions", {**chat, "model": None}, "model")]:
        status, got, _, message = error(sh.post(url, path, body))
        assert (status, got) == (400, param) and param in message, message


def test_an_assistant_message_sent_back_as_the_client_dumps_it(client):
    first = client.chat.completions.create(model="gpt", messages=USER, max_tokens=4, temperature=0)
    dumped = first.choices[0].message.model_dump()
    assert {"refusal", "annotations", "audio", "function_call", "tool_calls"} <= dumped.keys()
    again = [*USER, dumped, {"role": "user", "content": "and then?"}]
    plain = [*USER, {"role": "assistant", "content": dumped["content"]}, {"role": "user", "content": "and then?"}]
    reply = client.chat.completions.create(model="gpt", messages=again, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content == client.chat.completions.create(
        model="gpt", messages=plain, max_tokens=4, temperature=0).choices[0].message.content
    with_empty = [*USER, {**dumped, "tool_calls": [], "annotations": []}, {"role": "user", "content": "and then?"}]
    assert client.chat.completions.create(model="gpt", messages=with_empty, max_tokens=2).choices
    with pytest.raises(openai.BadRequestError, match="tool_calls"):
        client.chat.completions.create(model="gpt", max_tokens=2, messages=[
            *USER, {**dumped, "tool_calls": [{"id": "a", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]}, *USER])


def test_a_conversation_may_open_with_an_assistant_greeting_and_shape_errors_name_messages(url, client, gpt):
    greeting = [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "tell me a joke"}]
    r = client.chat.completions.create(model="gpt", messages=greeting, max_tokens=4, temperature=0)
    text = ("<|system|>\nbe brief\n<|assistant|>\nHi! How can I help?<|endoftext|>"
            "<|user|>\ntell me a joke\n<|assistant|>\n")
    assert format_prompt(greeting[:2], "tell me a joke") == text
    assert r.usage.prompt_tokens == len(encode_prompt(gpt.tokenizer, text))
    for messages in ([{"role": "system", "content": "x"}], [*USER, {"role": "assistant", "content": "a"}],
                     [{"role": "user", "content": ""}]):
        status, param, _, message = error(sh.post(url, "/v1/chat/completions", {"model": "gpt", "messages": messages}))
        assert (status, param) == (400, "messages") and message.startswith("messages:"), message


def test_the_developer_role_is_the_system_role_and_text_parts_are_a_line_apart(client):
    def chat(messages):
        return client.chat.completions.create(model="gpt", messages=messages, max_tokens=4, temperature=0)

    system, developer = (chat([{"role": role, "content": "be nice"}, *USER]) for role in ("system", "developer"))
    assert developer.choices[0].message.content == system.choices[0].message.content
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens
    parts = chat([{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]}])
    assert parts.usage.prompt_tokens == chat([{"role": "user", "content": "Hello\nworld"}]).usage.prompt_tokens
    assert parts.usage.prompt_tokens != chat([{"role": "user", "content": "Helloworld"}]).usage.prompt_tokens


def test_stream_options_need_stream(url):
    status, param, _, _ = error(sh.post(url, "/v1/chat/completions", {"model": "gpt", "messages": USER,
                                                                        "stream_options": {"include_usage": True}}))
    assert (status, param) == (400, "stream_options")
    status, body = sh.post(url, "/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 1, "stream": True,
                                                    "stream_options": {"include_usage": True}})
    assert status == 200 and b"data: [DONE]" in body


def test_more_prompts_than_max_queue_are_served_on_an_idle_server(client):
    """--max-queue 3: a request of 5 prompts (completions) or of 40 inputs in parts of --batch-tokens 64
    (embeddings) comes to an empty queue and is served whole, in order."""
    prompts = ["a", "b", "c", "d", "e"]
    r = client.completions.create(model="gpt", prompt=prompts, max_tokens=2, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3, 4]
    for i, p in enumerate(prompts):
        assert r.choices[i].text == client.completions.create(model="gpt", prompt=p, max_tokens=2,
                                                              temperature=0).choices[0].text
    assert len(client.embeddings.create(model="minilm", input=["the harbour was quiet tonight"] * 40).data) == 40


def test_batch_tokens_bound_every_forward_of_one_request_results_in_order(client, shapes):
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(40)] + ["long " * 80]  # the last over 64
    shapes.clear()
    together = client.embeddings.create(model="minilm", input=texts, encoding_format="float").data
    assert len(shapes) > 1 and all(b * t <= 64 for b, t in shapes if b > 1) and (1, 82) in shapes, shapes
    alone = [client.embeddings.create(model="minilm", input=t, encoding_format="float").data[0] for t in texts[::10]]
    assert [d.index for d in together] == list(range(len(texts)))
    for mine, its in zip(together[::10], alone):
        assert max(abs(a - b) for a, b in zip(mine.embedding, its.embedding)) < 1e-5


def test_long_texts_are_tokenized_off_the_event_loop_and_an_over_long_one_is_refused_unread(app, url):
    tokenizers = {name: app.state.server.models[name].tokenizer for name in ("gpt", "minilm")}
    for spy in tokenizers.values():
        spy.calls.clear()
    assert sh.post(url, "/v1/embeddings", {"model": "minilm", "input": "a short one"})[0] == 200
    loop = tokenizers["minilm"].calls[-1][0]
    long = ("x" * 150 + " ") * 30  # 4,530 characters, 30 WordPiece tokens ([UNK]: words over 100 characters)
    assert sh.post(url, "/v1/embeddings", {"model": "minilm", "input": long})[0] == 200
    assert tokenizers["minilm"].calls[-1][1] == len(long)
    assert tokenizers["minilm"].calls[-1][0] != loop  # (a worker thread)

    big = "the harbour was quiet and " * 80_000  # 2 MB
    slow = []

    def poll():  # /health while the big request is handled
        for _ in range(10):
            started = time.monotonic()
            urllib.request.urlopen(f"{url}/health", timeout=30).read()
            slow.append(time.monotonic() - started)
            time.sleep(0.02)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        polled = pool.submit(poll)
        status, param, code, message = error(sh.post(url, "/v1/chat/completions",
                                                      {"model": "gpt", "messages": [{"role": "user", "content": big}]}))
        polled.result(timeout=60)
    assert (status, param, code) == (400, "messages", "context_length_exceeded") and "256" in message, message
    assert max(n for _, n in tokenizers["gpt"].calls) < 10_000  # its start only, never the 2 MB
    assert max(slow) < 1.0, slow


def test_http_level_errors_are_clear(url):
    request = urllib.request.Request(f"{url}/v1/completions", method="GET")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 405 and err.value.headers["Allow"] == "POST"
    cases = [(b'{"model":"gpt","prompt":"\xff\xfe"}', "application/json", "UTF-8"),
             (b"", "application/json", "empty"),
             (b'{"model":"gpt","prompt":"x"}', "text/plain", "Content-Type: application/json"),
             (b'{"model":"gpt","prompt":"x"}', "application/x-www-form-urlencoded", "x-www-form-urlencoded")]
    for body, kind, says in cases:
        status, _, code, message = error(sh.post(url, "/v1/completions", body, {"Content-Type": kind}))
        assert (status, code) == (400, "invalid_json") and says in message, message


def test_models_retrieve(client):
    model = client.models.retrieve("gpt")
    assert (model.id, model.object, model.owned_by) == ("gpt", "model", "plmkit")
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["code"] == "model_not_found"


def test_translate_on_a_model_whose_positions_equal_max_target_length(url):
    status, body = sh.post(url, "/v1/translate", {"model": "bart", "input": "hello there"})
    assert status == 200 and body["data"][0]["translation_text"], body


def test_cors_only_for_allowed_origins(dirs, url):
    ask = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}

    def preflight(base: str, origin: str):
        request = urllib.request.Request(f"{base}/v1/chat/completions", method="OPTIONS",
                                         headers={**ask, "Origin": origin})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers

    status, headers = preflight(url, "http://localhost:3000")  # (default: no origin allowed)
    assert status != 200 and "access-control-allow-origin" not in headers
    settings = ServeSettings(device="cpu", api_key="sekret", allowed_origins=["http://localhost:3000"])
    with sh.running(create_app({"gpt": dirs["gpt"]}, settings)) as base:
        status, headers = preflight(base, "http://localhost:3000")
        assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "authorization" in headers["access-control-allow-headers"].lower()
        assert preflight(base, "http://evil.example")[0] == 400
        client = sh.openai_client(base, "sekret", default_headers={"Origin": "http://localhost:3000"})
        r = client.completions.with_raw_response.create(model="gpt", prompt="x", max_tokens=1)
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
