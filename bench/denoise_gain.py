"""Does BART's denoising pretraining help summarization? A preset pretrained with
``plmkit pretrain --objective denoise`` on the debian-summaries training descriptions (their texts only,
no summaries) for a fixed number of steps, then fine-tuned on debian-summaries, against the same preset
from random weights (the same tokenizer: the one the pretraining trained) fine-tuned for the same steps
with the same recipe. Prints both ROUGE-L scores on a fixed test subset and their difference
(issue 16's target: pretrained >= random + 2 ROUGE-L).

Each side is fine-tuned at every --lr; the lr with the best dev ROUGE-L (on a fixed dev subset, the
best checkpoint as usual) is the one whose test score counts, so neither side is held back by a
learning rate that suits the other. Not run by the tests.

    plmkit data fetch debian-summaries
    python bench/denoise_gain.py --preset bart-small --pretrain-steps 4000 --finetune-steps 2000 \\
        --lr 1e-4 3e-4 1e-3 --precision bf16 --out runs/denoise-gain
    python bench/denoise_gain.py --smoke     # a minute on a CPU: proves the script runs, measures nothing

A second call with the same --out reuses the pretrained model (delete OUT/pretrain to pretrain again).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

SMOKE = {"preset": "bart-tiny", "pretrain_steps": 10, "finetune_steps": 10, "lr": [1e-3], "train_samples": 1000,
         "dev_samples": 16, "test_samples": 32, "seq_len": 128, "batch_size": 8, "evals": 2}


def subset(path: Path, n: int | None, out: Path, seed: int = 0) -> Path:
    """A fixed random sample of `n` records of a JSONL file (all of them when n is None), written to `out`."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if n is not None and n < len(lines):
        lines = random.Random(seed).sample(lines, n)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def plmkit(*argv: str) -> None:
    from plmkit.cli import main
    print("$ plmkit " + " ".join(argv), flush=True)
    if main(list(argv)) != 0:
        raise SystemExit(f"plmkit {argv[0]} failed")


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def best_dev_rouge(run: Path) -> float:
    """The best dev ROUGE-L that fine-tuning logged (the score of the checkpoint in run/best)."""
    scores = [r["eval_rougeL"] for r in read_metrics(run) if r.get("eval_rougeL") is not None]
    if not scores:
        raise SystemExit(f"{run}/metrics.jsonl has no eval_rougeL")
    return max(scores)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="bart-small", help="bart-tiny, bart-small, bart-base")
    ap.add_argument("--pretrain-steps", type=int, default=4000, help="denoising steps")
    ap.add_argument("--pretrain-time", metavar="DUR", help="also stop denoising after this long (e.g. 10m)")
    ap.add_argument("--finetune-steps", type=int, default=2000, help="summarization steps, each side")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="fine-tuning learning rates")
    ap.add_argument("--batch-size", type=int, default=32, help="pretraining and fine-tuning batch size")
    ap.add_argument("--seq-len", type=int, default=256, help="pretraining example length, in tokens")
    ap.add_argument("--vocab-size", type=int, default=16000, help="the BPE trained by the pretraining")
    ap.add_argument("--train-samples", type=int, default=None, help="fine-tuning records (off: all 46,886)")
    ap.add_argument("--dev-samples", type=int, default=300, help="dev records generated at each evaluation")
    ap.add_argument("--test-samples", type=int, default=1000, help="the fixed test subset")
    ap.add_argument("--evals", type=int, default=4, help="dev evaluations per fine-tuning run")
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/denoise-gain"))
    ap.add_argument("--smoke", action="store_true", help="tiny settings (" + ", ".join(SMOKE) + ")")
    args = ap.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)

    from plmkit.datasets import fetch
    from plmkit.tasks import evaluate_dir

    data = Path(fetch("debian-summaries"))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train = subset(data / "train.jsonl", args.train_samples, out / "train.jsonl", args.seed)
    dev = subset(data / "dev.jsonl", args.dev_samples, out / "dev.jsonl")
    test = subset(data / "test.jsonl", args.test_samples, out / "test.jsonl")
    common = ("--precision", args.precision, "--seed", str(args.seed), "--no-progress")

    start = time.perf_counter()
    pretrained = out / "pretrain"
    if not (pretrained / "model" / "model.safetensors").is_file():
        plmkit("pretrain", "--objective", "denoise", "--corpus", str(train), "--preset", args.preset,
               "--vocab-size", str(args.vocab_size), "--seq-len", str(args.seq_len), "--batch-size",
               str(args.batch_size), "--max-steps", str(args.pretrain_steps), "--out", str(pretrained), *common,
               *(("--time-budget", args.pretrain_time) if args.pretrain_time else ()))
    pretrain_time = time.perf_counter() - start  # (0: reused)

    every = str(max(1, args.finetune_steps // args.evals))
    sides = {"pretrained": ("--model", str(pretrained / "model")),
             "random": ("--preset", args.preset, "--tokenizer", str(pretrained / "tokenizer"))}
    results = {}
    for side, init in sides.items():
        tried = []
        for lr in args.lr:
            run = out / f"{side}-lr{lr:g}"
            if not (run / "best").is_dir():
                plmkit("finetune", "--task", "summarization", *init, "--train", str(train), "--eval", str(dev),
                       "--eval-samples", str(args.dev_samples), "--eval-every", every, "--max-steps",
                       str(args.finetune_steps), "--lr", str(lr), "--batch-size", str(args.batch_size), "--out",
                       str(run), "--overwrite", *common)
            tried.append((best_dev_rouge(run), lr, run))
        dev_score, lr, run = max(tried)
        test_score = evaluate_dir(run / "best", str(test))["rougeL"]
        results[side] = (lr, dev_score, test_score)

    steps = max(row["step"] for row in read_metrics(pretrained))
    print(f"\n{args.preset}: {steps} denoising steps ({pretrain_time / 60:.1f} min), "
          f"{args.finetune_steps} fine-tuning steps a side; ROUGE-L on {args.test_samples or 'all'} test records")
    for side, (lr, dev_score, test_score) in results.items():
        print(f"  {side:<10}  lr {lr:g} (dev {dev_score:.2f})  test ROUGE-L {test_score:.2f}")
    gain = results["pretrained"][2] - results["random"][2]
    print(f"  gain: {gain:+.2f} ROUGE-L (target >= +2: {'meets' if gain >= 2 else 'MISSES'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
