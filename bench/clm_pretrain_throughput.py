"""Causal-LM training step throughput (forward + backward + AdamW): plmkit GPT2LMHeadModel vs Hugging
Face's, same config and weights, fp32 on CPU. Both are called the Hugging Face way,
``model(input_ids=ids, labels=ids).loss``: in training mode with labels plmkit takes its chunked
LM head + cross-entropy by default (no (B, T, V) logits).

    python bench/clm_pretrain_throughput.py [--batch 4] [--seq 256] [--steps 3] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from plmkit.models.gpt2 import GPT2LMHeadModel

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=args.vocab, n_positions=max(1024, args.seq), n_embd=args.dim, n_layer=args.layers,
        n_head=max(1, args.dim // 64)))
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = GPT2LMHeadModel.from_pretrained(d)
    models = {"hf": hf.train(), "ours": ours.train()}
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)

    def step(k):
        torch.manual_seed(0)
        loss = models[k](input_ids=ids, labels=ids).loss  # the same call for both
        loss.backward()
        optims[k].step()
        optims[k].zero_grad(set_to_none=True)
        return loss.item()

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"GPT-2 {args.layers}x{args.dim} vocab {args.vocab}, batch {args.batch}x{args.seq}, best of {args.steps}")
    losses = {k: step(k) for k in models}  # warm-up (and the first losses agree up to dropout masks)
    best = {k: float("inf") for k in models}
    for _ in range(args.steps):
        for k in models:  # interleaved, so that machine noise hits both
            start = time.perf_counter()
            step(k)
            best[k] = min(best[k], time.perf_counter() - start)
    tokens = args.batch * args.seq
    print(f"first-step loss: HF {losses['hf']:.4f}  plmkit {losses['ours']:.4f}")
    print(f"HF {tokens / best['hf']:8.1f} tok/s   plmkit {tokens / best['ours']:8.1f} tok/s   "
          f"ratio {best['hf'] / best['ours']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
