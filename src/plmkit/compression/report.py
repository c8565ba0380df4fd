"""What a smaller model bought and what it cost: size on disk, parameters, latency and throughput at
batch 1 and 32, and the task metric on an eval file. Every compression command prints this report
(before vs after), and `plmkit compare DIR...` puts several variants of one model side by side.

    report = measure("sentiment/model", eval_file="test.jsonl")
    print(format_report([report, measure("sentiment/int8", eval_file="test.jsonl")], baseline=report))

A model directory runs on a backend (`BACKENDS`): "torch" (plmkit's own models, int8 ones included),
or "onnxruntime" / "onnxruntime-int8" (the graphs of a directory `plmkit export` wrote: model.onnx, or
an encoder-decoder's encoder_model.onnx and decoder_model.onnx; their .int8.onnx copies). Latency is
the median wall time of one call over a batch, after warm-up runs, on the eval file's own examples
(real lengths; the same examples for every model) or, without one, on a fixed synthetic batch of
`seq_len` tokens. The call: an encoder's forward pass; a generative model's (a causal LM's, an
encoder-decoder's) `generate`, greedy, `new_tokens` new tokens per row whatever the end-of-text token
says (the same work for every variant), from the examples' input ids as prompts (on the left,
cut to leave room for the new tokens) or sources; its throughput counts sequences per second.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from plmkit.compression.records import REPORT_FILE
from plmkit.errors import ConfigError
from plmkit.models.config import read_config_json
from plmkit.models.io import check_model_dir, weight_paths
from plmkit.tasks.base import TASK_FILE, Task

# The metrics on a 0-1 scale, by task: the table shows their differences in points (x 100). Every other
# difference is shown as it is: BLEU, chrF and ROUGE (translation, summarization) and QA's exact match and F1
# are 0-100 already; perplexity, loss and MSE are no fractions.
FRACTION_METRICS = {
    "classification": frozenset({"accuracy", "f1", "macro_f1", "micro_f1", "weighted_f1", "subset_accuracy",
                                 "pearson", "spearman"}),  # (correlations: points, as GLUE reports them)
    "ner": frozenset({"precision", "recall", "f1", "token_accuracy"}),
    "relation": frozenset({"precision", "recall", "f1", "accuracy"}),
}
COUNT_FIELDS = frozenset({"n", "tokens"})  # what an evaluation counted (examples, tokens): no metric
FORWARD = "forward pass"  # what an encoder's latency times
DEFAULT_SEQ_LEN = 128  # synthetic inputs without an eval file (or the model's positions, when fewer)


@dataclass
class Loaded:
    """A model directory ready to measure. `model(**batch)` takes a collated batch of torch tensors
    (input_ids, attention_mask ...) and returns an output with ``.logits``; the task's evaluation
    calls it the same way, so that the metric comes from the code path of `plmkit evaluate`.
    `model.config` is the directory's ModelConfig."""

    model: Any
    tokenizer: Any | None  # None: a directory without tokenizer files (synthetic inputs only)
    task: Task | None  # None: a directory that is not a fine-tuned model (no metric)
    parameters: int
    how: dict[str, Any] = field(default_factory=dict)  # what the backend adds to config.json's record


@dataclass(frozen=True)
class Backend:
    """How to run a model directory: `load(model_dir, task)` (task: a Task that replaces the directory's
    own, or None); `weight_files`: glob patterns of the files it reads weights from (a directory holding
    one is this backend's); `reads`: those it reads of a directory (the size on disk; default: every file
    of `weight_files`)."""

    load: Callable[[Path, Task | None], Loaded]
    weight_files: tuple[str, ...]
    reads: Callable[[Path], list[Path]] | None = None

    def files_read(self, directory: Path) -> list[Path]:
        if self.reads is not None:
            return self.reads(directory)
        return sorted({p for pattern in self.weight_files for p in directory.glob(pattern) if p.is_file()})


def _load_torch(model_dir: Path, task: Task | None) -> Loaded:
    from plmkit.models.auto import load_any
    from plmkit.tasks.inference import load_for_inference
    from plmkit.tokenization import Tokenizer

    if (model_dir / TASK_FILE).is_file():
        model, tokenizer, own = load_for_inference(model_dir, "cpu")
        return Loaded(model, tokenizer, task or own, model.num_parameters())
    model = load_any(model_dir).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir) if (model_dir / "tokenizer.json").is_file() else None
    return Loaded(model, tokenizer, task, model.num_parameters())


def _load_onnxruntime(backend: str, model_dir: Path, task: Task | None) -> Loaded:
    """A directory `plmkit export` wrote, run by onnxruntime (`backend`: tasks.inference.ONNX_BACKENDS) on
    as many threads as torch has now (`measure`'s `threads`)."""
    from plmkit.models.onnx import load_ort
    from plmkit.tasks.inference import ONNX_BACKENDS, for_inference
    from plmkit.tasks.registry import load_task
    from plmkit.tokenization import Tokenizer

    model = load_ort(model_dir, ONNX_BACKENDS[backend], threads=torch.get_num_threads()).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir) if (model_dir / "tokenizer.json").is_file() else None
    own = for_inference(load_task(model_dir)) if (model_dir / TASK_FILE).is_file() else None
    made = {k: model.info[k] for k in ("opset", "exporter", "check", "int8") if k in model.info}
    return Loaded(model, tokenizer, task or own, _graph_parameters(model_dir, model), {"onnx": made})


def _graph_parameters(model_dir: Path, model) -> int:
    """The parameters of an exported directory, each weight once (`stored_parameters`), counted in its fp32 graphs
    whatever precision runs, as a PyTorch int8 model counts its int8 weights but not their scales (int8 graphs
    alone: theirs, an int8 tied weight's two quantized copies included)."""
    from plmkit.compression.onnx import stored_parameters
    from plmkit.models.onnx import graph_file
    fp32 = [model_dir / graph_file("fp32", part) for part in model.graphs]
    return stored_parameters(fp32 if all(p.is_file() for p in fp32) else [g.path for g in model.graphs.values()])


# the backends `measure` runs a directory on, by name
BACKENDS: dict[str, Backend] = {
    "torch": Backend(_load_torch, ("*.safetensors", "pytorch_model*.bin"), weight_paths),  # (not other copies)
    "onnxruntime": Backend(functools.partial(_load_onnxruntime, "onnxruntime"), ("*model.onnx", "*model.onnx.data")),
    "onnxruntime-int8": Backend(functools.partial(_load_onnxruntime, "onnxruntime-int8"),
                                ("*model.int8.onnx", "*model.int8.onnx.data")),
}  # (*model.onnx: model.onnx, or encoder_model.onnx and decoder_model.onnx; .data: the weights of one over 2 GB)
DEFAULT_NEW_TOKENS = 16  # what a generative model generates per row while timed


def measure(model_dir, *, eval_file=None, task: Task | str | None = None, batch_sizes=(1, 32),
            seq_len: int | None = None, backend: str = "torch", threads: int | None = None,
            warmup: int = 2, repeats: int = 10, eval_batch_size: int = 32, score: bool = True,
            cpu_time: bool = False, new_tokens: int = DEFAULT_NEW_TOKENS) -> dict[str, Any]:
    """The report of one model directory (see the module docstring): a JSON-ready dict with ``model``,
    ``backend``, ``size_mb``, ``parameters``, ``latency_ms`` and ``throughput`` ({batch size: ms per
    batch / examples per second}), ``inputs`` (what was timed on), ``timed`` (the call: a forward
    pass, or generating `new_tokens` tokens per row), ``metric`` ({name: value}; empty
    without `eval_file`) and ``how`` (config.json's record of how the model was made, e.g. its
    ``quantization_config``). `threads`: torch threads while measuring (default: as set); `score`
    False: time on the eval file's examples without scoring them (no metric); `cpu_time`: time the
    process's CPU time instead of the wall clock (with one thread on a shared machine, the time the
    model really ran: other jobs' turns on the core do not count)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    if new_tokens < 1:
        raise ConfigError(f"new_tokens must be >= 1, got {new_tokens}")
    directory = check_model_dir(model_dir)
    if isinstance(task, str):
        from plmkit.tasks.registry import get_task
        task = get_task(task)()
    spec = BACKENDS[backend]
    with _threads(threads):
        loaded = spec.load(directory, task)
        if eval_file is not None and loaded.task is None:
            raise ConfigError(f"{directory}: not a fine-tuned model (no {TASK_FILE}), so {eval_file} cannot be "
                              "scored; give task= or leave the eval file out")
        examples = _timing_features(loaded, eval_file, seq_len)
        clock = time.process_time if cpu_time else time.perf_counter
        call, batches, timed = _timed_call(loaded, new_tokens)
        latency = {b: _median_ms(call, batches(loaded, examples, b, warmup + repeats), warmup, clock)
                   for b in batch_sizes}
        metric = {}
        if eval_file is not None and score:
            from plmkit.tasks.inference import evaluate_loaded
            metric = evaluate_loaded(loaded.model, loaded.tokenizer, loaded.task, eval_file, eval_batch_size)
    return {
        "model": str(model_dir),
        "backend": backend,
        "size_mb": weight_bytes(directory, spec) / 2 ** 20,
        "parameters": loaded.parameters,
        "latency_ms": latency,
        "throughput": {b: b / (ms / 1000) for b, ms in latency.items()},
        "inputs": (f"{eval_file} (real lengths)" if eval_file is not None
                   else f"synthetic, {len(examples[0]['input_ids'])} tokens"),
        "timed": timed,
        "threads": torch.get_num_threads() if threads is None else threads,
        "clock": "process CPU time" if cpu_time else "wall",
        "task": loaded.task.name if loaded.task is not None else None,
        "metric": {k: v for k, v in metric.items() if isinstance(v, float) and k not in COUNT_FIELDS},
        "how": {**recorded_how(directory), **loaded.how},
    }


def backend_of(model_dir) -> str:
    """The first backend (in `BACKENDS` order: torch first) whose weight files the directory holds."""
    directory = check_model_dir(model_dir)
    for name, spec in BACKENDS.items():
        if any(p.is_file() for pattern in spec.weight_files for p in directory.glob(pattern)):
            return name
    patterns = ", ".join(p for spec in BACKENDS.values() for p in spec.weight_files)
    raise ConfigError(f"{directory}: no weight files that a backend reads ({patterns})")


def weight_bytes(directory: Path, backend: Backend) -> int:
    """The size on disk of the weights `backend` reads of `directory`."""
    files = backend.files_read(directory)
    if not files:
        raise ConfigError(f"{directory}: no weight files ({', '.join(backend.weight_files)})")
    return sum(p.stat().st_size for p in files)


def recorded_how(directory: Path) -> dict[str, Any]:
    """config.json's record of how the model was made: every ``*_config`` block (quantization_config
    as Hugging Face writes it, and those of the other compression commands) and ``pruned_heads``."""
    config = read_config_json(directory / "config.json")
    return {k: v for k, v in config.items()
            if (k.endswith("_config") and isinstance(v, dict)) or (k == "pruned_heads" and v)}


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _timing_features(loaded: Loaded, eval_file, seq_len: int | None) -> list[dict]:
    """The features timed: the eval file's (encoded by the task, in file order), or one synthetic
    example of `seq_len` tokens drawn with a fixed seed."""
    if eval_file is not None:
        examples = loaded.task.read(eval_file, labelled=True)
        features = loaded.task.encode(loaded.tokenizer, examples, loaded.model.config.label2id, path=eval_file)
        if not features:
            raise ConfigError(f"{eval_file}: no examples to time")
        return features
    config = loaded.model.config
    length = seq_len or min(DEFAULT_SEQ_LEN, config.max_positions or DEFAULT_SEQ_LEN)
    vocab = len(loaded.tokenizer) if loaded.tokenizer is not None else config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), vocab, (length,), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": ids.tolist()}]


def _timed_call(loaded: Loaded, new_tokens: int) -> tuple[Callable, Callable, str]:
    """(what is called on each batch, how the batches are made, what that is, in words): a generative
    model's greedy `generate` of `new_tokens` tokens per row (no end-of-text token stops it), or the
    forward pass."""
    from plmkit.generation import GenerationMixin
    model = loaded.model
    if not isinstance(model, GenerationMixin):
        return model, _batches, FORWARD
    call = functools.partial(model.generate, max_new_tokens=new_tokens, do_sample=False, num_beams=1,
                             num_return_sequences=1, eos_token_id=[])
    return call, functools.partial(_prompts, new_tokens=new_tokens), f"greedy generation of {new_tokens} new tokens per row"


def _prompts(loaded: Loaded, features: list[dict], size: int, count: int, new_tokens: int) -> list[dict]:
    """`count` batches of `size` consecutive features' input ids (cycling) as `generate` takes them: an
    encoder-decoder's sources padded on the right, a causal LM's prompts on the left, each cut to its
    last tokens so that `new_tokens` more fit in the model's positions."""
    from plmkit.data.collate import pad_sequences
    seq2seq, limit = loaded.model.is_encoder_decoder, loaded.model.config.max_positions
    keep = limit - new_tokens if limit is not None and not seq2seq else None
    if keep is not None and keep < 1:
        raise ConfigError(f"{new_tokens} new tokens leave no room for a prompt in the model's {limit} positions")
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer is not None else None
    batches = []
    for n in range(count):
        rows = [list(features[(n * size + i) % len(features)]["input_ids"]) for i in range(size)]
        ids, mask = pad_sequences([r[-keep:] if keep else r for r in rows], pad or 0, "right" if seq2seq else "left")
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def _batches(loaded: Loaded, features: list[dict], size: int, count: int) -> list[dict]:
    """`count` batches of `size` consecutive features (cycling through them), collated as the task
    collates; labels are dropped (a forward pass for inference) unless the model decodes them."""
    from plmkit.data.collate import pad_collate
    collate = (loaded.task.collate(loaded.tokenizer) if loaded.task is not None and loaded.tokenizer is not None
               else pad_collate(loaded.tokenizer.pad_token_id if loaded.tokenizer is not None else 0))
    decodes = getattr(loaded.model, "is_encoder_decoder", False)
    takes = _keywords(loaded.model)
    batches = []
    for n in range(count):
        rows = [features[(n * size + i) % len(features)] for i in range(size)]
        if decodes:  # the target side: the features' labels, or (synthetic) the source itself
            rows = [{**r, "labels": r.get("labels", r["input_ids"])} for r in rows]
        else:
            rows = [{k: v for k, v in r.items() if k != "labels"} for r in rows]
        batch = collate(rows)
        batches.append({k: v for k, v in batch.items() if takes is None or k in takes})
    return batches


def _keywords(model) -> set[str] | None:
    """The keyword arguments `model` takes (None: any)."""
    params = inspect.signature(model.forward if hasattr(model, "forward") else model).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _median_ms(call, batches: list[dict], warmup: int, clock) -> float:
    times = []
    with torch.no_grad():
        for n, batch in enumerate(batches):
            start = clock()
            call(**batch)
            if n >= warmup:
                times.append(clock() - start)
    return statistics.median(times) * 1000


# ---------------------------------------------------------------------------------- presentation
TABLE_METRICS = 3  # the table's metric columns (the task's first ones; the JSON has them all)


def format_report(reports: list[dict], baseline: dict | None = None) -> str:
    """A table, one row per report: size, parameters, latency and throughput per batch size, the
    (first three) metrics; with a baseline, each value's ratio to it (×smaller, ×faster) and each metric's
    difference from it: in points (×100, "pts") for a metric on a 0-1 scale (`FRACTION_METRICS`), as it is
    otherwise (BLEU, perplexity ...)."""
    if not reports:
        return "(no models)"
    batches = sorted({int(b) for r in reports for b in r["latency_ms"]})
    metrics = metric_names(reports)[:TABLE_METRICS]
    header = ["model", "size MB", "params"]
    header += [f"b{b} ms" for b in batches] + [f"b{b} ex/s" for b in batches] + metrics
    rows = [header]
    for r in reports:
        lat, thr = _by_int(r["latency_ms"]), _by_int(r["throughput"])
        base_lat = _by_int(baseline["latency_ms"]) if baseline else {}
        row = [_name(r), _with(f"{r['size_mb']:.1f}", baseline and baseline["size_mb"] / r["size_mb"], "x smaller"),
               f"{r['parameters'] / 1e6:.2f}M"]
        row += [_with(f"{lat[b]:.1f}", b in base_lat and base_lat[b] / lat[b], "x") if b in lat else "-"
                for b in batches]
        row += [f"{thr[b]:.1f}" if b in thr else "-" for b in batches]
        for m in metrics:
            value, base = r["metric"].get(m), (baseline or {}).get("metric", {}).get(m)
            row.append("-" if value is None else f"{value:.4f}" + (
                f" ({difference(r, m, value - base)})" if base is not None and r is not baseline else ""))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if baseline is not None:
        lines.append(f"ratios: to {_name(baseline)} (size: x smaller; latency: x faster); metrics: value "
                     "(difference; pts: points, x100 of a 0-1 metric)")
    for timed in dict.fromkeys(r.get("timed", FORWARD) for r in reports):
        if timed != FORWARD:
            lines.append(f"timed: {timed} (ex/s: sequences per second)")
    return "\n".join(lines)


def metric_names(reports: list[dict]) -> list[str]:
    """The metrics of `reports`, in order of appearance, the loss and counts left out."""
    return list(dict.fromkeys(k for r in reports for k in r["metric"] if k != "loss" and k not in COUNT_FIELDS))


def difference(report: dict, metric: str, delta: float) -> str:
    """A metric's difference from the baseline: in points for a 0-1 metric of the report's task, else as it is."""
    if metric in FRACTION_METRICS.get(report.get("task"), ()):
        return f"{100 * delta:+.2f} pts"
    return f"{delta:+.2f}"


def _by_int(d: dict) -> dict[int, float]:
    return {int(k): float(v) for k, v in d.items()}  # a report read back from JSON has string keys


def _with(text: str, ratio, unit: str) -> str:
    return f"{text} ({ratio:.2f}{unit})" if ratio else text


def _name(report: dict) -> str:
    path = Path(report["model"])
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return name if report.get("backend", "torch") == "torch" else f"{name} [{report['backend']}]"


def save_report(out_dir, report, name: str = REPORT_FILE) -> Path:
    """Write `report` (a dict, or a list of them) as `out_dir/name`, atomically; an undefined value
    (NaN) is null, since JSON has none."""
    from plmkit.utils.files import atomic_write_text, output_dir
    path = output_dir(out_dir, "the report directory") / name
    atomic_write_text(path, json.dumps(_json_ready(report), indent=2, ensure_ascii=False) + "\n")
    return path


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_reports(reports: list[dict], path, batch_size: int | None = None) -> Path:
    """A PNG: latency per example at `batch_size` (default the largest measured) on x, the first
    metric (accuracy when there is one) on y, or the size without metrics; marker area grows with the
    size on disk, and each point is named with its size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plmkit.visualization import save_png

    batch = batch_size or max(int(b) for r in reports for b in r["latency_ms"])
    metrics = metric_names(reports)
    metric = "accuracy" if "accuracy" in metrics else metrics[0] if metrics else None
    largest = max(r["size_mb"] for r in reports)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in reports:
        x = _by_int(r["latency_ms"]).get(batch)
        y = r["metric"].get(metric) if metric else r["size_mb"]
        if x is None or y is None:
            continue
        ax.scatter([x / batch], [y], s=60 + 600 * r["size_mb"] / largest, alpha=0.6)
        ax.annotate(f"{_name(r)}\n{r['size_mb']:.1f} MB", (x / batch, y), fontsize=8,
                    xytext=(6, 6), textcoords="offset points")
    ax.margins(x=0.2, y=0.25)  # room for the names
    ax.set_xlabel(f"latency per example at batch {batch} (ms)")
    ax.set_ylabel(metric or "size on disk (MB)")
    ax.set_title("size (marker area) vs accuracy vs latency")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


__all__ = ["BACKENDS", "Backend", "COUNT_FIELDS", "FRACTION_METRICS", "Loaded", "REPORT_FILE", "backend_of",
           "difference", "format_report", "measure", "metric_names", "plot_reports", "recorded_how", "save_report",
           "weight_bytes"]
