"""What several tasks share: windows over long inputs, length-sorted no-grad batches, the mean
loss of an evaluation, and prediction records read from JSONL or stdin with their line numbers.

Batches are padded per batch (dynamic padding), never to the model maximum.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import torch

from plmkit.data.collate import pad_collate
from plmkit.errors import DataError
from plmkit.utils.device import model_device
from plmkit.utils.text import describe, jsonl_rows, parse_json_lines, read_stdin, split_lines


log = logging.getLogger("plmkit")


def say_cut(path, batch, names: dict[str, tuple[str, int]]) -> None:
    """Say once how many of a tokenized `batch`'s inputs (and targets) truncation cut: `names` maps
    ``input_ids`` / ``labels`` to (what they are, the limit)."""
    cut = {key: sum(flags) for key, flags in getattr(batch, "truncated", {}).items() if key in names}
    n = len(batch["input_ids"])
    if any(cut.values()):
        log.info("plmkit: %s: %s", path, ", ".join(
            f"{k:,} {names[key][0]} of {n:,} cut to {names[key][1]} tokens" for key, k in cut.items() if k))


def length_of(feature: dict) -> int:
    return len(feature["input_ids"])


def default_stride(max_length: int) -> int:
    """Tokens shared by consecutive windows when no stride is given: a quarter of the window."""
    return max_length // 4


def window_starts(n: int, size: int, overlap: int) -> list[int]:
    """Starts of the windows of `size` items that cover `n` items, consecutive windows sharing
    `overlap` items; a single window when everything fits. Each window must bring a new item
    (overlap < size): the callers refuse other settings by name."""
    if not 0 <= overlap < size:
        raise ValueError(f"windows of {size} sharing {overlap} items would not move on")
    step = size - overlap
    starts = [0]
    while starts[-1] + size < n:
        starts.append(starts[-1] + step)
    return starts


def batches_by_length(features: list[dict], batch_size: int) -> Iterator[list[int]]:
    """Indices of `features` in batches of similar length (for evaluation / prediction)."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def forward_batches(model, features: list[dict], batch_size: int, pad_id: int,
                    part=None) -> Iterator[tuple[list[int], dict, Any]]:
    """(indices, batch, output) over `features` in length-sorted batches, without gradients. `part`
    (an EvalShard, for an evaluation shared by several processes): this process's rows of each batch
    only; every process runs each batch's forward pass (a sharded model's collectives), yielding
    nothing when it has no rows."""
    collate = pad_collate(pad_id)
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in batches_by_length(features, batch_size):
                batch, own = collate([features[i] for i in idx]), True
                if part is not None:
                    batch, own = part.rows({**batch, "_rows": idx})
                    idx = batch.pop("_rows")
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(**batch)
                if own:
                    yield idx, batch, out
    finally:
        model.train(was_training)


class LossMeter:
    """The mean of the model's own loss over an evaluation, weighted by batch size."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def add(self, out, n: int) -> None:
        if getattr(out, "loss", None) is not None:
            self.total += float(out.loss) * n
            self.n += n

    def reduce(self, part) -> None:
        """Every process's losses (`part`: an EvalShard) on each."""
        self.total, n = part.sums([self.total, self.n])
        self.n = int(round(n))

    def put(self, metrics: dict) -> dict:
        if self.n:
            metrics["loss"] = self.total / self.n
        return metrics


def class_probabilities(logits: torch.Tensor, names: dict[int, str], key: str = "label") -> dict:
    """{key: the best class, "score": its probability, "probabilities": {class: probability}} of one
    row of single-label logits (C,)."""
    probs = logits.softmax(-1).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    return {key: names[best], "score": probs[best], "probabilities": {names[k]: p for k, p in enumerate(probs)}}


def predict_per_record(task, model, tokenizer, records: list, batch_size: int, where: str, lines, result) -> list:
    """`result(logits (C,), id2label)` for each record of a task with one feature per record."""
    if not records:
        return []
    examples = task.to_examples(records, where, lines)
    features = task.encode(tokenizer, examples, None, path=where)
    results: list = [None] * len(examples)
    for idx, _, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
        logits = out.logits.float()
        for row, i in enumerate(idx):
            results[i] = result(logits[row], model.config.id2label)
    return results


def pipeline_records(inputs, pipeline: str, text_field: str | None = None) -> tuple[list, bool]:
    """(records, whether one input was given) of a pipeline call: one text (with `text_field`) or
    dict, or a list of them; None or another type is an error naming the pipeline."""
    single = isinstance(inputs, dict) or text_field is not None and isinstance(inputs, str)
    if not single and not isinstance(inputs, (list, tuple)):
        wanted = "a text, a dict or a list of them" if text_field else "a dict or a list of dicts"
        raise DataError(f"{pipeline} pipeline: inputs must be {wanted}, got {describe(inputs)}")
    return ([inputs] if single else list(inputs)), single


def pipeline_texts(inputs, pipeline: str) -> tuple[list[str], bool]:
    """(texts, whether one text was given) of a pipeline that reads texts only."""
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{pipeline} pipeline: inputs must be a text or a list of texts, got {describe(inputs)}")
    return list(texts), isinstance(inputs, str)


def jsonl_records(path: str) -> tuple[list, list[int]]:
    """Records and their lines from a JSONL file, or from stdin for '-' (read as a file is: an empty
    one is an error)."""
    rows = parse_json_lines(split_lines(read_stdin()), "<stdin>") if path == "-" else jsonl_rows(path)
    lines, records = unzip(list(rows))
    return records, lines


def unzip(pairs: list[tuple]) -> tuple[list, list]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else 0.0


__all__ = ["LossMeter", "batches_by_length", "class_probabilities", "default_stride", "forward_batches", "jsonl_records",
           "length_of", "mean", "pipeline_records", "pipeline_texts", "predict_per_record", "unzip", "window_starts"]
