"""The task endpoints answer what `plmkit predict` answers, for every task plmkit fine-tunes (tiny models
fine-tuned for a step or two); concurrent requests are batched together and still answer the same; an
encoder-decoder's two batchers have their own metrics."""
import concurrent.futures
import json
import math
import urllib.request

import pytest

import finetune_helpers as h
import serve_helpers as sh
from plmkit import tasks
from plmkit.cli import main
from plmkit.recipes.finetune import finetune
from plmkit.serving import ServeSettings, create_app
from plmkit.tasks import get_task

PAIRS = [("bibliothèque partagée pour le traitement d'images", "shared library for image processing"),
         ("serveur web léger et rapide", "light and fast web server"),
         ("jeu de puzzle pour les enfants", "puzzle game for children")]
CONTEXT = "The Eiffel Tower is in Paris. It was finished in 1889 and is 330 metres tall."
REQUESTS = {
    "classify": ("cls", ["A moving, beautifully acted film.", {"text": "Dull and far too long."}]),
    "ner": ("ner", ["钱其琛在北京会见了美国总统", {"text": "我爱北京"}]),
    "qa": ("qa", [{"question": "Where is the Eiffel Tower?", "context": CONTEXT},
                  {"question": "When was it finished?", "context": CONTEXT}]),
    "translate": ("fr-en", ["serveur web léger et rapide", {"source": "jeu de puzzle"}]),
    "summarize": ("sum", [{"text": "A light web server. It is a package of Debian. Install it with apt."}]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    tiny = h.tiny_model_dir()
    train, _ = h.en_sentiment_files(tmp)
    finetune("classification", tiny, train, tmp / "cls", None, **h.quick(max_steps=2))
    conll = h.head_conll(h.data_dir("zh-ner") / "train.conll", tmp / "ner.conll", 40)
    finetune("ner", tiny, conll, tmp / "ner", None, **h.quick(max_steps=2))
    finetune("qa", tiny, h.squad_file(tmp / "squad.json"), tmp / "qa", None,
             **h.quick(max_steps=2, max_length=48, doc_stride=16))
    pairs = h.write_jsonl(tmp / "pairs.jsonl", [{"source": s, "target": t} for s, t in PAIRS] * 4)
    assert main(["tokenizer", "train", "--corpus", str(pairs), "--model", "unigram", "--style", "marian",
                 "--vocab-size", "300", "--out", str(tmp / "tok"), "--quiet"]) == 0
    finetune("translation", None, pairs, tmp / "fr-en", None, preset="marian-tiny", tokenizer=str(tmp / "tok"),
             num_beams=2, max_target_length=8, **h.quick(max_steps=2))
    docs = h.write_jsonl(tmp / "docs.jsonl", [{"text": f"{s}. It is a package of Debian.", "summary": t}
                                            for s, t in PAIRS] * 2)
    finetune("summarization", tiny, docs, tmp / "sum", None, init="bert2bert", num_beams=1, max_target_length=6,
             **h.quick(max_steps=1, batch_size=4))
    return {name: str(tmp / name / "model") for name in ("cls", "ner", "qa", "fr-en", "sum")}


@pytest.fixture(scope="module")
def url(models):
    with sh.running(create_app(models, ServeSettings(device="cpu", batch_wait_ms=20))) as url:
        yield url


def same(a, b) -> bool:
    """Equal JSON, floats within 1e-4 (a batch of other requests pads differently)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, abs_tol=1e-4)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("endpoint", list(REQUESTS))
def test_task_endpoints_answer_what_plmkit_predict_answers(url, models, endpoint):
    model, records = REQUESTS[endpoint]
    status, body = sh.post(url, f"/v1/{endpoint}", {"model": model, "input": records})
    expected = tasks.predict_dir(models[model], records, device="cpu")
    assert status == 200, body
    assert same(body["data"], expected), (body["data"], expected)
    assert body["usage"]["prompt_tokens"] > 0 and body["model"] == model


def test_concurrent_task_requests_are_batched_and_answer_the_same(url, models):
    texts = [f"{word} film, {n} stars" for n in range(6) for word in ("great", "awful", "fine")]
    expected = tasks.predict_dir(models["cls"], texts, device="cpu")
    before = sh.metric(url, "plmkit_batch_size_count", model="cls")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: sh.post(url, "/v1/classify", {"model": "cls", "input": t}), texts))
    assert all(status == 200 for status, _ in answers)
    assert all(same(body["data"][0], e) for (_, body), e in zip(answers, expected))
    batches = sh.metric(url, "plmkit_batch_size_count", model="cls") - before
    assert batches < len(texts), "no two requests shared a batch"


def test_an_encoder_decoders_two_batchers_have_their_own_metrics(url):
    """The translation model answers /v1/translate through its encoder batcher and completions through its
    generation batcher: the ``batcher`` label keeps their batch sizes and queues apart under one model name."""
    def steps():
        return {kind: sh.metric(url, "plmkit_batch_size_count", model="fr-en", batcher=kind)
                for kind in ("encode", "generate")}

    before = steps()
    assert sh.post(url, "/v1/translate", {"model": "fr-en", "input": ["serveur web", "jeu de puzzle"]})[0] == 200
    translated = steps()
    status, body = sh.post(url, "/v1/completions", {"model": "fr-en", "prompt": "serveur web", "max_tokens": 3,
                                                     "temperature": 0})
    completed = steps()
    assert status == 200 and translated == {"encode": before["encode"] + 1, "generate": before["generate"]}
    assert completed == {"encode": translated["encode"],  # one decoding step per token
                         "generate": translated["generate"] + body["usage"]["completion_tokens"]}
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    for kind in ("encode", "generate"):
        assert f'plmkit_queue_depth{{batcher="{kind}",model="fr-en"}} 0.0' in text
    assert 'plmkit_running_sequences{batcher="generate",model="fr-en"} 0.0' in text


def test_a_translation_takes_its_turn_while_a_completion_decodes_on_the_same_model(tmp_path):
    """Over HTTP, one encoder-decoder: /v1/translate, sent while a long streamed completion decodes, answers
    between two of the completion's steps (which then goes on), and each answers what it answers alone."""
    directory = sh.seq2seq_dir(tmp_path, "marian")
    get_task("translation").of(num_beams=1, max_target_length=8).save(directory)
    records = ["serveur web léger et rapide", "jeu de puzzle"]
    expected = tasks.predict_dir(str(directory), records, device="cpu")
    app = create_app({"mt": str(directory)}, ServeSettings(device="cpu"), loader=sh.slowed_loader(0.03))
    with sh.running(app) as url:
        alone = sh.post(url, "/v1/completions", {"model": "mt", "prompt": "The old sailor", "max_tokens": 100,
                                                 "min_tokens": 100, "temperature": 0})[1]["choices"][0]["text"]
        steps = sh.metric(url, "plmkit_batch_size_count", model="mt", batcher="generate")
        conn, stream, _ = sh.stream_request(url, 100, model="mt", prompt="The old sailor", first=False)  # 100 x 30 ms
        status, body = sh.post(url, "/v1/translate", {"model": "mt", "input": records})
        still_running = sh.metric(url, "plmkit_running_sequences", model="mt", batcher="generate")
        steps_by_then = sh.metric(url, "plmkit_batch_size_count", model="mt", batcher="generate") - steps
        events = [e for e in stream.read().decode().split("\n\n") if e]
        conn.close()
    assert status == 200 and same(body["data"], expected), (body, expected)
    assert still_running == 1 and steps_by_then < 60, ("the translation waited for the completion to end "
                                                       f"({still_running} running, {steps_by_then} steps by then; "
                                                       f"the stream ended with {events[-2:]})")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == alone


@pytest.mark.parametrize("endpoint, body, says", [
    ("classify", {"model": "cls", "input": [{"txt": "x"}]}, "input:1: no 'text' field"),
    ("classify", {"model": "cls", "input": []}, "input: empty"),
    ("classify", {"model": "ner", "input": "x"}, "it answers /v1/ner"),
    ("qa", {"model": "qa", "input": [{"question": "Where?"}]}, "input:1:"),
    ("translate", {"model": "sum", "input": "x"}, "it answers /v1/summarize"),
])
def test_bad_task_requests_are_400_naming_the_record(url, endpoint, body, says):
    status, answer = sh.post(url, f"/v1/{endpoint}", body)
    assert status == 400 and says in answer["error"]["message"], answer


def test_a_record_holding_a_huge_integer_is_a_400_or_ignored_where_predict_ignores_it(url):
    """A record's size is counted in its strings, not by writing it as JSON (orjson refuses integers past 64
    bits: that made a 500 of a bad record, and of a record with an unknown field plmkit predict ignores)."""
    status, body = sh.post(url, "/v1/classify", {"model": "cls", "input": [{"text": "good", "text_pair": 10 ** 30}]})
    assert status == 400 and "text_pair" in body["error"]["message"]
    status, body = sh.post(url, "/v1/classify", {"model": "cls", "input": {"text": "good", "extra": 10 ** 30}})
    assert status == 200 and len(body["data"]) == 1
