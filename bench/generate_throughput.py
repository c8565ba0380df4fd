"""Greedy generation throughput: plmkit GPT2LMHeadModel.generate vs Hugging Face's, same weights.

GPT-2-small shape (12 x 768, vocab 50257), random weights; a 32-token prompt + 128 new tokens,
unbatched and as a batch of 8 (left-padded prompts of different lengths). Asserts identical tokens.

    python bench/generate_throughput.py [--repeats 2] [--new 128] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: multi-threaded small matmuls are very noisy on shared VMs)")
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from plmkit.models.gpt2 import GPT2LMHeadModel

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers, eos_token_id=None,
                                                              bos_token_id=None, pad_token_id=0)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = GPT2LMHeadModel.from_pretrained(d).eval()
    hf.generation_config.eos_token_id = None

    g = torch.Generator().manual_seed(1)
    single = torch.randint(0, 50257, (1, args.prompt), generator=g)
    batch = torch.randint(0, 50257, (args.batch, args.prompt), generator=g)
    mask = torch.ones_like(batch)
    for row in range(args.batch):  # left padding: prompts of args.prompt - 2*row tokens
        mask[row, :2 * row] = 0
    batch = batch.masked_fill(mask == 0, 0)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"GPT-2 {args.layers}x768, prompt {args.prompt}, new {args.new}, best of {args.repeats}")
    ok = True
    for name, ids, m in (("batch 1", single, None), (f"batch {args.batch}", batch, mask)):
        am = m if m is not None else torch.ones_like(ids)
        t, out = timed({
            "hf": lambda: hf.generate(ids, attention_mask=am, max_new_tokens=args.new, do_sample=False,
                                      min_new_tokens=args.new, pad_token_id=0),
            "ours": lambda: ours.generate(ids, attention_mask=m, max_new_tokens=args.new, eos_token_id=[],
                                          pad_token_id=0)}, args.repeats)
        (t_hf, t_us), (out_hf, out_us) = (t["hf"], t["ours"]), (out["hf"], out["ours"])
        new = ids.shape[0] * args.new
        same = torch.equal(out_hf, out_us)
        ok &= same
        print(f"{name:>8}: HF {new / t_hf:8.1f} tok/s   plmkit {new / t_us:8.1f} tok/s   "
              f"ratio {t_hf / t_us:5.2f}x   identical tokens: {same}")
    assert ok, "plmkit and Hugging Face generated different tokens"
    return 0


if __name__ == "__main__":
    sys.exit(main())
