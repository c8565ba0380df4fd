"""plmkit serve under load, on loopback: `plmkit serve` in its own process, an asyncio client (httpx) here.

1. Embeddings, all-MiniLM-L6-v2, real sentences, C concurrent clients: requests/s and latency p50/p99 with
   batching on and off (--no-batching), against sentence-transformers' `encode` in one process (the
   ceiling). Every answer is checked against sentence-transformers' vector (1e-4); a few bad requests
   mixed in must get their 400 / 404.
2. Chat completions, a GPT-2-small-shaped decoder (12 x 768, random weights, MiniLM's 30,522-piece
   tokenizer, no EOS: every reply is --tokens long): one stream alone, then S concurrent streams;
   aggregate tokens/s and time to first token p50/p99; the greedy replies of the S streams are checked
   against the one-stream reply of the same prompt.

Bounded: --requests, --rounds and a --time-limit per phase; the client stops by itself.

    python bench/serve_load.py [--part embeddings|chat|all] [--clients 32] [--requests 640] [--streams 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import english_sentences  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Served:
    """`plmkit serve` in a subprocess on 127.0.0.1 (a free port, read from its log), stopped with Ctrl-C."""

    def __init__(self, *args: str):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.proc = subprocess.Popen([sys.executable, "-m", "plmkit", "serve", "--port", "0", "--device", "cpu", *args],
                                     stderr=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.args = args

    def __enter__(self) -> str:
        import httpx
        deadline, url = time.monotonic() + 120, None
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
        raise SystemExit("plmkit serve did not come up in 120 s")

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
async def embedding_load(url: str, texts: list[str], reference: np.ndarray, clients: int, limit: float,
                         bad_every: int = 0) -> dict:
    import httpx
    latencies, wrong, bad_ok, next_index = [], 0, 0, 0
    started = time.perf_counter()

    async def client(http):
        nonlocal wrong, bad_ok, next_index
        while next_index < len(texts) and time.perf_counter() - started < limit:
            i = next_index
            next_index += 1
            if bad_every and i % bad_every == bad_every - 1:  # errors under load: each must get its answer
                body, want = ({"model": "minilm", "input": ""}, 400) if i % 2 else ({"model": "nope", "input": "x"}, 404)
                r = await http.post(f"{url}/v1/embeddings", json=body)
                bad_ok += r.status_code == want and "error" in r.json()
                continue
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": texts[i],
                                                              "encoding_format": "float"})
            latencies.append(time.perf_counter() - t0)
            vector = np.array(r.json()["data"][0]["embedding"]) if r.status_code == 200 else None
            wrong += vector is None or float(np.abs(vector - reference[i]).max()) > 1e-4

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"done": len(latencies), "rps": len(latencies) / elapsed, "latencies": latencies, "wrong": wrong,
            "bad_ok": bad_ok, "bad": (next_index // bad_every) if bad_every else 0}


def embeddings_part(args, minilm: str) -> None:
    from sentence_transformers import SentenceTransformer
    texts = english_sentences(args.requests)
    st = SentenceTransformer(minilm, device="cpu")
    st.encode(texts[:64], batch_size=32)  # warm up

    def encode():  # -> (vectors, texts/s)
        t0 = time.perf_counter()
        vectors = st.encode(texts, batch_size=32)
        return vectors, len(texts) / (time.perf_counter() - t0)

    reference, before = encode()
    print(f"\nembeddings: all-MiniLM-L6-v2, {len(texts)} real sentences, {args.clients} concurrent clients")
    results = {}
    for label, flags in (("batching on", []), ("batching off", ["--no-batching"])):
        with Served("--model", f"minilm={minilm}", *flags) as url:
            asyncio.run(embedding_load(url, texts[:64], reference[:64], args.clients, 30))  # warm up
            r = asyncio.run(embedding_load(url, texts, reference, args.clients, args.time_limit,
                                           bad_every=50 if label == "batching on" else 0))
        results[label] = r
        if label == "batching on":  # the ceiling measured on both sides of it: a shared CPU's load drifts
            ceiling = (before + encode()[1]) / 2
        errors = f", {r['bad_ok']}/{r['bad']} bad requests answered right" if r["bad"] else ""
        print(f"  plmkit serve, {label:<13} {r['rps']:7.1f} requests/s   {percentiles(r['latencies'])}   "
              f"{r['done']} answered, {r['wrong']} wrong{errors}")
    print(f"  sentence-transformers encode {ceiling:7.1f} texts/s (one process, batch 32: the ceiling; measured "
          "before and after batching on)")
    on, off = results["batching on"]["rps"], results["batching off"]["rps"]
    print(f"  batching on / off: {on / off:.2f}x (target >= 3x)   ceiling / batching on: {ceiling / on:.2f}x "
          "(goal <= 1.2x)")


# -- chat -------------------------------------------------------------------------------------------
async def chat_load(url: str, prompts: list[str], streams: int, tokens: int, limit: float) -> dict:
    import httpx
    ttfts, texts, generated, next_index = [], {}, 0, 0
    started = time.perf_counter()

    async def one_stream(http):
        nonlocal generated, next_index
        while next_index < len(prompts) and time.perf_counter() - started < limit:
            i = next_index
            next_index += 1
            body = {"model": "gpt", "messages": [{"role": "user", "content": prompts[i]}], "max_tokens": tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            t0, first, pieces = time.perf_counter(), None, []
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        generated += chunk["usage"]["completion_tokens"]
                    for choice in chunk["choices"]:
                        if choice["delta"].get("content"):
                            first = first or time.perf_counter()
                            pieces.append(choice["delta"]["content"])
            ttfts.append((first or time.perf_counter()) - t0)
            texts[i] = "".join(pieces)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=streams)) as http:
        await asyncio.gather(*(one_stream(http) for _ in range(streams)))
    elapsed = time.perf_counter() - started
    return {"tps": generated / elapsed, "ttft": ttfts, "texts": texts, "requests": len(ttfts)}


def decoder_dir(root: Path, minilm: str) -> Path:
    """GPT-2 small's shape (12 x 768), random weights, MiniLM's WordPiece tokenizer (no EOS: fixed lengths)."""
    import torch

    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from plmkit.tokenization import Tokenizer
    tokenizer = Tokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    config = GPT2Config.from_preset("gpt2", vocab_size=len(tokenizer), n_positions=1024, bos_token_id=None,
                                    eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(root / "gpt")
    tokenizer.save_pretrained(root / "gpt")
    return root / "gpt"


def chat_part(args, minilm: str, root: Path) -> None:
    gpt = decoder_dir(root, minilm)
    prompts = english_sentences(args.streams * args.rounds)
    print(f"\nchat completions: GPT-2-small-shaped (12 x 768, random weights), {args.tokens} tokens per reply, greedy")
    with Served("--model", f"gpt={gpt}", "--max-batch", str(args.streams)) as url:
        asyncio.run(chat_load(url, prompts[:2], 1, 8, 60))  # warm up
        one = asyncio.run(chat_load(url, prompts[:args.rounds], 1, args.tokens, args.time_limit))
        many = asyncio.run(chat_load(url, prompts, args.streams, args.tokens, args.time_limit))
    for label, r in (("1 stream", one), (f"{args.streams} streams", many)):
        print(f"  {label:<10} {r['tps']:7.1f} tokens/s   time to first token {percentiles(r['ttft'])}   "
              f"{r['requests']} replies")
    same = sum(many["texts"][i] == one["texts"][i] for i in one["texts"])
    print(f"  {same}/{len(one['texts'])} replies of the concurrent run equal the one-stream replies (greedy)")
    print(f"  aggregate / one stream: {many['tps'] / one['tps']:.2f}x (target >= 2.5x)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("embeddings", "chat", "all"), default="all")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="replies per stream in the concurrent chat run")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--time-limit", type=float, default=180, help="seconds per phase at most")
    args = ap.parse_args(argv)
    from plmkit.demo import minilm_dir
    minilm = str(minilm_dir())
    print(f"plmkit serve on 127.0.0.1, {os.cpu_count()} CPUs")
    if args.part in ("embeddings", "all"):
        embeddings_part(args, minilm)
    if args.part in ("chat", "all"):
        with tempfile.TemporaryDirectory() as root:
            chat_part(args, minilm, Path(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
