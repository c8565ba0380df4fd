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
