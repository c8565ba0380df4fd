"""Does pretraining help? Fine-tune a `plmkit pretrain` checkpoint and the same architecture from
random initialisation with one recipe on the English movie-review sentiment snippets; print both
test accuracies and the gap (target: pretrained >= random + 5 points).

Each model is fine-tuned at every --lr and every --seed (the seed draws the batch order, the
dropout masks and, for the random model, its initial weights). For each model the lr with the best
mean dev accuracy (best checkpoint on dev, as usual) is the one whose mean test accuracy counts, so
neither side is held back by a learning rate that suits the other. Dev and test hold about 1,000
snippets each, so one run's test accuracy moves by a point or two with the seed alone: compare means.
Both sides fine-tune with --dropout (pretraining writes its checkpoints with dropout 0).

    plmkit data fetch shakespeare wordnet gcide fortunes en-sentiment
    C=~/.cache/plmkit
    plmkit pretrain --corpus $C/shakespeare $C/wordnet $C/gcide $C/fortunes --preset bert-mini \\
        --time-budget 10m --objective mlm --mask-rate 0.3 --seq-len 64 --lr 1e-3 --sinusoidal-positions \\
        --precision bf16 --out runs/bert-mini-10m
    python bench/pretraining_benefit.py --pretrained runs/bert-mini-10m/model

Before fine-tuning, a linear probe reads what each model already knows: logistic regression on its
frozen, mean-pooled last-layer features (regularisation chosen on dev), test accuracy printed; the
same on TF-IDF word counts gives the bag-of-words baseline for scale.

Several --pretrained checkpoints with one config (e.g. runs of different lengths) are each compared
with one random baseline, which is fine-tuned once.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
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
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):  # tokenizer files
            shutil.copy(f, out / f.name)
    return out


def texts_and_labels(path: Path) -> tuple[list[str], list[str]]:
    import json
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], [str(r["label"]) for r in rows]


@torch.no_grad()
def mean_features(model_dir: Path, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N, H) mean of the last layer over each text's real tokens, the model frozen."""
    from plmkit.models.bert import BertModel
    from plmkit.tokenization import Tokenizer

    tok, model = Tokenizer.from_pretrained(model_dir), BertModel.from_pretrained(model_dir).eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tok(texts[start:start + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = model(**batch).last_hidden_state  # (B, T, H), zeros at padding
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        out.append((h * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def best_on_dev(make, x: dict, y: dict, strengths: tuple[float, ...]) -> float:
    """Test accuracy of the classifier ``make(C)`` whose C scores best on dev."""
    fits = [make(c).fit(x["train"], y["train"]) for c in strengths]
    return max(fits, key=lambda f: f.score(x["dev"], y["dev"])).score(x["test"], y["test"])


def probe_accuracy(model_dir: Path, splits: dict[str, tuple[list[str], list[str]]]) -> float:
    """Logistic regression on the model's frozen features, its inverse strength C best on dev."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = {name: mean_features(model_dir, texts).numpy() for name, (texts, _) in splits.items()}
    y = {name: labels for name, (_, labels) in splits.items()}
    return best_on_dev(lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)),
                       x, y, (0.001, 0.01, 0.1, 1.0))


def bag_of_words_accuracy(splits: dict[str, tuple[list[str], list[str]]]) -> float:
    """The classic baseline no encoder is needed for: logistic regression on TF-IDF word counts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(sublinear_tf=True).fit(splits["train"][0])
    x = {name: vectorizer.transform(texts) for name, (texts, _) in splits.items()}
    y = {name: labels for name, (_, labels) in splits.items()}
    return best_on_dev(lambda c: LogisticRegression(C=c, max_iter=3000), x, y, (0.3, 1.0, 3.0, 10.0, 30.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", type=Path, nargs="+", required=True,
                    help="model directories written by plmkit pretrain (one config: one random baseline)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 3e-4], help="learning rates tried for each model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning runs per lr (means are compared)")
    ap.add_argument("--dropout", type=float, default=0.1, help="fine-tuning dropout of both models")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=0, help="use the first N training rows (0: all 8,057)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from plmkit import tasks
    from plmkit.datasets import fetch
    from plmkit.recipes.finetune import finetune as run_finetune

    data = fetch("en-sentiment")
    train, dev, test = (data / f"movie_reviews.{s}.jsonl" for s in ("train", "dev", "test"))
    tmp = Path(tempfile.mkdtemp(prefix="plmkit-benefit-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # fine-tuned models: ~100 MB a run
    if args.train_size:
        rows = train.read_text(encoding="utf-8").splitlines()[:args.train_size]
        train = tmp / "train.jsonl"
        train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"fine-tuning on {sum(1 for _ in open(train, encoding='utf-8'))} movie-review rows, "
          f"{args.epochs:g} epochs, dropout {args.dropout:g}, lr {' / '.join(f'{lr:g}' for lr in args.lr)}, "
          f"seeds {' '.join(map(str, args.seeds))}; test: {test.name}", flush=True)

    def finetune(model_dir: Path, lr: float, seed: int, run: Path) -> tuple[float, float]:
        """(dev accuracy, test accuracy) of the best-on-dev checkpoint."""
        run_finetune("classification", model_dir, train, run, dev, epochs=args.epochs, lr=lr,
                     batch_size=args.batch_size, max_length=128, dropout=args.dropout, seed=seed, device="cpu",
                     progress_bar=False, log_every=1000)
        best = run / "best" if (run / "best").exists() else run / "model"
        return tasks.evaluate_dir(best, dev, device="cpu")["accuracy"], tasks.evaluate_dir(best, test, device="cpu")["accuracy"]

    first = args.pretrained[0]
    for other in args.pretrained[1:]:
        if (other / "config.json").read_text() != (first / "config.json").read_text():
            raise SystemExit(f"{other} and {first} have different configs: compare them in separate runs")
    names = [str(d) for d in args.pretrained] if len(args.pretrained) > 1 else ["pretrained"]
    models = {name: {seed: d for seed in args.seeds} for name, d in zip(names, args.pretrained)}
    models["random init"] = {seed: random_copy(first, tmp / f"random-{seed}", seed) for seed in args.seeds}
    splits = {"train": texts_and_labels(train), "dev": texts_and_labels(dev), "test": texts_and_labels(test)}
    print(f"  bag of words (TF-IDF + logistic regression, no encoder): test accuracy "
          f"{bag_of_words_accuracy(splits):.4f}", flush=True)
    for name, model_dirs in models.items():
        probes = [probe_accuracy(d, splits) for d in dict.fromkeys(model_dirs.values())]
        spread = f" ± {statistics.stdev(probes):.4f} (sd)" if len(probes) > 1 else ""
        print(f"  {name:<12} linear probe on frozen features: test accuracy {statistics.mean(probes):.4f}{spread}",
              flush=True)
    results = {}
    for k, (name, model_dirs) in enumerate(models.items()):
        by_lr = []  # (mean dev, mean test, lr, test accuracies)
        for lr in args.lr:
            devs, tests = [], []
            for seed, model_dir in model_dirs.items():
                start = time.perf_counter()
                dev_acc, test_acc = finetune(model_dir, lr, seed, tmp / f"model{k}-{lr:g}-{seed}")
                devs.append(dev_acc)
                tests.append(test_acc)
                print(f"  {name:<12} lr {lr:<7g} seed {seed}  dev accuracy {dev_acc:.4f}  test accuracy {test_acc:.4f}  "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
            by_lr.append((statistics.mean(devs), statistics.mean(tests), lr, tests))
        dev_mean, test_mean, lr, tests = max(by_lr, key=lambda row: row[0])  # ties: the first lr
        results[name] = tests
        spread = f" ± {statistics.stdev(tests):.4f} (sd)" if len(tests) > 1 else ""
        print(f"  {name:<12} best on dev: lr {lr:g} (mean dev {dev_mean:.4f}), mean test accuracy {test_mean:.4f}{spread}",
              flush=True)
    for name in names:
        gap = 100 * (statistics.mean(results[name]) - statistics.mean(results["random init"]))
        print(f"  {name} - random init: {gap:+.1f} accuracy points, mean over {len(args.seeds)} seed(s) "
              f"(target >= +5: {'meets' if gap >= 5 else 'MISSES'})")

if __name__ == "__main__":
    main()
