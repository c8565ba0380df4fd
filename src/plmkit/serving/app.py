"""`plmkit serve`'s ASGI app (FastAPI on uvicorn): OpenAI's routes, the task routes, the playground.

    GET  /                      the playground page (static/playground.html)
    GET  /health                503 {"status": "loading"} until every model is loaded, then 200
    GET  /metrics               Prometheus (serving/metrics.py)
    GET  /v1/models             the models by name, with their kind and routes
    GET  /v1/models/{name}      one of them (404 model_not_found for another name)
    POST /v1/completions        decoders: text completion (echo with logprobs: the prompt's logprobs too; max_tokens
                                0: those alone); encoder-decoders: the prompt's target; stream: server-sent events
    POST /v1/chat/completions   decoders: `plmkit chat`'s template; stream: server-sent events
    POST /v1/embeddings         encoders without a task: pooled sentence embeddings
    POST /v1/classify|ner|qa|translate|summarize   fine-tuned task models: what `plmkit predict` answers
    POST /v1/attention          encoders: the attention maps of one text, a PNG

Models load in a thread when the app starts (/health says 503 meanwhile). Requests reach a model's
batcher (serving/batching.py: its generation batcher for completions and chat, its encoder batcher for
the other routes) and wait there; every error is OpenAI's body (serving/protocol.py). Texts are tokenized on
the event loop when short (a worker thread's hop costs more), in a worker thread when long (so that /health
and streams go on meanwhile); a text whose start alone is over the model's limit is refused unread further.
With an API key, every request but the page, its script and /health needs ``Authorization: Bearer KEY``.
Browsers on --allowed-origins may call the API (CORS; none by default).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from typing import Any, Callable

import anyio
import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from plmkit.chat import SYSTEM, USER, encode_prompt, encode_text, format_prompt
from plmkit.errors import PlmkitError
from plmkit.serving.batching import (DecoderBatcher, Done, EncoderBatcher, GenerationBatcher, GenerationJob, Piece,
                                     PromptScores, Seq2SeqBatcher, Worker)
from plmkit.serving.metrics import Metrics
from plmkit.serving.models import TASK_ENDPOINTS, ServedModel, load_served_model
from plmkit.serving.protocol import (ApiError, AttentionRequest, ChatRequest, ChoiceLogprobs, CompletionRequest,
                                     EmbeddingRequest, Envelope, Sampling, TaskRequest, bad_request, embedding_item,
                                     usage, validation_error)
from plmkit.serving.settings import ServeSettings

log = logging.getLogger("plmkit.serving")

OPEN_PATHS = ("/", "/static/playground.js", "/health")  # no API key asked (they hold no data)
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's
GENERATION_ROUTES = ("/v1/completions", "/v1/chat/completions")  # a model's generation batcher; others its encoder one
# a request's texts of this many characters at most are tokenized on the event loop: a worker thread's hop costs
# ~100 us more than tokenizing a sentence (~0.3 us a character; MiniLM, 2 CPU cores)
INLINE_CHARS = 2048
BOUND_CHARS_PER_TOKEN, BOUND_MARGIN = 8, 1024  # a long text's start tokenized to bound its tokens (`encode_within`)


class Server:
    """The models of one app, their batchers and its metrics."""

    def __init__(self, models: dict[str, str], settings: ServeSettings,
                 loader: Callable[[str, str, str], ServedModel] = load_served_model):
        self.specs, self.settings, self.loader = models, settings, loader
        self.models: dict[str, ServedModel] = {}
        self.workers: dict[str, dict[str, Worker]] = {}  # name -> its batchers by kind ("generate", "encode")
        self.metrics = Metrics()
        self.state, self.error = "loading", None
        self.on_failed: Callable[[BaseException], None] | None = None  # the CLI stops the server

    def load(self) -> None:
        """Load every model and start its batcher (in a thread; /health answers meanwhile)."""
        try:
            for name, path in self.specs.items():
                served = self.loader(name, path, self.settings.device)
                self.models[name] = served
                self.workers[name] = self._workers(served)
                for worker in self.workers[name].values():
                    worker.start()
                log.info("serving %s (%s) as %r: %s", path, served.kind, name, ", ".join(served.endpoints))
            self.state = "ready"
        except Exception as err:  # noqa: BLE001 (said on /health and by the CLI)
            self.state, self.error = "failed", err
            log.error("plmkit serve: cannot load the models: %s", err)
            if self.on_failed is not None:
                self.on_failed(err)

    def _workers(self, served: ServedModel) -> dict[str, Worker]:
        """A model's batchers: "generate" (completions, chat) for a decoder or an encoder-decoder, "encode"
        (embeddings, the task routes) for an encoder or a task model."""
        s = self.settings
        slots = s.max_batch if s.batching else 1
        if served.generates:
            workers: list[Worker] = [DecoderBatcher(served.name, served.model, served.tokenizer, slots=slots,
                                                    max_queue=s.max_queue, max_len=served.context_length,
                                                    metrics=self.metrics)]
        else:
            run = partial(embed_batch, served) if served.embeds else partial(predict_batch, served, s.task_batch_size)
            workers = [EncoderBatcher(served.name, run, max_tokens=s.batch_tokens, max_wait=s.batch_wait_ms / 1000,
                                      max_queue=s.max_queue, batching=s.batching, metrics=self.metrics)]
        if served.is_seq2seq:
            workers.append(Seq2SeqBatcher(served.name, served.model, served.tokenizer, slots=slots,
                                          max_wait=s.batch_wait_ms / 1000, max_queue=s.max_queue,
                                          max_len=served.context_length, lock=served.lock, metrics=self.metrics))
        return {worker.kind: worker for worker in workers}

    def close(self) -> None:
        for workers in self.workers.values():
            for worker in workers.values():
                worker.stop()

    def check_ready(self) -> None:
        if self.state != "ready":
            raise ApiError(503, "the server is still loading its models; retry when /health answers 200"
                           if self.state == "loading" else f"the models failed to load: {self.error}",
                           type="service_unavailable", code="loading")

    def served(self, name: str) -> ServedModel:
        """The model called ``name`` (404 model_not_found when there is none)."""
        self.check_ready()
        if name not in self.models:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {', '.join(map(repr, self.models))}",
                           code="model_not_found", param="model")
        return self.models[name]

    def model(self, name: str, route: str) -> tuple[ServedModel, Worker]:
        """The model called ``name`` and its batcher for ``route``, if it answers that route."""
        served = self.served(name)
        if route == "/v1/chat/completions" and served.is_seq2seq:
            raise bad_request(f"the model {name!r} is an encoder-decoder ({type(served.model).__name__}) and has no "
                              "chat template: send its source text to /v1/completions", param="model",
                              code="no_chat_template")
        if route not in served.endpoints:
            raise bad_request(f"the model {name!r} is a {served.kind} model: it answers {', '.join(served.endpoints)}, "
                              f"not {route}", param="model", code="wrong_model")
        kind = GenerationBatcher.kind if route in GENERATION_ROUTES else EncoderBatcher.kind
        return served, self.workers[name][kind]


def model_object(m: ServedModel) -> dict:
    """OpenAI's model object, with plmkit's kind, routes and context length."""
    return {"id": m.name, "object": "model", "created": m.created, "owned_by": "plmkit", "kind": m.kind,
            "endpoints": m.endpoints, "context_length": m.context_length,
            **({"task": m.task.name} if m.task is not None else {})}


# -- what the encoder batchers run ---------------------------------------------------------------
def embed_batch(served: ServedModel, items: list[list[int]]) -> list[np.ndarray]:
    """Token ids of texts -> their embeddings, in one padded forward pass; non-finite ones are a server error
    (JSON has no NaN: written, they would read as nulls)."""
    from plmkit.data.collate import pad_sequences
    pad = served.tokenizer.pad_token_id or 0
    ids, mask = pad_sequences(items, pad)
    with torch.inference_mode():
        vectors = served.embed(ids.to(served.device), mask.to(served.device))  # (B, D)
    if not bool(torch.isfinite(vectors).all()):
        raise ApiError(500, f"the model {served.name!r} computed a non-finite embedding (NaN or infinity): its "
                            "weights or inputs overflow", type="server_error")
    return list(vectors.float().cpu().numpy())


def predict_batch(served: ServedModel, batch_size: int, records: list) -> list[dict]:
    """`plmkit predict` on records of several requests at once; a non-finite score is a server error."""
    from plmkit import tasks
    with served.lock, torch.inference_mode():
        results = tasks.predict_records(served.model, served.tokenizer, served.task, records, batch_size, where="input")
    if not all_finite(results):
        raise ApiError(500, f"the model {served.name!r} computed a non-finite score (NaN or infinity): its weights "
                            "or inputs overflow", type="server_error")
    return results


def all_finite(value) -> bool:
    """Whether every float in a JSON-shaped ``value`` is finite (JSON has no NaN: written, it reads as null)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(all_finite, value.values()))
    return all(map(all_finite, value)) if isinstance(value, (list, tuple)) else True


def record_tokens(tokenizer, record) -> int:
    """Tokens of a task record's texts (what it costs a batch)."""
    texts = [record] if isinstance(record, str) else [
        " ".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
        for v in (record.values() if isinstance(record, dict) else ())]
    return max(1, sum(len(encode_text(tokenizer, t)) for t in texts if isinstance(t, str)))


# -- responses -----------------------------------------------------------------------------------
class EventStream(StreamingResponse):
    """Server-sent events whose generator is closed as soon as the client goes (noticed while waiting
    for the next token too), so that the generator's ``finally`` frees the request's rows at once."""

    media_type = "text/event-stream"

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as group:
                async def run_then_stop(func):
                    try:
                        await func()
                    except OSError:  # the client went while we were writing
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(run_then_stop, partial(self.stream_response, send))
                await run_then_stop(partial(self.listen_for_disconnect, receive))
        finally:
            await self.body_iterator.aclose()


class Json(JSONResponse):
    """A JSON response written by orjson: an embedding's 384 floats take 7 us instead of the json module's
    206, time that the event loop's thread (which holds the GIL) would take from the model's. numpy arrays
    become lists at their own precision (float32: the shortest text that reads back as the same float32)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else orjson.dumps(data).decode()}\n\n"


def error_json(err: ApiError) -> Json:
    return Json(err.body(), status_code=err.status)


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def off_loop(work: Callable[[], Any], chars: int):
    """``work()``, tokenizing ``chars`` characters: on the event loop up to `INLINE_CHARS`, else in a worker thread
    (seconds for megabytes, during which the loop answers the other requests)."""
    return work() if chars <= INLINE_CHARS else await run_in_threadpool(work)


def chars_of(value) -> int:
    """The characters of the strings in ``value`` (texts, or records: dicts and lists of them, at any depth)."""
    if isinstance(value, str):
        return len(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return sum(chars_of(item) for item in items)


def encode_all(encode: Callable[[str], list[int]], tokenizer, texts: list[str | list[int]], limit: int,
               param: str) -> list[list[int]]:
    """Each text encoded (`encode_within`), token-id lists as they are."""
    where = [f"{param}[{i}]" if len(texts) > 1 else param for i in range(len(texts))]
    return [encode_within(encode, tokenizer, t, limit, w) if isinstance(t, str) else t for t, w in zip(texts, where)]


def encode_within(encode: Callable[[str], list[int]], tokenizer, text: str, limit: int, where: str) -> list[int]:
    """``encode(text)``; a text whose start alone has more than ``limit`` tokens is a 400 (context_length_exceeded)
    without tokenizing the rest: its first ``BOUND_CHARS_PER_TOKEN * limit`` characters are tokenized, and the
    tokens that end `BOUND_MARGIN` characters before that cut (which the rest of the text cannot change) counted."""
    cut = BOUND_CHARS_PER_TOKEN * limit + BOUND_MARGIN
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if len(text) > cut and backend is not None:
        offsets = backend.encode(text[:cut], add_special_tokens=False).offsets
        at_least = sum(end <= cut - BOUND_MARGIN for _, end in offsets)
        if at_least > limit:
            raise ApiError(400, f"{where} has more than {limit} tokens (its first {cut - BOUND_MARGIN} characters "
                                f"alone have {at_least}), but this model takes at most {limit} tokens; shorten it",
                           code="context_length_exceeded", param=where.partition("[")[0])
    return encode(text)


def check_lengths(inputs: list[list[int]], limit: int, param: str) -> None:
    """Inputs (embeddings, an encoder-decoder's sources) of at most ``limit`` tokens each, else a 400 naming both."""
    for i, ids in enumerate(inputs):
        if len(ids) > limit:
            raise ApiError(400, f"{param}[{i}] has {len(ids)} tokens, but this model takes at most {limit} tokens per "
                                f"{param}; shorten it", code="context_length_exceeded", param=param)


def check_ids(inputs: list[str | list[int]], vocab: int, param: str) -> None:
    """Token-id inputs within the model's ``vocab`` ids, else a 400 naming the first one outside."""
    for i, ids in enumerate(inputs):
        bad = next((j for j, t in enumerate(ids) if not 0 <= t < vocab), None) if isinstance(ids, list) else None
        if bad is not None:
            raise bad_request(f"{param}[{i}][{bad}]: token id {ids[bad]} is not in this model's vocabulary "
                              f"(ids 0 to {vocab - 1})", param=param, code="invalid_token_id")


def check_room(served: ServedModel, prompt_tokens: int, max_tokens: int | None, default: int, param: str,
               prompt: str = "in the prompt") -> int:
    """max_tokens for this prompt (an encoder-decoder's: the decoder's start, ``prompt`` says so); a prompt
    + max_tokens beyond the context is a 400 naming the limits, and ``param`` (the request's prompt field) when
    the prompt alone fills the context."""
    context = served.context_length
    if max_tokens is None:
        max_tokens = min(default, context - prompt_tokens)
        if max_tokens >= 1:
            return max_tokens
        max_tokens = 1
    if prompt_tokens + max_tokens > context:
        raise ApiError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} {prompt}, {max_tokens} for the "
                            "completion). Please shorten the prompt or lower max_tokens.",
                       code="context_length_exceeded", param="max_tokens" if prompt_tokens < context else param)
    return max_tokens


def create_app(models: dict[str, str], settings: ServeSettings | None = None,
               loader: Callable[[str, str, str], ServedModel] = load_served_model) -> FastAPI:
    """The app serving ``models`` (name -> directory); ``loader`` loads one (tests give their own)."""
    server = Server(models, settings or ServeSettings(), loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=server.load, name="plmkit-serve-load", daemon=True).start()
        yield
        await run_in_threadpool(server.close)

    app = FastAPI(title="plmkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, default_response_class=Json)
    app.state.server = server
    _add_error_handlers(app)
    app.add_middleware(Guard, server=server)
    if server.settings.allowed_origins:  # (added last, so outermost: a preflight carries no API key)
        app.add_middleware(CORSMiddleware, allow_origins=server.settings.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"])
    page = resources.files("plmkit.serving") / "static"

    @app.get("/", include_in_schema=False)
    async def playground() -> Response:
        return Response((page / "playground.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/static/playground.js", include_in_schema=False)
    async def playground_script() -> Response:
        return Response((page / "playground.js").read_bytes(), media_type="text/javascript; charset=utf-8")

    @app.get("/health")
    async def health() -> Json:
        if server.state == "ready":
            return Json({"status": "ok", "models": list(server.models)})
        body = {"status": server.state, **({"error": str(server.error)} if server.error else {})}
        return Json(body, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.get("/v1/models")
    async def list_models() -> dict:
        server.check_ready()
        return {"object": "list", "data": [model_object(m) for m in server.models.values()]}

    @app.get("/v1/models/{name:path}")
    async def retrieve_model(name: str) -> dict:
        return model_object(server.served(name))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        served, worker = server.model(body.model, "/v1/completions")
        given = body.prompts()
        check_ids(given, served.model.config.vocab_size, "prompt")
        tok = served.tokenizer
        # an encoder-decoder's prompts are sources, encoded as its task encodes them; the decoder starts anew
        encode = (lambda p: tok(p)["input_ids"]) if served.is_seq2seq else partial(encode_prompt, tok)
        prompts = await off_loop(partial(encode_all, encode, tok, given, served.context_length, "prompt"),
                                 chars_of(given))
        if served.is_seq2seq:
            check_lengths(prompts, served.context_length, "prompt")
            lengths = [check_room(served, len(worker.start_of(p)), body.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS,
                                  "prompt", "to start the decoder") for p in prompts]
        else:
            lengths = [check_room(served, len(p), body.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS, "prompt")
                       for p in prompts]
        echo = [p if isinstance(p, str) else tok.decode(p) for p in given] if body.echo else None
        return await generation(server, served, worker, body, request, Envelope("completion", body.model), prompts,
                                lengths, body.stops(), echo)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        served, worker = server.model(body.model, "/v1/chat/completions")
        system, history, user = body.conversation()
        eos = getattr(served.tokenizer, "eos_token", None) or "<|endoftext|>"
        text = format_prompt(history, user, system, eos)
        prompt, = await off_loop(partial(encode_all, partial(encode_prompt, served.tokenizer), served.tokenizer,
                                         [text], served.context_length, "messages"), len(text))
        max_tokens = check_room(served, len(prompt), body.max_completion_tokens or body.max_tokens,
                                server.settings.default_max_tokens, "messages")
        return await generation(server, served, worker, body, request, Envelope("chat", body.model), [prompt],
                                [max_tokens], [USER, SYSTEM] + body.stops())

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> Json:
        served, worker = server.model(body.model, "/v1/embeddings")
        inputs = body.inputs()
        check_ids(inputs, served.model.config.vocab_size, "input")
        limit, tok = served.max_input_tokens or served.context_length, served.tokenizer
        encoded = await off_loop(partial(encode_all, lambda x: tok(x)["input_ids"], tok, inputs, limit, "input"),
                                 chars_of(inputs))
        check_lengths(encoded, limit, "input")
        lengths = [len(ids) for ids in encoded]
        vectors = await worker.submit(encoded, lengths, server.settings.timeout)
        server.metrics.prompt_tokens.labels(body.model).inc(sum(lengths))
        return Json({"object": "list", "model": body.model, "usage": usage(sum(lengths)),
                     "data": [embedding_item(i, v, body.encoding_format) for i, v in enumerate(vectors)]})

    def task_route(endpoint: str):
        async def answer(body: TaskRequest) -> Json:
            served, worker = server.model(body.model, f"/v1/{endpoint}")
            records = body.records()
            lengths = await off_loop(lambda: [record_tokens(served.tokenizer, r) for r in records], chars_of(records))
            results = await worker.submit(records, lengths, server.settings.timeout)
            server.metrics.prompt_tokens.labels(body.model).inc(sum(lengths))
            return Json({"object": "list", "model": body.model, "data": results, "usage": usage(sum(lengths))})
        answer.__name__ = endpoint
        return answer

    for endpoint, pipeline in TASK_ENDPOINTS.items():
        app.post(f"/v1/{endpoint}", summary=f"{pipeline}: what `plmkit predict` answers")(task_route(endpoint))

    @app.post("/v1/attention", response_class=Response)
    async def attention(body: AttentionRequest) -> Response:
        served, _ = server.model(body.model, "/v1/attention")
        png = await run_in_threadpool(served.attention_png, body.input, body.layers)
        return Response(png, media_type="image/png")

    return app


# -- generation ----------------------------------------------------------------------------------
async def generation(server: Server, served: ServedModel, worker: GenerationBatcher, body: Sampling, request: Request,
                     envelope: Envelope, prompts: list[list[int]], max_tokens: list[int], stops: list[str],
                     echo: list[str] | None = None):
    """Completions and chat completions: one job per prompt (``n`` sequences each, ``max_tokens`` for that
    prompt), answered whole or streamed; ``echo`` (completions): the prompts' texts, which start the choices'
    texts, and with logprobs their logprobs too."""
    if body.n > server.settings.max_n:
        raise bad_request(f"n={body.n} completions asked, this server gives at most {server.settings.max_n} per "
                          "request (--max-n)", param="n", code="n_too_large")
    deadline = asyncio.get_running_loop().time() + server.settings.timeout
    top = body.logprob_count()
    score_prompt = echo is not None and top is not None
    defaults = served.model.generation_defaults()
    jobs = [worker.job(prompt, body.n, body.generate_kwargs(most, defaults), stops, body.seed, top, score_prompt)
            for prompt, most in zip(prompts, max_tokens)]
    worker.queue(jobs)  # (all or none)
    prompt_tokens = sum(len(p) for p in prompts)
    server.metrics.prompt_tokens.labels(body.model).inc(prompt_tokens)
    logprobs = None if top is None else [
        ChoiceLogprobs(served.tokenizer, envelope.chat, (echo[i // body.n], prompts[i // body.n]) if echo else None)
        for i in range(len(jobs) * body.n)]
    if body.stream:
        return EventStream(stream_events(server, body, envelope, jobs, deadline, prompt_tokens, echo, logprobs))
    collect = asyncio.ensure_future(collect_texts(server, body, jobs, deadline))
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait([collect, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        collect.cancel()  # (the client went, or we stop; nothing once done)
        for job in jobs:  # the rows of every prompt not done (a client gone, a timeout, a failure) free now
            job.cancel()
    if collect.cancelled():
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    texts, reasons, entries, completion_tokens = collect.result()
    if echo:
        texts = [echo[i // body.n] + t for i, t in enumerate(texts)]
    return Json(envelope.response(texts, reasons, prompt_tokens, completion_tokens,
                                  logprobs and [lp.of(e) for lp, e in zip(logprobs, entries)]))


def _finished(server: Server, model: str, job: GenerationJob, tokens: int) -> None:
    server.metrics.generation_tokens.labels(model).inc(tokens)
    if job.first_token_at is not None:
        server.metrics.first_token.labels(model).observe(job.first_token_at - job.submitted)


async def collect_texts(server: Server, body: Sampling, jobs: list[GenerationJob],
                        deadline: float) -> tuple[list[str], list[str], list[list], int]:
    """Each choice's text, finish reason and token logprobs, and the tokens generated in all."""
    n, choices = body.n, body.n * len(jobs)
    texts, reasons, entries, total = [""] * choices, [""] * choices, [[] for _ in range(choices)], 0
    for j, job in enumerate(jobs):
        tokens = 0
        async for event in job.events(deadline, server.settings.timeout):
            if isinstance(event, PromptScores):  # (before any token)
                for i in range(j * n, (j + 1) * n):
                    entries[i] = list(event.entries)
                continue
            i = j * n + event.index
            if isinstance(event, Piece):
                texts[i] += event.text
                if event.logprob is not None:
                    entries[i].append(event.logprob)
            elif isinstance(event, Done):
                reasons[i] = event.reason
                tokens += event.tokens
        _finished(server, body.model, job, tokens)
        total += tokens
    return texts, reasons, entries, total


async def stream_events(server: Server, body: Sampling, envelope: Envelope, jobs: list[GenerationJob],
                        deadline: float, prompt_tokens: int, echo: list[str] | None,
                        logprobs: list[ChoiceLogprobs] | None):
    """The chunks of a stream; a chunk carries the logprobs of the tokens since its choice's previous one.
    With echo, a choice's first chunk is its prompt (with logprobs: once the prompt is scored, with its logprobs)."""
    n, with_usage = body.n, body.include_usage
    pending: list[list] = [[] for _ in range(n * len(jobs))]

    def chunk(i: int, text: str | None = None, reason: str | None = None) -> str:
        entries, pending[i] = pending[i], []
        return sse(envelope.chunk(i, text, reason, with_usage=with_usage,
                                  logprobs=logprobs[i].of(entries) if logprobs and entries else None))

    completion_tokens = 0
    try:
        for j, job in enumerate(jobs):
            for index in range(n):
                if envelope.chat:
                    yield sse(envelope.chunk(j * n + index, role=True, with_usage=with_usage))
                elif echo and not logprobs:
                    yield sse(envelope.chunk(j * n + index, echo[j], with_usage=with_usage))
            tokens = 0
            async for event in job.events(deadline, server.settings.timeout):
                if isinstance(event, PromptScores):
                    for i in range(j * n, (j + 1) * n):
                        pending[i] = list(event.entries)
                        yield chunk(i, echo[j])
                    continue
                i = j * n + event.index
                if isinstance(event, Piece):
                    if event.logprob is not None:
                        pending[i].append(event.logprob)
                    if event.text:
                        yield chunk(i, event.text)
                elif isinstance(event, Done):
                    tokens += event.tokens
                    yield chunk(i, reason=event.reason)
            _finished(server, body.model, job, tokens)
            completion_tokens += tokens
        if with_usage:
            yield sse(envelope.usage_chunk(prompt_tokens, completion_tokens))
    except ApiError as err:  # a timeout: said in the stream (the status line is long gone)
        yield sse(err.body())
    except PlmkitError as err:
        yield sse(bad_request(str(err)).body())
    except Exception as err:  # noqa: BLE001 (a failed step: said, and the stream still ends properly)
        log.exception("a stream failed on %s", envelope.model)
        yield sse(internal_error(err).body())
    finally:
        for job in jobs:
            job.cancel()
    yield sse("[DONE]")


# -- errors and the guard ------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_json(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return error_json(validation_error(list(err.errors()), request.headers.get("content-type")))

    @app.exception_handler(PlmkitError)
    async def plmkit_error(request, err: PlmkitError):
        return error_json(bad_request(str(err)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = (f"no route {request.method} {request.url.path}" if err.status_code in (404, 405)
                   else str(err.detail))
        if err.status_code == 400 and not _utf8(await request.body()):  # (FastAPI's "error parsing the body")
            message, code = "the request body is not UTF-8 text; send JSON encoded as UTF-8", "invalid_json"
        response = error_json(ApiError(err.status_code, message, code=code))
        response.headers.update(err.headers or {})  # (a 405's Allow)
        return response

    @app.exception_handler(Exception)
    async def internal(request, err: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_json(internal_error(err))


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def internal_error(err: Exception) -> ApiError:
    return ApiError(500, f"internal server error: {type(err).__name__}: {err}", type="server_error")


class Guard:
    """ASGI middleware: the API key, then each request counted and timed by route."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server
        self.routes: set[str] | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, started, status = scope["path"], time.perf_counter(), [500]

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            key = self.server.settings.api_key
            if key is not None and path not in OPEN_PATHS and not _authorized(scope, key):
                err = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' (plmkit serve "
                                    "--api-key)", type="authentication_error", code="invalid_api_key")
                await error_json(err)(scope, receive, counted_send)
                return
            await self.app(scope, receive, counted_send)
        finally:
            route = path if path in self._routes(scope) else "other"
            self.server.metrics.requests.labels(route, str(status[0])).inc()
            self.server.metrics.latency.labels(route).observe(time.perf_counter() - started)

    def _routes(self, scope) -> set[str]:
        if self.routes is None:
            self.routes = {getattr(r, "path", "") for r in scope["app"].routes}
        return self.routes


def _authorized(scope, key: str) -> bool:
    headers = dict(scope.get("headers") or [])
    given = headers.get(b"authorization", b"").decode("latin-1")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())


__all__ = ["Server", "create_app"]
