"""Helpers shared by the benchmarks: real sentences, timing, ratios."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path


def english_sentences(n: int) -> list[str]:
    """Real English sentences of mixed length: the VADER sentiment snippets (fetched from PyPI once)."""
    from plmkit.datasets import fetch

    root = fetch("en-sentiment")
    texts: list[str] = []
    for path in sorted(Path(root).glob("*.jsonl")):
        if path.name.count(".") == 1:  # the whole sets, not their train/dev/test splits
            texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} sentences available, need {n}")
    return texts[:n]


def best_of(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(rows: list[tuple[str, float, str]], ratio: float, target: float, what: str) -> None:
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"  {name:<{width}}  {value:10.1f} {unit}")
    verdict = "meets" if ratio >= target else "MISSES"
    print(f"  ratio {what}: {ratio:.2f}x (target >= {target}x: {verdict})")


def timed(fns: dict, repeats: int, cpu: bool = False) -> tuple:
    """Best-of-``repeats`` wall time of each function, runs interleaved so that machine noise hits both;
    and each one's last result (after one warm-up call each). ``cpu``: also the best process CPU time
    (with one thread, the time the process really ran: a shared host's other jobs do not count)."""
    best, best_cpu, outs = {k: float("inf") for k in fns}, {k: float("inf") for k in fns}, {}
    for k, fn in fns.items():
        outs[k] = fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - start)
            best_cpu[k] = min(best_cpu[k], time.process_time() - start_cpu)
    return (best, outs, best_cpu) if cpu else (best, outs)


def training_steps(runners: dict, batches: list[dict], warmup: int = 2, cpu: bool = False) -> tuple:
    """``runners``: name -> (model, optimizer). The models take turns, step for step, on the same batches,
    each called the Hugging Face way (``model(**batch).loss``, backward, optimizer step), with the same
    seed before each step (the same dropout stream position). Returns the wall times of the steps after
    ``warmup`` and every step's loss, per name; ``cpu``: also the steps' process CPU times."""
    import torch

    times = {name: [] for name in runners}
    cpu_times = {name: [] for name in runners}
    losses = {name: [] for name in runners}
    for i, batch in enumerate(batches):
        for name, (model, opt) in runners.items():
            torch.manual_seed(i)
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
            losses[name].append(loss.item())
    return (times, losses, cpu_times) if cpu else (times, losses)
