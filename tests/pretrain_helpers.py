"""Shared by the `plmkit pretrain` tests of every objective: the metrics a run logs, and its exact resume."""
from __future__ import annotations

import json


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def logged(out, key: str) -> list[tuple[int, float]]:
    """(step, value) of every metrics row of run `out` that has `key`."""
    return [(r["step"], r[key]) for r in read_metrics(out) if key in r]


def check_resume_is_exact(run, root, *flags) -> None:
    """`run(out, *flags)` runs `plmkit pretrain` and gives its exit code. Six steps straight in
    root/straight and three, then resumed to six, in root/resumed log the same loss at every step."""
    assert run(root / "straight", "--max-steps", "6", *flags) == 0
    assert run(root / "resumed", "--max-steps", "3", *flags) == 0
    assert run(root / "resumed", "--max-steps", "6", "--resume-with-changes", *flags) == 0
    assert [step for step, _ in logged(root / "straight", "loss")] == [1, 2, 3, 4, 5, 6]
    assert logged(root / "resumed", "loss") == logged(root / "straight", "loss")
