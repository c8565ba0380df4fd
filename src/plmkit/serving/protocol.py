"""The wire format: OpenAI's request bodies (checked field by field, strictly typed, unknown fields
refused by name), its error body, and the responses and stream chunks of completions, chat completions
and embeddings; plus plmkit's task and attention requests.

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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from plmkit.utils.constants import MAX_SEED


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


def validation_error(errors: list[dict]) -> ApiError:
    """pydantic's / FastAPI's validation errors as one 400: each problem named by its field path."""
    problems, param = [], None
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "")
            return bad_request(f"the request body is not valid JSON ({detail})".replace(" ()", ""), code="invalid_json")
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


class Request(BaseModel):
    """A request body: types are strict (no "1" for 1), unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class Sampling(Request):
    """What completions and chat completions share; mapped to `generate`'s settings by `generate_kwargs`."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0  # accepted at OpenAI's default only (`_unsupported`)
    frequency_penalty: float = 0.0
    logprobs: bool | None = None
    user: str | None = None  # an end-user id: nothing to do with it here

    @model_validator(mode="after")
    def _unsupported(self):
        for name in ("presence_penalty", "frequency_penalty", "logprobs"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by this server (leave it out)")
        return self

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise bad_request("stop: up to 4 non-empty strings", param="stop")
        return stops

    def generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        """`generate`'s keywords: temperature 0 is greedy; top_p 1 is off."""
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": self.temperature > 0}
        if self.temperature > 0:
            kwargs.update(temperature=self.temperature, top_p=self.top_p if self.top_p < 1 else None)
        return kwargs

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts or any(p == "" for p in prompts):
            raise bad_request("prompt: empty; give the text to continue", param="prompt", code="empty_prompt")
        return prompts


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens

    def conversation(self) -> tuple[str | None, list[dict], str]:
        """(system text, earlier turns as {"role", "content"}, the last user message)."""
        system = next((m.text for m in self.messages if m.role == "system"), None)
        turns = [{"role": m.role, "content": m.text} for m in self.messages if m.role != "system"]
        if not turns or turns[-1]["role"] != "user":
            raise bad_request("messages: the last message must be the user's (role 'user')", param="messages")
        if not turns[-1]["content"]:
            raise bad_request("messages: the user's message is empty", param="messages", code="empty_prompt")
        return system, turns[:-1], turns[-1]["content"]


class EmbeddingRequest(Request):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or any(t == "" for t in texts):
            raise bad_request("input: empty; give a text or a list of non-empty texts", param="input",
                              code="empty_prompt")
        return texts


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

    def response(self, texts: list[str], reasons: list[str], prompt_tokens: int, completion_tokens: int) -> dict:
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                       for i, (t, r) in enumerate(zip(texts, reasons))]
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, index: int, text: str | None = None, reason: str | None = None, role: bool = False,
              with_usage: bool = False) -> dict:
        """One stream chunk: a piece of choice ``index``'s text (chat: the role first), or its end."""
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        out = {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [choice]}
        if with_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """stream_options.include_usage: the last chunk, no choices, the usage of the whole request."""
        return {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [],
                "usage": usage(prompt_tokens, completion_tokens)}


def embedding_item(index: int, vector: np.ndarray, encoding: str) -> dict:
    """One embedding: a list of floats, or base64 of little-endian float32 (what the openai client asks for)."""
    data: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii") if encoding == "base64"
                 else vector.astype(np.float32).tolist())
    return {"object": "embedding", "index": index, "embedding": data}


__all__ = ["ApiError", "AttentionRequest", "ChatRequest", "CompletionRequest", "EmbeddingRequest", "Envelope",
           "Request", "Sampling", "TaskRequest", "bad_request", "embedding_item", "new_id", "usage", "validation_error"]
