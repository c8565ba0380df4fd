"""The wire format: OpenAI's request bodies (checked field by field, strictly typed, null for "left out" as
OpenAI's "X or null" fields, unknown fields refused by name, OpenAI's unsupported fields accepted only with a
value that changes nothing), its error body, and the responses and stream chunks of completions, chat completions
(with their logprobs) and embeddings; plus plmkit's task and attention requests.

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the status the
anchors use: 400 for what the request got wrong (never FastAPI's 422 body), 401, 404 for an unknown
model, 429 when the queue is full, 503 while loading, 504 past the per-request timeout.
"""
from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plmkit.chat import leading_bos
from plmkit.generation import IncrementalDecoder
from plmkit.utils.constants import MAX_SEED

GREEDY_BELOW = 1e-5  # a request's temperature below this decodes greedily (vLLM's _SAMPLING_EPS)


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def validation_error(errors: list[dict], content_type: str | None = None) -> ApiError:
    """pydantic's / FastAPI's validation errors as one 400: each problem named by its field path (``content_type``:
    the request's, which FastAPI reads JSON by)."""
    problems, param = [], None
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "")
            return bad_request(f"the request body is not valid JSON ({detail})".replace(" ()", ""), code="invalid_json")
        if not loc and e.get("type") in ("missing", "model_attributes_type", "model_type", "dict_type"):
            return body_problem(e, content_type)  # (the body as a whole)
        if e.get("type") == "extra_forbidden":
            problems.append(f"{'.'.join(loc)}: unknown field (not supported by this server)")
        elif e.get("type") == "missing":
            problems.append(f"{'.'.join(loc)}: required")
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) or got is None else ""
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{'.'.join(loc)}: {message}{shown}" if loc else message)
        param = param or ".".join(loc) or None
    return bad_request("; ".join(problems) or "invalid request", param=param)


def no_op(*values) -> Any:
    """An OpenAI field this server does not support: accepted as null or one of ``values`` (which change nothing
    here), else a 400 naming it."""
    return Field(None, json_schema_extra={"no_op": list(values)})


def body_problem(error: dict, content_type: str | None) -> ApiError:
    """A request body that is not a JSON object: empty, not read as JSON, or another JSON value."""
    if error.get("type") == "missing":
        return bad_request("the request body is empty; send a JSON object", code="invalid_json")
    given = error.get("input")
    if isinstance(given, (bytes, str)):  # (FastAPI reads JSON only under a JSON content type)
        return bad_request("the request body must be JSON sent with 'Content-Type: application/json' (this request's "
                           + (f"Content-Type is {content_type!r})" if content_type else "has no Content-Type)"),
                           code="invalid_json")
    shown = "an array" if isinstance(given, list) else orjson.dumps(given).decode()
    return bad_request(f"the request body must be a JSON object, not {shown}")


class Body(BaseModel):
    """Part of a request body: types are strict (no "1" for 1), unknown fields are errors; an optional field
    given as null is left out (its default: OpenAI's "X or null", vLLM's Optional fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_left_out(cls, data):
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}

    @field_validator("*", mode="after")
    @classmethod
    def _changes_nothing(cls, value, info):
        allowed = (cls.model_fields[info.field_name].json_schema_extra or {}).get("no_op")
        if allowed is None or value in allowed:
            return value
        shown = " or ".join(orjson.dumps(v).decode() for v in [None, *allowed])
        raise ValueError(f"not supported by this server: only {shown}, which change nothing, are accepted")


class Request(Body):
    model: str = Field(min_length=1)


class StreamOptions(Body):
    include_usage: bool = False


class Sampling(Request):
    """What completions and chat completions share; mapped to `generate`'s settings by `generate_kwargs`."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # left out: the model's generation_config, else 1
    top_p: float | None = Field(None, gt=0, le=1)  # left out: the model's generation_config, else 1 (off)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-MAX_SEED, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    min_tokens: int = Field(0, ge=0)  # vLLM's: no end of sequence before this many tokens (stop strings still stop)
    user: str | None = None  # an end-user id: nothing to do with it here
    logit_bias: Any = no_op({})

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:  # (OpenAI's 400 and vLLM's)
            raise bad_request("stream_options is only allowed when stream is true", param="stream_options")
        return self

    def logprob_count(self) -> int | None:
        """How many most likely tokens each generated token's logprobs list (None: no logprobs asked)."""
        raise NotImplementedError

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise bad_request("stop: up to 4 non-empty strings", param="stop")
        return stops

    def generate_kwargs(self, max_new_tokens: int, model_defaults: dict) -> dict[str, Any]:
        """`generate`'s keywords, as vLLM maps a request: a temperature below `GREEDY_BELOW` is greedy (dividing
        the logits by it would overflow them), any other samples; a temperature or top_p left out is the model's
        (generation_config.json: ``model_defaults``, `generation_defaults`), one given wins (top_p 1: off); no
        top-k unless the model's sets one (generate's own default is transformers' 50); one token per sequence a
        step (never the beams a model's generation_config may ask for); no end of sequence forced at
        ``max_new_tokens`` (BART's and Marian's forced_eos_token_id: ``max_tokens`` ends a choice with its own
        last token and "length"); ``min_tokens`` at most ``max_new_tokens``."""
        if self.min_tokens > max_new_tokens:
            raise bad_request(f"min_tokens={self.min_tokens} is more than the {max_new_tokens} tokens this request "
                              "may generate (max_tokens, or the room left in the context)", param="min_tokens")
        sample = self.temperature is None or self.temperature >= GREEDY_BELOW
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "min_new_tokens": self.min_tokens,
                                  "do_sample": sample, "num_beams": 1, "forced_eos_token_id": [],
                                  "presence_penalty": self.presence_penalty,
                                  "frequency_penalty": self.frequency_penalty}
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=model_defaults.get("top_k", 0))
        else:  # the model's sampling defaults do not apply: neutral values, not "left out"
            kwargs.update(temperature=1.0, top_p=1.0, top_k=0)
        return kwargs

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    """OpenAI's legacy completions. ``echo``: the text starts with the prompt, and with ``logprobs`` so do
    the logprobs (the prompt's first token has none); ``max_tokens`` 0 with echo: the prompt alone (scored)."""

    prompt: str | list[str] | list[int] | list[list[int]]  # texts, or token ids (one list or a list of lists)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)  # the k most likely tokens besides the chosen one
    max_tokens: int | None = Field(None, ge=0)
    best_of: int | None = None  # as many as n: what it changes nothing with
    suffix: Any = no_op("")

    @model_validator(mode="after")
    def _nothing_needs_echo(self):
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens: 0 generates nothing; it is for echo: true (the prompt alone, with its "
                             "logprobs when logprobs is given)")
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request(f"best_of={self.best_of}: not supported by this server; only best_of equal to n "
                              f"({self.n}), which changes nothing, is accepted", param="best_of")
        return self

    def logprob_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or the token ids of one (continued as they are)."""
        return texts_or_ids(self.prompt, "prompt", "give the text to continue (or its token ids)")


class TextPart(Body):
    type: Literal["text"]
    text: str


class Message(Body):
    """A chat message; ``developer`` is OpenAI's newer name for ``system``. The fields of an assistant message
    that the openai client's ``message.model_dump()`` writes are accepted where they change nothing."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None
    refusal: Any = no_op()
    annotations: Any = no_op([])
    audio: Any = no_op()
    function_call: Any = no_op()
    tool_calls: Any = no_op([])

    @property
    def system(self) -> bool:
        return self.role in ("system", "developer")

    @property
    def text(self) -> str:  # (text parts a line apart, as vLLM joins them)
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Any = no_op([])
    tool_choice: Any = no_op("none", "auto")  # (no tools: either changes nothing)
    parallel_tool_calls: Any = no_op(True, False)
    functions: Any = no_op([])
    function_call: Any = no_op("none", "auto")
    response_format: Any = no_op({"type": "text"})

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def conversation(self) -> tuple[str | None, list[dict], str]:
        """(system text, earlier turns as {"role", "content"}, the last user message). Consecutive messages of
        one role are one turn, their texts a line apart (OpenAI takes them; the chat template alternates); the
        first turn may be the assistant's (a greeting: the template writes it without a user turn before it)."""
        system = "\n".join(m.text for m in self.messages if m.system) or None
        turns: list[dict] = []
        for m in self.messages:
            if m.system:
                continue
            if turns and turns[-1]["role"] == m.role:
                turns[-1]["content"] += "\n" + m.text
            else:
                turns.append({"role": m.role, "content": m.text})
        if not turns or turns[-1]["role"] != "user":
            raise bad_request("messages: the last message must be the user's (role 'user')", param="messages")
        if not turns[-1]["content"]:
            raise bad_request("messages: the user's message is empty", param="messages", code="empty_prompt")
        return system, turns[:-1], turns[-1]["content"]


class EmbeddingRequest(Request):
    input: str | list[str] | list[int] | list[list[int]]  # texts, or token ids (one list or a list of lists)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """Each input: a text, or the token ids of one (embedded as they are: special tokens included)."""
        return texts_or_ids(self.input, "input", "give a text or a list of non-empty texts (or of token ids)")


def texts_or_ids(value: str | list, param: str, hint: str) -> list[str | list[int]]:
    """OpenAI's text-or-tokens field (a text, texts, a list of ids or lists of ids) as a list of texts and id
    lists, none of them empty (else a 400: ``hint`` says what to give)."""
    one = isinstance(value, str) or (bool(value) and isinstance(value[0], int))
    items = [value] if one else list(value)
    if not items or any(len(x) == 0 for x in items):
        raise bad_request(f"{param}: empty; {hint}", param=param, code="empty_prompt")
    return items


class TaskRequest(Request):
    """/v1/classify, /v1/ner, /v1/qa, /v1/translate, /v1/summarize: the records `plmkit predict` reads
    (a text alone where the task reads one text), one or a list."""

    model_config = ConfigDict(extra="forbid", strict=False)  # records are checked by the task, as predict does
    input: str | dict | list[str | dict]

    def records(self) -> list:
        records = [self.input] if isinstance(self.input, (str, dict)) else list(self.input)
        if not records:
            raise bad_request("input: empty; give a record or a list of records", param="input", code="empty_prompt")
        return records


class AttentionRequest(Request):
    """/v1/attention: the attention maps of an encoder over one text, as a PNG."""

    input: str = Field(min_length=1)
    layers: list[int] | None = None


# -- responses ----------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict:
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Envelope:
    """id / object / created / model of one response and of all the chunks of one stream."""

    def __init__(self, kind: Literal["chat", "completion"], model: str):
        self.chat, self.model = kind == "chat", model
        self.id = new_id("chatcmpl" if self.chat else "cmpl")
        self.created = int(time.time())

    def _head(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    def response(self, texts: list[str], reasons: list[str], prompt_tokens: int, completion_tokens: int,
                 logprobs: list[dict] | None = None) -> dict:
        logprobs = logprobs or [None] * len(texts)
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": lp,
                        "finish_reason": r} for i, (t, r, lp) in enumerate(zip(texts, reasons, logprobs))]
        else:
            choices = [{"index": i, "text": t, "logprobs": lp, "finish_reason": r}
                       for i, (t, r, lp) in enumerate(zip(texts, reasons, logprobs))]
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, index: int, text: str | None = None, reason: str | None = None, role: bool = False,
              with_usage: bool = False, logprobs: dict | None = None) -> dict:
        """One stream chunk: a piece of choice ``index``'s text (chat: the role first), or its end, with
        the logprobs of the tokens since the previous chunk."""
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
        out = {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [choice]}
        if with_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """stream_options.include_usage: the last chunk, no choices, the usage of the whole request."""
        return {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [],
                "usage": usage(prompt_tokens, completion_tokens)}


def token_text(piece: bytes) -> str:
    """A token as OpenAI's logprobs show it: its text, or "bytes:\\xNN..." for part of a character."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


class TextOffsets:
    """Where each token of a stream starts in the text decoded from it (``text_offset``): a token adds the
    characters that `IncrementalDecoder` shows for it, as the served text is built, so a token holding part
    of a character adds none and the one that completes it adds the character; a skipped special token none."""

    def __init__(self, tokenizer, start: int = 0, skip_special_tokens: bool = True):
        self.decoder, self.at = IncrementalDecoder(tokenizer, skip_special_tokens), start

    def push(self, token: int) -> int:
        at = self.at
        self.at += len(self.decoder.push(token))
        return at


def echoed_prompt_offsets(tokenizer, echo: str, prompt: list[int]) -> list[int]:
    """The ``text_offset`` of each token of an echoed prompt in ``echo``, its text (a text prompt as given,
    special-token strings included; token ids decoded with their special tokens): a BOS that `encode_prompt`
    put before a text prompt (Llama's <s>), which ``echo`` does not show, adds nothing."""
    offsets = TextOffsets(tokenizer, skip_special_tokens=False)
    bos = leading_bos(tokenizer)
    added = bool(bos) and prompt[:1] == bos and not echo.startswith(tokenizer.decode(bos))
    return [0] * added + [offsets.push(token) for token in prompt[added:]]


class ChoiceLogprobs:
    """The logprobs of one choice in OpenAI's shape, made batch by batch of entries (all at once, or per stream
    chunk). Completions: the parallel lists ``tokens``, ``token_logprobs``, ``top_logprobs`` ({token: logprob}
    of the k most likely and the chosen one) and ``text_offset`` (where each token starts in the choice's text,
    `TextOffsets`); chat: ``content``, one {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]} per
    token. An entry has ``token`` (its id), ``logprob`` and ``top`` ((id, logprob) pairs, most likely first);
    both None for an echoed prompt's first token (its ``token_logprobs`` and ``top_logprobs`` entries null).
    ``echo``: the echoed prompt's text and token ids, whose entries come first; the generated text follows it."""

    def __init__(self, tokenizer, chat: bool, echo: tuple[str, list[int]] | None = None):
        self.tokenizer, self.chat = tokenizer, chat
        self.prompt_offsets = [] if chat or echo is None else echoed_prompt_offsets(tokenizer, *echo)
        self.offsets = None if chat else TextOffsets(tokenizer, start=0 if echo is None else len(echo[0]))

    def _text_offsets(self, entries: list) -> list[int]:
        scored, self.prompt_offsets = self.prompt_offsets[:len(entries)], self.prompt_offsets[len(entries):]
        return scored + [self.offsets.push(e.token) for e in entries[len(scored):]]

    def of(self, entries: list) -> dict:
        ids = sorted({e.token for e in entries} | {i for e in entries for i, _ in e.top or ()})
        pieces = dict(zip(ids, self.tokenizer.token_bytes(ids)))
        if self.chat:
            def item(token: int, logprob: float) -> dict:
                return {"token": token_text(pieces[token]), "logprob": logprob, "bytes": list(pieces[token])}
            return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(*t) for t in e.top]}
                                for e in entries]}
        return {"tokens": [token_text(pieces[e.token]) for e in entries],
                "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [None if e.top is None else
                                 {token_text(pieces[i]): lp for i, lp in [*e.top, (e.token, e.logprob)]}
                                 for e in entries],
                "text_offset": self._text_offsets(entries)}


def embedding_item(index: int, vector: np.ndarray, encoding: str) -> dict:
    """One embedding: float32 (a list of floats in the response), or base64 of little-endian float32 (what the
    openai client asks for)."""
    data: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii") if encoding == "base64"
                 else vector.astype(np.float32))
    return {"object": "embedding", "index": index, "embedding": data}


__all__ = ["ApiError", "AttentionRequest", "ChatRequest", "ChoiceLogprobs", "CompletionRequest", "EmbeddingRequest",
           "Envelope", "Request", "Sampling", "TaskRequest", "TextOffsets", "bad_request", "echoed_prompt_offsets",
           "embedding_item", "new_id", "token_text", "usage", "validation_error"]
