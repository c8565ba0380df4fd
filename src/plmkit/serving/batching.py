"""Batching across concurrent requests, one worker thread per model and kind of work.

`EncoderBatcher` (dynamic batching, for encoders: embeddings and task models): a request's inputs are
split, in order, into parts of at most ``max_tokens`` padded tokens (an input longer than that alone); the
parts wait in arrival order; the worker takes the first, then, for a while after the batch could have started (the
first's arrival, or the end of the batch that was running then), every following one whose inputs
still fit in ``max_tokens`` padded tokens (longest input x inputs), and runs them in one call. The
while: ``WAIT_SHARE`` of the previous batch's time, at least a fifth of ``max_wait`` and at most
``max_wait``, so that waiting costs a batch little next to its run, and a request that comes alone is
not held for companions that a short run does not make likely (measured, MiniLM, 2 CPU cores: one
client's requests 9.2 ms, p50, against 13.3 waiting ``max_wait``, 5 ms, every time; at 32 clients the
same requests/s). Counting from the end of the running batch matters under load: otherwise the requests
that came during a batch would start the next one at once, and concurrent clients would settle into two
halves taking turns, each batch half the size it could be (32 clients: batches of 16 sentences, against
23-26 counted this way, and ~10% more requests/s). A batch that fails is run again request by request,
so a bad record fails its own request only.

`DecoderBatcher` (continuous batching, for decoder LMs): up to ``slots`` sequences are decoded together
on one `SlotKVCache`. Between two steps, finished and cancelled sequences leave (their row is free at
once) and waiting requests join: a joining prompt runs alone through the model, filling its row of the
cache, then its sequence takes part in every following step, one token per step per sequence. Each
sequence has its own settings (greedy or sampled, its seed, its stop strings), picked by the same
`next_tokens` as `generate`, so greedy output equals `generate`'s, token for token. A request may ask
for logprobs: each token's log-probability under the raw logits, and the k most likely tokens'; and
for its prompt's (OpenAI's ``echo`` with ``logprobs``): the joining forward pass keeps every position's
logits, so the prompt is scored at no extra cost (``max_tokens`` 0: scored only, no row taken).

`Seq2SeqBatcher` (continuous batching, for encoder-decoders): the same, on a `Seq2SeqSlotCache`, whose rows
each read their own source's cross-attention keys and values. Between two steps, the waiting requests that fit
in the free rows join: their sources run through the encoder together (one padded call), their keys and values
are written into the free rows, and each row's decoder start token is its token in the next step, which
feeds every row at its own position (the per-row mask and positions, as a decoder's). When nothing is decoding,
the first request waits up to ``max_wait`` for companions; while rows decode, a request joins at the next
step. The model's lock (shared with its task routes' batcher) is held per step, not per batch. An exported
encoder-decoder (onnxruntime) steps the same way (its decoder graph takes the per-row mask).

A request that comes when ``max_queue`` items (prompts, encoder parts) wait is refused at once: `ApiError`
429; one that comes before joins whole, however many items it has (so retrying one never waits in vain). Each batcher's
metrics carry its model's name and its ``kind`` ("encode" or "generate": an encoder-decoder has both).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from plmkit.chat import StopFilter
from plmkit.data.collate import pad_sequences
from plmkit.errors import ConfigError
from plmkit.generation import IncrementalDecoder, decoding_layout, next_tokens
from plmkit.nn.cache import Seq2SeqSlotCache, SlotKVCache
from plmkit.serving.protocol import ApiError
from plmkit.serving.settings import WAIT_SHARE
from plmkit.utils.constants import MAX_SEED

log = logging.getLogger("plmkit.serving")


def queue_full(name: str, limit: int) -> ApiError:
    return ApiError(429, f"model {name!r} has {limit} or more prompts waiting (--max-queue {limit}); retry later",
                    type="rate_limit_error", code="queue_full")


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the request took longer than this server's --timeout of {seconds:g} s",
                    type="timeout_error", code="timeout")


class TurnLock:
    """A lock taken in turn, first asked first served (a ticket lock): a worker that releases it between two
    steps and asks again at once queues behind a thread already waiting (a task route on the same model),
    which `threading.Lock` does not promise (the releasing thread usually wins again)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.issued = self.serving = 0  # tickets given out; the ticket whose turn it is

    def acquire(self) -> None:
        with self.cond:
            ticket, self.issued = self.issued, self.issued + 1
            self.cond.wait_for(lambda: self.serving == ticket)

    def release(self) -> None:
        with self.cond:
            self.serving += 1
            self.cond.notify_all()

    def __enter__(self) -> "TurnLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Worker:
    """A model's worker thread and its queue of waiting requests, guarded by one condition. ``kind``: the
    work it does ("encode", "generate"), the ``batcher`` label of its metrics."""

    kind = ""

    def __init__(self, name: str, max_queue: int, metrics=None):
        self.name, self.max_queue, self.metrics = name, max_queue, metrics
        self.waiting: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name=f"plmkit-serve-{name}-{self.kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self.thread.ident is not None:  # (started)
            self.thread.join(timeout=30)

    def enqueue(self, items: list) -> None:
        """Queue one request's items, all of them, unless ``max_queue`` items already wait (429)."""
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                self._drop_gone()  # (a request whose client left or timed out holds no place)
            if len(self.waiting) >= self.max_queue:  # (so none was dropped: the gauge holds)
                raise queue_full(self.name, self.max_queue)
            self.waiting.extend(items)
            self._queue_changed()
            self.cond.notify()

    def _drop_gone(self) -> None:  # (holding the condition; the callers set the queue's gauge)
        """The waiting requests that nobody waits for any more, dropped wherever they stand."""
        if any(w.gone for w in self.waiting):
            self.waiting = collections.deque(w for w in self.waiting if not w.gone)

    def _queue_changed(self) -> None:  # (holding the condition)
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name, self.kind).set(len(self.waiting))

    def _observe_batch(self, rows: int) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.labels(self.name, self.kind).observe(rows)

    def _run(self) -> None:
        raise NotImplementedError


# -- encoders -----------------------------------------------------------------------------------
@dataclass
class _Work:
    items: list
    longest: int  # tokens of its longest item
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def gone(self) -> bool:  # (timed out: the client's wait cancelled the future)
        return self.future.cancelled()


class EncoderBatcher(Worker):
    """Dynamic batching (see the module docstring). ``run(items) -> results``, one result per item, in order."""

    kind = "encode"

    def __init__(self, name: str, run: Callable[[list], list], *, max_tokens: int, max_wait: float,
                 max_queue: int, batching: bool = True, metrics=None):
        super().__init__(name, max_queue, metrics)
        self.run, self.max_tokens, self.max_wait, self.batching = run, max_tokens, max_wait, batching
        self.free_since, self.last_run = 0.0, 0.0  # when the last batch ended (time.monotonic), how long it ran

    async def submit(self, items: list, lengths: list[int], timeout: float) -> list:
        """The results of ``items`` (``lengths``: their tokens), in order, once batches have run them."""
        parts = self.split(items, lengths)
        self.enqueue(parts)
        futures = [asyncio.wrap_future(work.future) for work in parts]
        try:
            done = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except asyncio.TimeoutError:
            raise timed_out(timeout) from None
        finally:
            for future in futures:  # (a part failed or the wait ended: the others need not run)
                future.cancel()
        return [result for results in done for result in results]

    def split(self, items: list, lengths: list[int]) -> list[_Work]:
        """``items`` in order, in parts of at most ``max_tokens`` padded tokens (an item over it alone)."""
        parts = [_Work([items[0]], lengths[0])]
        for item, length in zip(items[1:], lengths[1:]):
            last = parts[-1]
            if self._fits(max(last.longest, length), len(last.items) + 1):
                last.items.append(item)
                last.longest = max(last.longest, length)
            else:
                parts.append(_Work([item], length))
        return parts

    def wait(self) -> float:
        """How long the next batch waits for companions (see the module docstring)."""
        return min(self.max_wait, max(self.max_wait / 5, WAIT_SHARE * self.last_run))

    def _fits(self, longest: int, count: int) -> bool:
        """Whether ``count`` inputs padded to ``longest`` tokens are within the budget."""
        return longest * count <= self.max_tokens

    def _take(self) -> list[_Work] | None:
        with self.cond:
            while not self.waiting and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return None
            if self.batching:  # wait for more until the budget is full or the wait is over
                deadline = max(self.waiting[0].arrived, self.free_since) + self.wait()
                while (left := deadline - time.monotonic()) > 0 and not self.stopped:
                    if not self._fits(max(w.longest for w in self.waiting), sum(len(w.items) for w in self.waiting)):
                        break
                    self.cond.wait(left)
            batch = [self.waiting.popleft()]
            longest, count = batch[0].longest, len(batch[0].items)
            while (self.batching and self.waiting
                   and self._fits(max(longest, self.waiting[0].longest), count + len(self.waiting[0].items))):
                work = self.waiting.popleft()
                batch.append(work)
                longest, count = max(longest, work.longest), count + len(work.items)
            self._queue_changed()
        return [w for w in batch if w.future.set_running_or_notify_cancel()]  # timed-out ones are dropped

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._observe_batch(sum(len(w.items) for w in batch))
                started = time.monotonic()
                self._answer(batch)
                self.free_since = time.monotonic()
                self.last_run = self.free_since - started

    def _answer(self, batch: list[_Work]) -> None:
        try:
            results = self.run([item for w in batch for item in w.items])
        except Exception as err:  # noqa: BLE001 (the client gets it; the worker goes on)
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            for work in batch:  # which request was it? each alone
                self._answer([work])
            return
        start = 0
        for work in batch:
            work.future.set_result(results[start:start + len(work.items)])
            start += len(work.items)


# -- decoders -----------------------------------------------------------------------------------
@dataclass
class TokenLogprob:
    """A token's log-probability under the model's raw next-token distribution (before temperature, top-p
    and penalties: vLLM's default), and the ``top`` k most likely (id, logprob); both None for a prompt's
    first token, which nothing predicts."""
    token: int
    logprob: float | None
    top: list[tuple[int, float]] | None


@dataclass
class Piece:
    """New text of choice ``index`` (may be empty: a token that shows nothing yet)."""
    index: int
    text: str
    token: int
    logprob: TokenLogprob | None = None  # when the request asked for logprobs


@dataclass
class PromptScores:
    """The logprobs of a request's prompt tokens (for each of its ``n`` choices), before any `Piece`."""
    entries: list[TokenLogprob]


@dataclass
class Done:
    index: int
    reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)
    tokens: int  # generated


@dataclass
class Failed:
    error: BaseException


class GenerationJob:
    """One request (its ``n`` sequences) under a generation batcher. The worker reports `Piece`, `Done`
    and `Failed` events to the event loop; `cancel` (a client gone, a timeout) frees its rows at the
    next step. ``prompt``: the tokens each sequence continues (an encoder-decoder's: the decoder's
    start), ``source``: an encoder-decoder's input; ``logprobs``: the k most likely tokens to report
    with each generated one (None: no logprobs); ``score_prompt``: report the prompt's logprobs first
    (`PromptScores`); ``generates``: False for a prompt scored only (max_tokens 0)."""

    def __init__(self, prompt: list[int], n: int, settings, stops: list[str], seed: int | None,
                 loop: asyncio.AbstractEventLoop, logprobs: int | None = None, source: list[int] | None = None,
                 score_prompt: bool = False, generates: bool = True):
        self.prompt, self.n, self.settings, self.stops, self.seed = prompt, n, settings, stops, seed
        self.logprobs, self.source, self.score_prompt, self.generates = logprobs, source, score_prompt, generates
        self.loop, self.queue = loop, asyncio.Queue()
        self.cancelled = False
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def gone(self) -> bool:
        return self.cancelled

    def end(self) -> None:
        """Each sequence done without a token (max_tokens 0)."""
        for index in range(self.n):
            self.report(Done(index, "length", 0))

    def report(self, event) -> None:  # (worker thread)
        if self.first_token_at is None and isinstance(event, Piece):
            self.first_token_at = time.monotonic()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def events(self, deadline: float, timeout: float):
        """Every event until all n sequences are done; past ``deadline`` (loop time) the job is cancelled
        and 504 raised."""
        done = 0
        while done < self.n:
            left = deadline - self.loop.time()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                event = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                self.cancel()
                raise timed_out(timeout) from None
            if isinstance(event, Failed):
                raise event.error
            done += isinstance(event, Done)
            yield event


def token_logprobs(logp: torch.Tensor, tokens: list[int], k: int) -> list[TokenLogprob]:
    """Each of ``tokens``' entry in its row of the log-probabilities ``logp`` (n, V), with the ``k`` most
    likely tokens' of that row."""
    values, ids = logp.topk(k, dim=-1)  # (n, k)
    chosen = logp.gather(1, torch.tensor(tokens, dtype=torch.long, device=logp.device)[:, None])[:, 0]  # (n,)
    return [TokenLogprob(t, lp, list(zip(i, v)))
            for t, lp, i, v in zip(tokens, chosen.tolist(), ids.tolist(), values.tolist())]


def prompt_logprobs(logits: torch.Tensor, prompt: list[int], k: int) -> list[TokenLogprob]:
    """The logprobs of a prompt's tokens from the logits (t, V) of its forward pass: token i's under
    position i - 1's distribution; the first token's are None (as vLLM's)."""
    logp = F.log_softmax(logits[:-1].float(), dim=-1)  # (t - 1, V): position i predicts token i + 1
    return [TokenLogprob(prompt[0], None, None), *token_logprobs(logp, prompt[1:], k)]


class _Row:
    """One sequence being decoded: its job, its token buffer and its text so far."""

    def __init__(self, job: GenerationJob, index: int, tokenizer, device: torch.device):
        t = len(job.prompt)
        self.job, self.index, self.s = job, index, job.settings
        self.buffer = torch.empty(1, t + self.s.max_new_tokens, dtype=torch.long, device=device)
        self.buffer[0, :t] = torch.tensor(job.prompt)
        self.length, self.step = t, 0
        self.pending = job.prompt[-1]  # the token the next step feeds (an encoder-decoder's: its decoder start)
        self.generator = (None if job.seed is None else
                          torch.Generator(device=device).manual_seed((job.seed + index) % MAX_SEED))
        self.text = IncrementalDecoder(tokenizer)
        self.stops = StopFilter(job.stops)
        self.eos = set(self.s.eos_token_ids)
        self.finished = False

    @property
    def gone(self) -> bool:
        return self.finished or self.job.cancelled

    def accept(self, logits: torch.Tensor) -> None:
        """Pick the next token from ``logits`` (1, V) and report it (and the end, if it is one)."""
        k = self.job.logprobs
        raw = None if k is None else F.log_softmax(logits.float(), dim=-1)  # (1, V) before next_tokens' processing
        token = int(next_tokens(self.s, logits, self.buffer[:, :self.length], self.step, self.generator))
        self.buffer[0, self.length] = token
        self.length, self.step, self.pending = self.length + 1, self.step + 1, token
        shown = self.stops.push(self.text.push(token))
        reason = ("stop" if token in self.eos or self.stops.done else
                  "length" if self.step == self.s.max_new_tokens else None)
        if reason:
            shown += self.stops.push(self.text.flush()) + self.stops.flush()
        self.job.report(Piece(self.index, shown, token, None if raw is None else token_logprobs(raw, [token], k)[0]))
        if reason:
            self.finished = True
            self.job.report(Done(self.index, reason, self.step))


class GenerationBatcher(Worker):
    """Continuous batching on a slot cache, what the decoder and encoder-decoder batchers share: a request is
    checked and queued as a job; between two steps, waiting jobs join while their sequences fit in the
    ``slots`` rows, and finished and cancelled rows leave; a failed step (or join) fails the requests
    decoding or joining then, not the server. ``lock``: the model's, held for each join and step (not for a
    whole batch: a task route that runs the same model takes its turn between two steps); ``max_wait``:
    when no row is decoding, how long the first waiting request waits for companions (0: none)."""

    kind = "generate"

    def __init__(self, name: str, model, tokenizer, *, slots: int, max_queue: int, max_len: int,
                 max_wait: float = 0.0, lock: TurnLock | None = None, metrics=None):
        super().__init__(name, max_queue, metrics)
        self.model, self.tokenizer, self.slots, self.max_len = model, tokenizer, slots, max_len
        self.max_wait, self.lock = max_wait, lock or TurnLock()
        self.rows: list[_Row] = []  # row i of the cache decodes rows[i]

    def start_of(self, prompt: list[int]) -> list[int]:
        """The tokens each sequence of a request with ``prompt`` continues."""
        return prompt

    def submit(self, prompt: list[int], n: int, generate_kwargs: dict[str, Any], stops: list[str],
               seed: int | None, logprobs: int | None = None, score_prompt: bool = False) -> GenerationJob:
        """Queue a request of one prompt (`job`, then `queue`)."""
        job = self.job(prompt, n, generate_kwargs, stops, seed, logprobs, score_prompt)
        self.queue([job])
        return job

    def queue(self, jobs: list[GenerationJob]) -> None:
        """Queue the jobs of one request together (a job with nothing to compute ends at once)."""
        if queued := [job for job in jobs if job.generates or job.score_prompt]:
            self.enqueue(queued)
        for job in jobs:
            if not (job.generates or job.score_prompt):
                job.end()

    def job(self, prompt: list[int], n: int, generate_kwargs: dict[str, Any], stops: list[str],
            seed: int | None, logprobs: int | None = None, score_prompt: bool = False) -> GenerationJob:
        """The job of ``n`` sequences for ``prompt``, not queued yet; its settings are checked here (ConfigError).
        max_new_tokens 0: nothing generated (the prompt's logprobs alone, with ``score_prompt``)."""
        if n > self.slots:
            raise ApiError(400, f"n={n} sequences, but this server decodes at most {self.slots} together "
                                f"(--max-batch {self.slots})", code="n_too_large", param="n")
        start = self.start_of(prompt)
        generates = generate_kwargs["max_new_tokens"] > 0
        checked = {**generate_kwargs, "max_new_tokens": max(1, generate_kwargs["max_new_tokens"])}
        settings = self.model.generation_settings(len(start), self.tokenizer, **checked)
        return GenerationJob(start, n, settings, stops, seed, asyncio.get_running_loop(), logprobs,
                             source=None if start is prompt else prompt,  # (an encoder-decoder's prompt: its source)
                             score_prompt=score_prompt, generates=generates)

    @property
    def active(self) -> int:
        return len(self.rows)

    def _take(self) -> list[GenerationJob] | None:
        """The jobs that join now (None: stopped): at once while rows are decoding; when none is, once the
        first waiting one has waited ``max_wait`` for companions, or they fill the rows."""
        with self.cond:
            while not self.stopped and not self.waiting and not self.rows:
                self.cond.wait()
            if self.waiting and not self.rows:
                deadline = self.waiting[0].submitted + self.max_wait
                while (not self.stopped and sum(job.n for job in self.waiting) < self.slots
                       and (left := deadline - time.monotonic()) > 0):
                    self.cond.wait(left)
            return None if self.stopped else self._admit()

    def _admit(self) -> list[GenerationJob]:
        """Waiting jobs whose sequences fit in the free rows, first come first served (holding the condition)."""
        self._drop_gone()
        joining, free = [], self.slots - len(self.rows)
        while self.waiting and self.waiting[0].n <= free:
            job = self.waiting.popleft()
            joining.append(job)
            free -= job.n
        self._queue_changed()
        return joining

    def _run(self) -> None:
        with torch.inference_mode(), locked_layout(self.model, self.lock):
            self.cache = self._make_cache()
            while (joining := self._take()) is not None:
                with self.lock:
                    try:
                        self._join(joining)
                        self._leave(lambda row: row.gone)
                        if self.rows:
                            self._step()
                            self._leave(lambda row: row.finished)
                    except Exception as err:  # noqa: BLE001 (a failed step fails its requests, not the server)
                        self._fail(err, joining)
                        self.cache.reset()

    def _make_cache(self):
        """The slot cache of ``slots`` rows that the steps decode on."""
        raise NotImplementedError

    def _join(self, jobs: list[GenerationJob]) -> None:
        """Each sequence of ``jobs`` into a free row of the cache, as a `_Row` of ``rows``."""
        raise NotImplementedError

    def _step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, V) the next-token logits of the active rows, fed ``tokens`` (n, 1) at their own positions."""
        raise NotImplementedError

    def _step(self) -> None:
        """One token for every active sequence, in one forward pass."""
        tokens = torch.tensor([[row.pending] for row in self.rows], device=self.cache.lengths.device)  # (n, 1)
        logits = self._step_logits(tokens)  # (n, V)
        self.cache.advance()
        self._observe_batch(len(self.rows))
        for b, row in enumerate(self.rows):
            if not row.gone:
                self._accept(row, logits[b:b + 1])

    @staticmethod
    def _accept(row: _Row, logits: torch.Tensor) -> None:
        """``row.accept(logits)``; if picking its token fails, its request fails alone (its rows leave at the
        next step), not the others decoding with it."""
        try:
            row.accept(logits)
        except Exception as err:  # noqa: BLE001 (the client gets it)
            log.exception("picking the next token failed")
            row.job.report(Failed(err))
            row.job.cancel()

    def _leave(self, gone: Callable[[_Row], bool]) -> None:
        for i in reversed(range(len(self.rows))):
            if gone(self.rows[i]):
                moved = self.cache.leave(i)
                self.rows[i] = self.rows[moved]
                self.rows.pop()
        self._set_running()

    def _fail(self, err: BaseException, joining: list[GenerationJob] = ()) -> None:
        """A step failed: every request decoding now, or ``joining`` now, fails with it (not the server)."""
        log.exception("decoding step failed")
        for job in {id(job): job for job in [*(r.job for r in self.rows), *joining]}.values():
            job.report(Failed(err))
        self.rows.clear()
        self._set_running()

    def _set_running(self) -> None:
        if self.metrics is not None:
            self.metrics.running.labels(self.name, self.kind).set(len(self.rows))


@contextlib.contextmanager
def locked_layout(model, lock: TurnLock):
    """`decoding_layout` for a worker's lifetime, entered and left under the model's ``lock``: another thread's
    ``generate`` (a task route's) runs inside it between two steps (decoding_layout is re-entrant)."""
    layout = decoding_layout(model)
    with lock:
        layout.__enter__()
    try:
        yield
    finally:
        with lock:
            layout.__exit__(None, None, None)


class DecoderBatcher(GenerationBatcher):
    """Continuous batching of a decoder LM (see the module docstring)."""

    def _make_cache(self) -> SlotKVCache:
        return self.model.make_cache(self.slots, self.max_len, kind=SlotKVCache)

    def _join(self, jobs: list[GenerationJob]) -> None:
        for job in jobs:
            self._join_prompt(job)

    def _join_prompt(self, job: GenerationJob) -> None:
        """Each of the job's sequences: its prompt alone through the model into a free row, then its first
        token; the first pass keeps every position's logits when the prompt is to be scored."""
        prompt = torch.tensor([job.prompt], device=self.cache.lengths.device)  # (1, t)
        for index in range(job.n):
            if job.cancelled:  # (a sequence before failed)
                return
            score = job.score_prompt and index == 0
            out = self.model(prompt, past_key_values=self.cache.row_cache(self.cache.active, prompt.shape[1]),
                             logits_to_keep=0 if score else 1)  # logits (1, t or 1, V)
            if score:
                job.report(PromptScores(prompt_logprobs(out.logits[0], job.prompt, job.logprobs or 0)))
            if not job.generates:  # scored only: the row is not taken
                job.end()
                return
            row = _Row(job, index, self.tokenizer, prompt.device)
            self.cache.join(prompt.shape[1])
            self.rows.append(row)
            self._set_running()
            self._accept(row, out.logits[:, -1])

    def _step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        cache = self.cache
        return self.model(tokens, attention_mask=cache.step_mask(), position_ids=cache.positions(),
                          past_key_values=cache, logits_to_keep=1).logits[:, -1]


class Seq2SeqBatcher(GenerationBatcher):
    """Continuous batching of an encoder-decoder (see the module docstring) on the model's `Seq2SeqSlotCache`
    (``make_slot_cache``), PyTorch's or onnxruntime's. ``lock``: the model's (a task route's batcher runs the
    same model)."""

    def __init__(self, name: str, model, tokenizer, *, slots: int, max_wait: float, max_queue: int,
                 max_len: int, lock: TurnLock, metrics=None):
        super().__init__(name, model, tokenizer, slots=slots, max_queue=max_queue, max_len=max_len,
                         max_wait=max_wait, lock=lock, metrics=metrics)
        start = model.generation_settings(1).decoder_start_token_id
        if start is None:
            raise ConfigError(f"model {name!r}: an encoder-decoder without a decoder_start_token_id (config.json)")
        self.start_ids = [start]

    def start_of(self, prompt: list[int]) -> list[int]:
        return self.start_ids

    def job(self, prompt: list[int], n: int, generate_kwargs: dict[str, Any], stops: list[str],
            seed: int | None, logprobs: int | None = None, score_prompt: bool = False) -> GenerationJob:
        if score_prompt:  # (Hugging Face TGI answers the same: only a decoder's input has logprobs)
            raise ApiError(400, f"model {self.name!r} is an encoder-decoder: its prompt is the source that the "
                                "encoder reads, which no decoder step predicts, so it has no logprobs to echo; ask "
                                "for logprobs without echo (those of the generated target)",
                           code="echo_logprobs_unsupported", param="echo")
        return super().job(prompt, n, generate_kwargs, stops, seed, logprobs, score_prompt)

    def _make_cache(self) -> Seq2SeqSlotCache:
        return self.model.make_slot_cache(self.slots, self.max_len)

    def _sources(self, jobs: list[GenerationJob], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) the jobs' sources padded on the right, and their mask."""
        ids, mask = pad_sequences([job.source for job in jobs], self.tokenizer.pad_token_id or 0)
        return ids.to(device), mask.to(device)

    def _join(self, jobs: list[GenerationJob]) -> None:
        """The joining sources through the encoder together, their cross-attention keys and values into a free
        row for each sequence; each row's decoder start token is its token in the next step."""
        if not jobs:
            return
        device = self.cache.lengths.device
        cross = self.model.cross_keys_values(self.model.encode(*self._sources(jobs, device)))  # (J, H, S, d) each
        for j, job in enumerate(jobs):
            for index in range(job.n):
                self.cache.join_source([(k[j], v[j]) for k, v in cross], len(job.source))
                self.rows.append(_Row(job, index, self.tokenizer, device))
        self._set_running()

    def _step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        cache = self.cache
        return self.model(decoder_input_ids=tokens, decoder_attention_mask=cache.step_mask(),
                          decoder_position_ids=cache.positions(), past_key_values=cache,
                          logits_to_keep=1).logits[:, -1]


__all__ = ["DecoderBatcher", "Done", "EncoderBatcher", "Failed", "GenerationBatcher", "GenerationJob", "Piece",
           "PromptScores", "Seq2SeqBatcher", "TokenLogprob", "TurnLock"]
