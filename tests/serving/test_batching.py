"""Batching across requests: continuous batching of a decoder and of an encoder-decoder (BART, Marian,
BERT-to-BERT) equal `generate` token for token while sequences join and leave, each with its own settings
(penalties included); dynamic batching of an encoder groups requests and isolates a bad one."""
import asyncio
import collections
import threading

import pytest
import torch

import serve_helpers as sh
from plmkit.errors import DataError
from plmkit.nn.cache import SlotKVCache
from plmkit.serving.batching import DecoderBatcher, Done, EncoderBatcher, Piece, Seq2SeqBatcher, TurnLock
from plmkit.serving.metrics import Metrics
from plmkit.serving.models import load_served_model
from plmkit.serving.protocol import ApiError

PROMPTS = ["The old sailor walked", "Rain", "In the spring the farmers sowed wheat and barley.", "A small dog",
           "The library opened at nine and closed", "bread", "The river rose and the bridge", "One"]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return load_served_model("gpt", sh.decoder_dir(tmp_path_factory.mktemp("gpt")), "cpu")


def batch_mean(metrics: Metrics, name: str) -> float:
    get = metrics.registry.get_sample_value
    labels = {"model": name, "batcher": "generate"}
    return get("plmkit_batch_size_sum", labels) / get("plmkit_batch_size_count", labels)


def while_running(batcher, main):
    """``asyncio.run(main())`` while ``batcher``'s worker runs; the worker stopped after, whatever happens."""
    batcher.start()
    try:
        return asyncio.run(main())
    finally:
        batcher.stop()


def test_slot_cache_rows_join_and_leave():
    cache = SlotKVCache(n_layers=1, slots=3, n_kv_heads=1, max_len=8, d_head=2)
    for row, length in enumerate((2, 4, 3)):
        view = cache.row_cache(row, length)
        view[0].update(torch.full((1, 1, length, 2), float(row + 1)), torch.zeros(1, 1, length, 2))
        assert cache.join(length) == row
    assert cache.length == 4 and cache.step_mask().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    k, _ = cache[0].update(torch.full((3, 1, 1, 2), 9.0), torch.zeros(3, 1, 1, 2))
    assert k.shape == (3, 1, 5, 2) and k[0, 0, 2, 0] == 9 and k[1, 0, 4, 0] == 9 and k[2, 0, 3, 0] == 9  # own columns
    cache.advance()
    assert cache.leave(0) == 2  # the last row moved into the freed one
    assert cache.active == 2 and cache.lengths[:2].tolist() == [4, 5] and cache.layers[0].k[0, 0, 3, 0] == 9


def test_continuous_batching_equals_generate_token_for_token(gpt):
    """8 requests on 3 rows, arriving at different times with different lengths: greedy rows (two with their own
    penalties) equal `generate` alone, a sampled row equals `generate(seed=...)`, and steps really ran several rows."""
    model, tok = gpt.model, gpt.tokenizer
    lengths = [30, 5, 24, 40, 12, 33, 1, 20]
    ids = [tok.encode(p) for p in PROMPTS]
    settings = [dict(max_new_tokens=m, do_sample=False) for m in lengths]
    settings[3] = dict(max_new_tokens=40, do_sample=True, temperature=0.9, top_p=0.8)
    settings[0].update(presence_penalty=1.5, frequency_penalty=0.5)
    settings[5].update(presence_penalty=-0.5, frequency_penalty=1.0)
    expected = [model.generate(torch.tensor([p]), seed=7 if i == 3 else None, **s)[0, len(p):].tolist()
                for i, (p, s) in enumerate(zip(ids, settings))]
    unpenalised = model.generate(torch.tensor([ids[0]]), max_new_tokens=30, do_sample=False)[0, len(ids[0]):]
    assert expected[0] != unpenalised.tolist()  # (the penalties matter)
    metrics = Metrics()
    batcher = DecoderBatcher("gpt", model, tok, slots=3, max_queue=16, max_len=gpt.context_length, metrics=metrics)
    got = run_jobs(batcher, ids, settings, seeds={3: 7}, stagger=0.02)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"request {i}: {g} != {e}"
    assert batch_mean(metrics, "gpt") > 1.5, "the steps did not batch"
    assert batcher.active == 0


def run_jobs(batcher, prompts, settings, seeds: dict, stagger: float) -> list[list[int]]:
    """The tokens of each request (``prompts`` and ``settings``: one per request) submitted to ``batcher``,
    some ``stagger`` s after others; ``seeds``: request -> its seed."""

    async def one(i):
        await asyncio.sleep(stagger * (i % 3))
        job = batcher.submit(prompts[i], 1, settings[i], [], seeds.get(i))
        tokens, done = [], None
        async for event in job.events(asyncio.get_running_loop().time() + 60, 60):
            if isinstance(event, Piece):
                tokens.append(event.token)
            elif isinstance(event, Done):
                done = event
        assert done.tokens == len(tokens)
        return tokens

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(len(prompts))))

    return while_running(batcher, all_of_them)


def test_encoder_decoder_batches_equal_generate_token_for_token(tmp_path):
    """A tiny Marian: 6 requests that arrive within the wait, on 4 rows (the last ones join as rows free up),
    with their own lengths, penalties and a seeded sampled one, equal `generate` alone; finished rows leave
    between steps."""
    marian = load_served_model("marian", sh.seq2seq_dir(tmp_path, "marian"), "cpu")
    model, tok = marian.model, marian.tokenizer
    sources = [tok(p)["input_ids"] for p in PROMPTS[:6]]
    settings = [dict(max_new_tokens=m, do_sample=False, num_beams=1) for m in (12, 3, 8, 16, 5, 10)]
    settings[1].update(do_sample=True, temperature=0.8, top_p=0.9)
    settings[2].update(presence_penalty=2.0, frequency_penalty=0.5)
    expected = [model.generate(torch.tensor([p]), seed=3 if i == 1 else None, **s)[0, 1:].tolist()
                for i, (p, s) in enumerate(zip(sources, settings))]
    assert expected[2] != model.generate(torch.tensor([sources[2]]), max_new_tokens=8, num_beams=1)[0, 1:].tolist()
    metrics = Metrics()
    batcher = Seq2SeqBatcher("marian", model, tok, slots=4, max_wait=0.5, max_queue=16, max_len=marian.context_length,
                             lock=TurnLock(),
                             metrics=metrics)
    got = run_jobs(batcher, sources, settings, seeds={1: 3}, stagger=0.01)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"request {i}: {g} != {e}"
    get, labels = metrics.registry.get_sample_value, {"model": "marian", "batcher": "generate"}
    assert get("plmkit_batch_size_count", labels) < sum(len(e) for e in expected) / 2  # rows shared steps
    assert get("plmkit_batch_size_bucket", {**labels, "le": "1.0"}) >= 1  # the longest ran on alone


def paced(batcher):
    """Make ``batcher`` log the requests of each step's rows and, after a step ``at`` names, wait until the test
    has acted (``await at(step, action)``): requests then join at a known step of a running batch."""
    log, reached, go, step = [], collections.defaultdict(threading.Event), collections.defaultdict(threading.Event), \
        batcher._step

    def paced_step():
        step()
        log.append([row.job for row in batcher.rows])
        reached[len(log)].set()
        if len(log) in go:
            go[len(log)].wait(60)

    async def at(n: int, action) -> None:
        go[n]  # (the worker waits after step n, from now on)
        assert await asyncio.to_thread(reached[n].wait, 60), f"the batch never ran step {n}"
        action()
        go[n].set()

    batcher._step = paced_step
    return log, at


async def tokens_of(job) -> tuple[list[list[int]], list[str]]:
    """Each of a job's sequences' tokens and how it ended."""
    tokens, reasons = [[] for _ in range(job.n)], [None] * job.n
    async for event in job.events(asyncio.get_running_loop().time() + 60, 60):
        if isinstance(event, Piece):
            tokens[event.index].append(event.token)
        elif isinstance(event, Done):
            reasons[event.index] = event.reason
            assert event.tokens == len(tokens[event.index])
    return tokens, reasons


def first_step(log, job) -> int:
    return next(i for i, jobs in enumerate(log) if job in jobs)


def last_step(log, job) -> int:
    return max(i for i, jobs in enumerate(log) if job in jobs)


def served_seq2seq(tmp_path, family: str):
    """A random tiny encoder-decoder of ``family`` served; "marian-onnx": its ONNX export (a translation model),
    on onnxruntime."""
    directory = sh.seq2seq_dir(tmp_path, family.removesuffix("-onnx"))
    if family.endswith("-onnx"):
        from plmkit.cli import main
        from plmkit.tasks.registry import get_task
        get_task("translation").of().save(directory)
        exported, directory = directory, tmp_path / "onnx"
        assert main(["export", "--model", str(exported), "--out", str(directory), "--quiet"]) == 0
    served = load_served_model(family, directory, "cpu")
    assert served.backend == ("onnxruntime" if family.endswith("-onnx") else "torch")
    return served


@pytest.mark.parametrize("family", ["marian", "bart", "bert2bert", "marian-onnx"])
def test_encoder_decoder_requests_join_a_running_batch_token_for_token(tmp_path, family):
    """A runs; after step 2, B (2 sampled sequences), C and D join it; after step 4, C is cancelled (D's row moves
    into its slot); D finishes and leaves; after step 6, E joins with a source longer than the cross-attention
    cache holds (it widens while A and B decode). Every one equals `generate` alone, token for token (the
    sampled ones with their seeds), C's tokens until it left too. The same on onnxruntime (an export)."""
    served = served_seq2seq(tmp_path, family)
    model, tok = served.model, served.tokenizer
    greedy = dict(do_sample=False, num_beams=1)
    requests = {  # name: (source, n, settings, seed)
        "A": (PROMPTS[0], 1, dict(max_new_tokens=30, min_new_tokens=30, frequency_penalty=1.0, **greedy), None),
        "B": (PROMPTS[1], 2, dict(max_new_tokens=16, do_sample=True, temperature=0.9, top_p=0.9, num_beams=1), 5),
        "C": (PROMPTS[2], 1, dict(max_new_tokens=20, min_new_tokens=20, **greedy), None),
        "D": (PROMPTS[3], 1, dict(max_new_tokens=4, min_new_tokens=4, presence_penalty=1.5, **greedy), None),
        "E": (" ".join(PROMPTS * 3), 1, dict(max_new_tokens=10, frequency_penalty=0.5, **greedy), None)}
    sources = {name: tok(text)["input_ids"][:100] for name, (text, *_) in requests.items()}
    assert len(sources["E"]) > 64 >= max(len(sources[name]) for name in "ABCD")
    expected = {name: [model.generate(torch.tensor([sources[name]]), seed=None if seed is None else seed + i,
                                      **settings)[0, 1:].tolist() for i in range(n)]
                for name, (_, n, settings, seed) in requests.items()}
    batcher = Seq2SeqBatcher(family, model, tok, slots=5, max_wait=0.0, max_queue=8, max_len=served.context_length,
                             lock=TurnLock())
    log, at = paced(batcher)
    jobs, widths = {}, []

    def submit(*names):
        for name in names:
            _, n, settings, seed = requests[name]
            jobs[name] = batcher.submit(sources[name], n, settings, [], seed)

    async def main():
        submit("A")
        await at(2, lambda: submit("B", "C", "D"))
        await at(4, jobs["C"].cancel)
        await at(6, lambda: submit("E"))
        await at(9, lambda: widths.append(batcher.cache.cross_k[0].shape[2]))  # E decoding with A and B
        return {name: await tokens_of(jobs[name]) for name in "ABDE"}

    got = while_running(batcher, main)
    for name, (tokens, reasons) in got.items():
        assert tokens == expected[name], name
        assert None not in reasons
    cancelled = []
    while not jobs["C"].queue.empty():
        cancelled.append(jobs["C"].queue.get_nowait())
    assert all(isinstance(e, Piece) for e in cancelled) and 0 < len(cancelled) < 20  # no Done: it left
    assert [e.token for e in cancelled] == expected["C"][0][:len(cancelled)]
    a, b, d, e = (jobs[name] for name in "ABDE")
    assert first_step(log, a) < first_step(log, b) and a in log[first_step(log, b)]  # B joined A's running batch
    assert a in log[first_step(log, e)] and b in log[first_step(log, e)]  # and E, A's and B's
    assert last_step(log, d) < last_step(log, a) and last_step(log, jobs["C"]) < last_step(log, d)  # left early
    assert widths == [128] and batcher.cache.cross_k == [] and batcher.active == 0  # widened for E, dropped when empty


def test_a_failed_encoder_decoder_step_fails_its_requests_only_and_a_task_route_takes_turns(tmp_path):
    """One row: A decodes while B waits for the row. After step 2, another thread runs `generate` on the same
    model under its lock (a task route): it gets its turn between two steps, long before A ends. After step 4 a
    step fails: A gets the error, B (waiting) does not; B then runs, and so does C, submitted after."""
    served = load_served_model("marian", sh.seq2seq_dir(tmp_path, "marian"), "cpu")
    model, tok, lock = served.model, served.tokenizer, served.lock
    sources = [tok(p)["input_ids"] for p in PROMPTS[:4]]
    greedy = dict(do_sample=False, num_beams=1, frequency_penalty=1.0)
    long = dict(max_new_tokens=60, min_new_tokens=60, **greedy)
    expected = [model.generate(torch.tensor([s]), **greedy, max_new_tokens=8)[0, 1:].tolist() for s in sources]
    batcher = Seq2SeqBatcher("marian", model, tok, slots=1, max_wait=0.0, max_queue=8, max_len=served.context_length,
                             lock=lock)
    log, at = paced(batcher)
    task = {}

    def task_route():
        with lock:
            task["layout"] = any("forward" in vars(m) for m in model.modules())  # (the worker's decoding layout)
            task["tokens"] = model.generate(torch.tensor([sources[3]]), **greedy, max_new_tokens=8)[0, 1:].tolist()
            task["at step"] = len(log)

    def break_next_step():
        step_logits = batcher._step_logits

        def failing(tokens):
            batcher._step_logits = step_logits
            raise RuntimeError("a broken step")
        batcher._step_logits = failing

    async def main():
        a = batcher.submit(sources[0], 1, long, [], None)
        thread = threading.Thread(target=task_route)
        await at(2, lambda: (a, thread.start()))
        b = batcher.submit(sources[1], 1, dict(max_new_tokens=8, **greedy), [], None)
        await at(4, break_next_step)
        with pytest.raises(RuntimeError, match="a broken step"):
            await tokens_of(a)
        b_tokens = await tokens_of(b)
        c_tokens = await tokens_of(batcher.submit(sources[2], 1, dict(max_new_tokens=8, **greedy), [], None))
        await asyncio.to_thread(thread.join, 60)
        return b_tokens, c_tokens

    (b_tokens, _), (c_tokens, _) = while_running(batcher, main)
    assert b_tokens == [expected[1]] and c_tokens == [expected[2]]
    assert task["tokens"] == expected[3] and task["layout"] and task["at step"] < 4  # its turn came between steps
    assert not getattr(model, "_decoding_layouts", 0)  # the worker's layout undone


def test_dynamic_batching_groups_requests_and_isolates_a_bad_one():
    calls = []

    def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise DataError("input:1: bad record")
        return [x.upper() for x in items]

    batcher = EncoderBatcher("enc", run, max_tokens=100, max_wait=0.2, max_queue=8)

    async def main():
        ok = [batcher.submit([f"r{i}a", f"r{i}b"], [3, 4], 10) for i in range(4)]
        bad = batcher.submit(["bad"], [1], 10)
        return await asyncio.gather(*ok, bad, return_exceptions=True)

    results = while_running(batcher, main)
    assert results[:4] == [[f"R{i}A", f"R{i}B"] for i in range(4)]
    assert isinstance(results[4], DataError)
    assert len(calls[0]) == 9  # all five requests in one batch (4 x 2 + 1 inputs, 9 x 4 tokens <= 100) ...
    assert sorted(map(len, calls[1:])) == [1, 2, 2, 2, 2]  # ... which failed, so each ran alone


def test_a_full_queue_is_refused_and_a_budget_splits_batches():
    import threading
    gate = threading.Event()
    batches = []

    def run(items):
        gate.wait(10)
        batches.append(len(items))
        return items

    batcher = EncoderBatcher("enc", run, max_tokens=8, max_wait=0.05, max_queue=3)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["a"], [4], 10))
        await asyncio.sleep(0.2)  # taken: the worker waits in run()
        queued = [asyncio.ensure_future(batcher.submit([c], [4], 10)) for c in "bcd"]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as refused:
            await batcher.submit(["e"], [4], 10)
        gate.set()
        return refused.value, await asyncio.gather(first, *queued)

    refused, results = while_running(batcher, main)
    assert refused.status == 429 and "--max-queue 3" in refused.message
    assert results == [["a"], ["b"], ["c"], ["d"]] and batches == [1, 2, 1]  # 8 tokens: two 4-token inputs a batch


def test_one_requests_inputs_are_split_within_the_budget_and_join_an_idle_queue_whole():
    """max_tokens 8, max_queue 2: a request of 7 inputs (one of 12 tokens, over the budget: alone) runs in parts of
    at most 8 padded tokens, its results in order, though its parts outnumber max_queue on an empty queue."""
    batches = []

    def run(items):
        batches.append(list(items))
        return [item.upper() for item in items]

    batcher = EncoderBatcher("enc", run, max_tokens=8, max_wait=0.0, max_queue=2, batching=False)
    items, lengths = list("abcdefg"), [2, 2, 2, 2, 12, 3, 1]
    assert [w.items for w in batcher.split(items, lengths)] == [["a", "b", "c", "d"], ["e"], ["f", "g"]]
    assert while_running(batcher, lambda: batcher.submit(items, lengths, 10)) == list("ABCDEFG")
    assert batches == [["a", "b", "c", "d"], ["e"], ["f", "g"]]


def test_requests_that_came_during_a_batch_wait_for_companions_once_it_ends():
    """The wait counts from the end of the running batch: b, which came while a ran (longer than max_wait), still
    waits for c, which comes just after a's batch; counted from b's arrival, b would have run alone."""
    import threading
    gate, batches = threading.Event(), []

    def run(items):
        if items == ["a"]:
            gate.wait(10)
        batches.append(list(items))
        return items

    batcher = EncoderBatcher("enc", run, max_tokens=100, max_wait=0.5, max_queue=8)

    async def main():
        a = asyncio.ensure_future(batcher.submit(["a"], [1], 10))
        await asyncio.sleep(0.6)  # a runs alone (its wait is over), held in run()
        b = asyncio.ensure_future(batcher.submit(["b"], [1], 10))
        # longer than max_wait after b came; a's batch takes ~3.4 s, so b then waits max_wait (15% of 3.4 s is
        # more): 0.45 s longer than c takes to come
        await asyncio.sleep(2.9)
        gate.set()
        await asyncio.sleep(0.05)
        c = asyncio.ensure_future(batcher.submit(["c"], [1], 10))
        return await asyncio.gather(a, b, c)

    results = while_running(batcher, main)
    assert results == [["a"], ["b"], ["c"]] and batches == [["a"], ["b", "c"]]


def test_a_batch_waits_a_share_of_the_previous_batch_between_a_fifth_of_max_wait_and_max_wait():
    batcher = EncoderBatcher("enc", lambda items: items, max_tokens=100, max_wait=2.0, max_queue=8)
    waits = {}
    for batch_time in (0.0, 1.0, 4.0, 100.0):
        batcher.last_run = batch_time
        waits[batch_time] = batcher.wait()
    assert waits == pytest.approx({0.0: 0.4, 1.0: 0.4, 4.0: 0.6, 100.0: 2.0})  # 15%, within 2 s / 5 and 2 s


def test_a_request_alone_waits_a_fifth_of_max_wait_not_all_of_it():
    import time
    batcher = EncoderBatcher("enc", lambda items: items, max_tokens=100, max_wait=2.0, max_queue=8)

    async def timed(item):
        start = time.monotonic()
        await batcher.submit([item], [1], 30)
        return time.monotonic() - start

    async def main():
        return [await timed(item) for item in "ab"]

    took = while_running(batcher, main)
    assert all(0.35 < t < 1.5 for t in took), took  # 0.4 s each: the batches before ran in no time


def test_a_row_whose_token_cannot_be_picked_fails_its_request_alone(gpt):
    """A request whose sampling breaks (a temperature so small that the scores overflow: multinomial refuses
    them) fails with that error; the greedy requests decoding in the same steps go on to their end, equal to
    `generate` alone, and its rows are freed."""
    model, tok = gpt.model, gpt.tokenizer
    ids = [tok.encode(p) for p in PROMPTS[:3]]
    greedy = dict(max_new_tokens=12, do_sample=False)
    expected = [model.generate(torch.tensor([p]), **greedy)[0, len(p):].tolist() for p in (ids[0], ids[2])]
    batcher = DecoderBatcher("gpt", model, tok, slots=4, max_queue=8, max_len=gpt.context_length)

    async def tokens(job):
        return [e.token async for e in job.events(asyncio.get_running_loop().time() + 60, 60) if isinstance(e, Piece)]

    async def main():
        jobs = [batcher.submit(ids[0], 1, greedy, [], None),
                batcher.submit(ids[1], 2, dict(max_new_tokens=12, do_sample=True, temperature=1e-45), [], 1),
                batcher.submit(ids[2], 1, greedy, [], None)]
        return await asyncio.gather(*(tokens(job) for job in jobs), return_exceptions=True)

    first, broken, third = while_running(batcher, main)
    assert isinstance(broken, RuntimeError) and "probability tensor" in str(broken)
    assert [first, third] == expected and batcher.active == 0


def test_a_request_gone_from_anywhere_in_the_queue_frees_its_place(gpt):
    """With --max-queue 2 full, a waiting request whose client left (or timed out) behind one still waiting holds
    no place: the next request is queued, not refused 429 (decoder and encoder batchers; the workers not started,
    so nothing leaves the queue by running)."""
    metrics = Metrics()
    decoder = DecoderBatcher("gpt", gpt.model, gpt.tokenizer, slots=1, max_queue=2, max_len=gpt.context_length,
                             metrics=metrics)
    encoder = EncoderBatcher("enc", lambda items: items, max_tokens=100, max_wait=0.0, max_queue=2)
    settings = dict(max_new_tokens=4, do_sample=False)

    async def main():
        live, left = (decoder.submit([5, 6], 1, settings, [], None) for _ in range(2))
        left.cancel()
        decoder.submit([7, 8], 1, settings, [], None)  # not 429
        with pytest.raises(ApiError) as full:
            decoder.submit([9], 1, settings, [], None)
        waiting = asyncio.ensure_future(encoder.submit(["a"], [1], 30))
        with pytest.raises(ApiError) as timed_out:
            await encoder.submit(["b"], [1], 0.05)
        queued = asyncio.ensure_future(encoder.submit(["c"], [1], 30))  # not 429
        await asyncio.sleep(0.01)
        assert not queued.done()
        waiting.cancel(), queued.cancel()
        return full.value, timed_out.value

    full, timed_out = asyncio.run(main())
    assert full.status == 429 and timed_out.status == 504
    depth = metrics.registry.get_sample_value("plmkit_queue_depth", {"model": "gpt", "batcher": "generate"})
    assert depth == 2 and len(encoder.waiting) == 2
