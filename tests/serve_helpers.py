"""Shared by the serving tests and bench/serve_load.py: tiny model directories and a real uvicorn server on
127.0.0.1 (a free port) in a thread."""
from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "cli"))
from clm_model import save_tiny_model  # noqa: E402


def decoder_dir(root: Path, n_positions: int = 256) -> Path:
    """A random GPT-2-tiny with a small BPE tokenizer (random weights: the text is noise)."""
    return save_tiny_model(Path(root) / "gpt", n_positions=n_positions)


def seq2seq_dir(root: Path, family: str = "bart") -> Path:
    """A random tiny BART, Marian or BERT-to-BERT ("bert2bert": two BERT-tiny halves) (weights made large
    enough that greedy choices are clear; their seed one whose greedy targets are whole characters) with a
    small tokenizer of its style, saved as a model directory (the text is noise)."""
    import torch

    from clm_helpers import corpus_text
    from plmkit.models.registry import config_from_preset, family as family_of
    from plmkit.tokenization import Tokenizer
    from seq2seq_checks import roughen
    model_kind = {"bart": "byte-bpe", "marian": "unigram", "bert2bert": "wordpiece"}[family]
    tok = Tokenizer.train([corpus_text()], 300, model=model_kind, style="bert" if family == "bert2bert" else family)
    torch.manual_seed(0)
    if family == "bert2bert":
        from plmkit import EncoderDecoderConfig, EncoderDecoderModel
        half = config_from_preset("bert-tiny", vocab_size=len(tok), max_position_embeddings=128)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(half, half,
                                                                   **EncoderDecoderConfig.tokenizer_fields(tok))
        model = roughen(EncoderDecoderModel(config), seed=2)
    else:
        cls = family_of(family).model_class("seq2seq-lm")
        model = roughen(cls(config_from_preset(f"{family}-tiny", max_position_embeddings=128,
                                               **cls.config_class.tokenizer_fields(tok))), seed=2)
    out = Path(root) / family
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def running(app, ready: bool = True, timeout: float = 120.0):
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port, in a thread; yields the base URL. With
    ``ready``, waits until /health answers 200."""
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        if ready:
            wait_ready(url, app, deadline)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_ready(url: str, app, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code != 503:
                raise
            if app is not None and app.state.server.state == "failed":
                raise RuntimeError(f"models failed to load: {app.state.server.error}")
        if time.monotonic() > deadline:
            raise RuntimeError("the models did not load in time")
        time.sleep(0.05)


def openai_client(url: str, api_key: str = "unused", **options):
    """The official openai client of the server at `url`, without retries (a test sees each answer)."""
    import openai
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, **{"timeout": 60, **options})


def metric(url: str, name: str, **labels) -> float:
    """The sum of the Prometheus samples ``name`` of /metrics whose labels include ``labels`` (0 when none):
    ``model="gpt"`` counts each of its batchers, ``batcher="generate"`` one."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        head, _, given = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', given))
        if head == name and all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(value)
    return total


def post(url: str, path: str, body, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict | bytes]:
    """(status, JSON body or bytes) of a POST; ``body`` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get("content-type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


def slowed_loader(seconds: float):
    """A server loader whose model sleeps ``seconds`` in every forward pass (a long generation, made
    deterministic)."""
    from plmkit.serving.models import load_served_model

    def load(name, path, device):
        served = load_served_model(name, path, device)
        forward = served.model.forward

        def slow(*args, **kwargs):
            time.sleep(seconds)
            return forward(*args, **kwargs)

        served.model.forward = slow
        return served
    return load


def stream_request(url: str, max_tokens: int = 250, model: str = "gpt", prompt: str = "Rain", first: bool = True):
    """An open streamed greedy completion of ``max_tokens`` tokens (min_tokens: no early end, whatever path a
    CPU's rounding takes) that has begun: (connection, response, its first event's chunk). ``first=False``:
    the completion decoding (its row running), whether or not its text has shown yet (a random model's
    tokens may be parts of characters that complete late); the chunk is None. (It first waits for the rows of
    completions already answered to leave: a row leaves just after its answer, so a stale count would pass.)"""
    deadline = time.monotonic() + 30
    while not first and metric(url, "plmkit_running_sequences", model=model, batcher="generate") > 0:
        assert time.monotonic() < deadline, "a completion answered before still holds its row"
        time.sleep(0.01)
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=30)
    conn.request("POST", "/v1/completions", json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                        "min_tokens": max_tokens, "temperature": 0, "stream": True}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    if not first:
        deadline = time.monotonic() + 30
        while metric(url, "plmkit_running_sequences", model=model, batcher="generate") < 1:
            assert time.monotonic() < deadline, "the streamed completion never started decoding"
            time.sleep(0.01)
        return conn, response, None
    line = response.readline()
    assert line.startswith(b"data: ")
    return conn, response, json.loads(line[6:])


def classifier_dir(encoder_dir, out: Path, labels=("negative", "positive")) -> Path:
    """An encoder with a new (untrained) classification head, saved as a fine-tuned directory."""
    from plmkit import BertForSequenceClassification
    from plmkit.tasks.classification import SINGLE, ClassificationTask
    from plmkit.tokenization import Tokenizer
    model = BertForSequenceClassification.from_pretrained(encoder_dir, id2label=dict(enumerate(labels)))
    model.save_pretrained(out)
    Tokenizer.from_pretrained(encoder_dir).save_pretrained(out)
    ClassificationTask.of(problem_type=SINGLE, sentence_pairs=False).save(out)
    return Path(out)
