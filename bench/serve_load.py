"""plmkit serve under load, on loopback: `plmkit serve` in its own process, asyncio clients here (embeddings:
a minimal keep-alive HTTP/1.1 client, `Connection`; chat and encoder-decoder streams: httpx).

1. Embeddings, all-MiniLM-L6-v2, real sentences, C concurrent clients: requests/s and latency p50/p99 with
   batching on and off (--no-batching), against sentence-transformers' `encode` in one process (the
   ceiling); the three are measured in interleaved rounds, so that a shared CPU's drifting load hits
   them alike. Every answer is checked against sentence-transformers' vector (1e-4); a few bad requests
   mixed in must get their 400 / 404.
2. Chat completions, a GPT-2-small-shaped decoder (12 x 768, random weights, MiniLM's 30,522-piece
   tokenizer, no EOS: every reply is --tokens long): rounds of one stream alone, then S concurrent
   streams; aggregate tokens/s and time to first token p50/p99; each round's first greedy reply in the
   S streams is checked against the same prompt's reply alone.
3. Encoder-decoder completions (the prompt is the source), a Marian-base-shaped model (Opus-MT: 6 + 6 x
   512, random weights, MiniLM's tokenizer, [SEP] its EOS), served as it is or as its ONNX export
   (--seq2seq-backend onnxruntime): the same rounds of one stream and S streams, streamed; aggregate
   tokens/s, time to first token, rows per decoding step (/metrics); every greedy reply is checked
   against the PyTorch model's `generate` alone, in this process.

Bounded: --requests, --rounds and a --time-limit per phase; the client stops by itself.

    python bench/serve_load.py [--part embeddings|chat|seq2seq|all] [--clients 32] [--requests 640] [--streams 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import english_sentences  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
STARTUP_LIMIT = 600  # seconds for a server to load its model (a crowded CPU is slow)


class Served:
    """`plmkit serve` in a subprocess on 127.0.0.1 (a free port, read from its log), stopped with Ctrl-C."""

    def __init__(self, *args: str):
        self.args = args

    def __enter__(self) -> str:
        import httpx  # (before the server starts: a missing client leaves no server behind)
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.proc = subprocess.Popen([sys.executable, "-m", "plmkit", "serve", "--port", "0", "--device", "cpu",
                                      *self.args], stderr=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            return self._wait_ready(httpx)
        except BaseException:
            self.__exit__()
            raise

    def _wait_ready(self, httpx) -> str:
        deadline, url = time.monotonic() + STARTUP_LIMIT, None
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text()
            if url is None and "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            if url is not None:
                try:
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            if self.proc.poll() is not None:
                raise SystemExit(f"plmkit serve {' '.join(self.args)} exited: {text}")
            time.sleep(0.2)
        raise SystemExit(f"plmkit serve did not come up in {STARTUP_LIMIT} s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.50):7.1f} ms  p99 {p(0.99):7.1f} ms"


# -- embeddings -----------------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection to the server, for JSON POSTs: a load generator has to be
    light, as `wrk` is: on a 2-core machine every millisecond the client spends is taken from the server
    (httpx spent ~2 ms of CPU a request here, as much as the server's own HTTP and JSON work)."""

    def __init__(self, url: str):
        self.host, self.port = url.split("//", 1)[1].rsplit(":", 1)
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        payload = await self.reader.readexactly(int(fields["content-length"]))  # (uvicorn: never chunked here)
        return int(head[0].split()[1]), json.loads(payload)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def embedding_load(url: str, texts: list[str], reference: np.ndarray, clients: int, limit: float,
                         bad_every: int = 0) -> dict:
    latencies, wrong, bad_ok, next_index = [], 0, 0, 0
    started = time.perf_counter()

    async def client():
        nonlocal wrong, bad_ok, next_index
        http = Connection(url)
        try:
            while next_index < len(texts) and time.perf_counter() - started < limit:
                i = next_index
                next_index += 1
                if bad_every and i % bad_every == bad_every - 1:  # errors under load: each must get its answer
                    body, want = ({"model": "minilm", "input": ""}, 400) if i % 2 else ({"model": "nope", "input": "x"}, 404)
                    status, answer = await http.post("/v1/embeddings", body)
                    bad_ok += status == want and "error" in answer
                    continue
                t0 = time.perf_counter()
                status, answer = await http.post("/v1/embeddings", {"model": "minilm", "input": texts[i],
                                                                    "encoding_format": "float"})
                latencies.append(time.perf_counter() - t0)
                vector = np.array(answer["data"][0]["embedding"]) if status == 200 else None
                wrong += vector is None or float(np.abs(vector - reference[i]).max()) > 1e-4
        finally:
            http.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"done": len(latencies), "elapsed": elapsed, "latencies": latencies, "wrong": wrong,
            "bad_ok": bad_ok, "bad": (next_index // bad_every) if bad_every else 0}


def embeddings_part(args, minilm: str) -> None:
    """Batching on, off and sentence-transformers, interleaved round by round: a drifting load (a shared
    CPU) hits all three alike."""
    from sentence_transformers import SentenceTransformer
    texts = english_sentences(args.requests)
    st = SentenceTransformer(minilm, device="cpu")
    reference = st.encode(texts, batch_size=32)
    print(f"\nembeddings: all-MiniLM-L6-v2, {len(texts)} real sentences, {args.clients} concurrent clients, "
          f"{args.rounds_embed} interleaved rounds")
    labels = ("batching on", "batching off")
    totals = {label: {"done": 0, "elapsed": 0.0, "latencies": [], "wrong": 0, "bad_ok": 0, "bad": 0}
              for label in labels}
    st_time, batched = 0.0, [0.0, 0.0]  # (sentences, batches) of the batching server's load runs
    with Served("--model", f"minilm={minilm}") as on, Served("--model", f"minilm={minilm}", "--no-batching") as off:
        for url in (on, off):
            asyncio.run(embedding_load(url, texts[:64], reference[:64], args.clients, 30))  # warm up
        size = -(-len(texts) // args.rounds_embed)
        for start in range(0, len(texts), size):
            part, ref = texts[start:start + size], reference[start:start + size]
            before = batch_sizes(on, "minilm", "encode")
            for label, url in zip(labels, (on, off)):
                r = asyncio.run(embedding_load(url, part, ref, args.clients, args.time_limit / args.rounds_embed,
                                               bad_every=50 if label == "batching on" else 0))
                for key in ("done", "elapsed", "wrong", "bad_ok", "bad"):
                    totals[label][key] += r[key]
                totals[label]["latencies"] += r["latencies"]
            after = batch_sizes(on, "minilm", "encode")
            batched = [total + now - then for total, now, then in zip(batched, after, before)]
            t0 = time.perf_counter()
            st.encode(part, batch_size=32)
            st_time += time.perf_counter() - t0
    ceiling = len(texts) / st_time
    for label in labels:
        r = totals[label]
        rps = r["done"] / r["elapsed"]
        r["rps"] = rps
        errors = f", {r['bad_ok']}/{r['bad']} bad requests answered right" if r["bad"] else ""
        print(f"  plmkit serve, {label:<13} {rps:7.1f} requests/s   {percentiles(r['latencies'])}   "
              f"{r['done']} answered, {r['wrong']} wrong{errors}")
    print(f"  batching on: {batched[0] / max(batched[1], 1):.1f} sentences per batch on average (/metrics)")
    print(f"  sentence-transformers encode {ceiling:7.1f} texts/s (one process, batch 32: the ceiling)")
    on_rps, off_rps = totals["batching on"]["rps"], totals["batching off"]["rps"]
    print(f"  batching on / off: {on_rps / off_rps:.2f}x (target >= 3x)   ceiling / batching on: "
          f"{ceiling / on_rps:.2f}x (goal <= 1.2x)")


# -- generation: chat and encoder-decoder completions ---------------------------------------------
async def stream_load(url: str, path: str, bodies: list[dict], streams: int, limit: float) -> dict:
    """``streams`` concurrent clients posting ``bodies`` (streamed, with usage) to ``path`` in turn, until done
    or ``limit`` s: tokens generated, elapsed time, each reply's time to first token and text (by index)."""
    import httpx
    ttfts, texts, generated, next_index = [], {}, 0, 0
    started = time.perf_counter()

    async def one_stream(http):
        nonlocal generated, next_index
        while next_index < len(bodies) and time.perf_counter() - started < limit:
            i = next_index
            next_index += 1
            body = {**bodies[i], "stream": True, "stream_options": {"include_usage": True}}
            t0, first, pieces = time.perf_counter(), None, []
            async with http.stream("POST", f"{url}{path}", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        generated += chunk["usage"]["completion_tokens"]
                    for choice in chunk["choices"]:
                        piece = choice["text"] if "text" in choice else choice["delta"].get("content")
                        if piece:
                            first = first or time.perf_counter()
                            pieces.append(piece)
            ttfts.append((first or time.perf_counter()) - t0)
            texts[i] = "".join(pieces)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=streams)) as http:
        await asyncio.gather(*(one_stream(http) for _ in range(streams)))
    return {"generated": generated, "elapsed": time.perf_counter() - started, "ttft": ttfts, "texts": texts}


def batch_sizes(url: str, model: str, batcher: str = "generate") -> tuple[float, float]:
    """(sum, count) of ``model``'s batch-size histogram (/metrics): a generation batcher's rows per decoding
    step, or an encoder batcher's ("encode") inputs per batch."""
    import httpx
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"plmkit_batch_size_{part}{{") and f'model="{model}"' in line and \
                    f'batcher="{batcher}"' in line:
                values[part] = float(line.rsplit(" ", 1)[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def one_then_many(url: str, path: str, bodies: list[dict], args, model: str, target: str = "") -> dict:
    """Rounds of one stream alone, then S streams, interleaved (a drifting load hits both alike); prints each
    side's tokens/s and time to first token and the rows per decoding step of the S streams; returns the runs
    by stream count and the bodies each round sent."""
    asyncio.run(stream_load(url, path, [{**bodies[0], "max_tokens": 8}], 1, 60))  # warm up
    runs, sent, rows = {1: [], args.streams: []}, {1: [], args.streams: []}, [0.0, 0.0]
    for r in range(args.rounds):
        part = bodies[r * args.streams:(r + 1) * args.streams]
        runs[1].append(asyncio.run(stream_load(url, path, part[:1], 1, args.time_limit)))
        sent[1].append(part[:1])
        before = batch_sizes(url, model)
        runs[args.streams].append(asyncio.run(stream_load(url, path, part, args.streams, args.time_limit)))
        sent[args.streams].append(part)
        rows = [total + now - then for total, now, then in zip(rows, batch_sizes(url, model), before)]
    tps = {}
    for streams, results in runs.items():
        tps[streams] = sum(r["generated"] for r in results) / sum(r["elapsed"] for r in results)
        ttft = [t for r in results for t in r["ttft"]]
        print(f"  {streams} stream{'s' if streams > 1 else ' '} {tps[streams]:7.1f} tokens/s   time to first token "
              f"{percentiles(ttft)}   {len(ttft)} replies")
    print(f"  {args.streams} streams: {rows[0] / max(rows[1], 1):.2f} rows per decoding step on average")
    print(f"  aggregate / one stream: {tps[args.streams] / tps[1]:.2f}x {target}")
    return {"runs": runs, "sent": sent}


def random_model_dir(out: Path, minilm: str, model_class, preset: str, **fields) -> Path:
    """A ``model_class`` of ``preset``'s shape, random weights (seed 0), with MiniLM's WordPiece tokenizer (30,522
    pieces), saved to ``out``; ``fields``: config fields over the preset's."""
    import torch

    from plmkit.tokenization import Tokenizer
    tokenizer = Tokenizer.from_pretrained(minilm)
    config = model_class.config_class.from_preset(preset, vocab_size=len(tokenizer),
                                                  pad_token_id=tokenizer.pad_token_id, **fields)
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def chat_part(args, minilm: str, root: Path) -> None:
    """One stream and S streams, interleaved round by round (a drifting load hits both alike)."""
    from plmkit.models.gpt2 import GPT2LMHeadModel
    gpt = random_model_dir(root / "gpt", minilm, GPT2LMHeadModel, "gpt2", n_positions=1024, bos_token_id=None,
                           eos_token_id=None)  # (no EOS: every reply is --tokens long)
    prompts = english_sentences(args.streams * args.rounds)
    print(f"\nchat completions: GPT-2-small-shaped (12 x 768, random weights), {args.tokens} tokens per reply, greedy, "
          f"{args.rounds} interleaved rounds")
    bodies = [{"model": "gpt", "messages": [{"role": "user", "content": p}], "max_tokens": args.tokens,
               "temperature": 0} for p in prompts]
    with Served("--model", f"gpt={gpt}", "--max-batch", str(args.streams)) as url:
        runs = one_then_many(url, "/v1/chat/completions", bodies, args, "gpt", "(target >= 2.5x)")["runs"]
    same = sum(one["texts"][0] == many["texts"][0] for one, many in zip(runs[1], runs[args.streams]))
    print(f"  {same}/{args.rounds} replies of the concurrent runs equal the one-stream replies (greedy)")


def seq2seq_part(args, minilm: str, root: Path) -> None:
    """One stream and S streams of encoder-decoder completions, every reply checked against `generate` alone."""
    import torch

    from plmkit import MarianMTModel
    from plmkit.tokenization import Tokenizer
    pad, sep = (Tokenizer.from_pretrained(minilm).convert_tokens_to_ids(t) for t in ("[PAD]", "[SEP]"))
    marian = random_model_dir(root / "marian", minilm, MarianMTModel, "marian-base", decoder_start_token_id=pad,
                              eos_token_id=sep, forced_eos_token_id=None)  # ([PAD] starts, Marian's rule; [SEP] ends)
    served = marian
    if args.seq2seq_backend == "onnxruntime":  # its ONNX export (a translation model: a task file first)
        from plmkit.cli import main as plmkit
        from plmkit.tasks.registry import get_task
        get_task("translation").of().save(marian)
        served = root / "marian-onnx"
        assert plmkit(["export", "--model", str(marian), "--out", str(served), "--quiet"]) == 0
    prompts = english_sentences(args.streams * args.rounds)
    print(f"\nencoder-decoder completions: Marian-base-shaped (6 + 6 x 512, random weights) on "
          f"{args.seq2seq_backend}, up to {args.tokens} tokens per reply, greedy, {args.rounds} interleaved rounds")
    bodies = [{"model": "marian", "prompt": p, "max_tokens": args.tokens, "temperature": 0} for p in prompts]
    with Served("--model", f"marian={served}", "--max-batch", str(args.streams)) as url:
        measured = one_then_many(url, "/v1/completions", bodies, args, "marian")
    model, tokenizer = MarianMTModel.from_pretrained(marian).eval(), Tokenizer.from_pretrained(marian)
    checked = wrong = 0
    for streams in measured["runs"]:
        for run, sent in zip(measured["runs"][streams], measured["sent"][streams]):
            for i, text in run["texts"].items():
                ids = torch.tensor([tokenizer(sent[i]["prompt"])["input_ids"]])
                alone = model.generate(ids, max_new_tokens=args.tokens, do_sample=False, num_beams=1)[0, 1:]
                checked += 1
                wrong += text != tokenizer.decode(alone.tolist(), skip_special_tokens=True)
    print(f"  {checked - wrong}/{checked} replies equal `generate` alone (greedy), {wrong} wrong")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("embeddings", "chat", "seq2seq", "all"), default="all")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="chat, seq2seq: rounds of (1 stream, then S streams)")
    ap.add_argument("--rounds-embed", type=int, default=5, help="embeddings: rounds of (on, off, the ceiling)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--seq2seq-backend", choices=("torch", "onnxruntime"), default="torch",
                    help="seq2seq: serve the PyTorch directory or its ONNX export")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per configuration at most")
    args = ap.parse_args(argv)
    from plmkit.demo import minilm_dir
    minilm = str(minilm_dir())
    print(f"plmkit serve on 127.0.0.1, {os.cpu_count()} CPUs")
    if args.part in ("embeddings", "all"):
        embeddings_part(args, minilm)
    for name, part in (("chat", chat_part), ("seq2seq", seq2seq_part)):
        if args.part in (name, "all"):
            with tempfile.TemporaryDirectory() as root:
                part(args, minilm, Path(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
