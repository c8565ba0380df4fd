"""`plmkit pretrain`: pretrain a BERT (MLM + NSP, or MLM only) from raw text.

Thin layer over `plmkit.training.pretrain.run_pretraining`: a run file (--config) gives
sections model/data/train; flags given on the command line override it.
"""
from __future__ import annotations

import argparse

# flag dest -> (section, key); a flag left out keeps the run file's value or the default
FLAG_KEYS = {
    "corpus": ("data", "corpus"), "tokenizer": ("data", "tokenizer"), "vocab_size": ("data", "vocab_size"),
    "objective": ("data", "objective"), "seq_len": ("data", "seq_len"), "batch_size": ("data", "batch_size"),
    "mask_rate": ("data", "mask_rate"), "whole_word_mask": ("data", "whole_word_mask"),
    "eval_fraction": ("data", "eval_fraction"), "eval_batches": ("data", "eval_batches"),
    "cache_dir": ("data", "cache_dir"), "min_doc_tokens": ("data", "min_doc_tokens"), "lowercase": ("data", "lowercase"),
    "preset": ("model", "preset"), "pre_ln": ("model", "norm_first"),
    "unigram_bias_init": ("model", "unigram_bias_init"), "sinusoidal_position_init": ("model", "sinusoidal_position_init"),
    "max_steps": ("train", "max_steps"), "time_budget": ("train", "time_budget"), "lr": ("train", "lr"),
    "warmup_steps": ("train", "warmup_steps"), "warmup_ratio": ("train", "warmup_ratio"),
    "schedule": ("train", "schedule"), "weight_decay": ("train", "weight_decay"),
    "grad_accum_steps": ("train", "grad_accum_steps"), "grad_clip": ("train", "grad_clip"),
    "keep_last": ("train", "keep_last"),
    "eval_every": ("train", "eval_every"), "save_every": ("train", "save_every"), "log_every": ("train", "log_every"),
    "seed": ("train", "seed"), "device": ("train", "device"), "precision": ("train", "precision"),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain a BERT (MLM + NSP, or MLM) or a decoder (--objective clm) on raw text",
        description="Pretrain a BERT from raw text: trains a WordPiece tokenizer if none is given, tokenizes the "
                    "corpus once into a cached token array, builds BERT's sentence-pair examples, masks dynamically "
                    "and evaluates on held-out documents. With --objective clm: a GPT-2 or Llama decoder by "
                    "next-token prediction (byte-level BPE). Flags override the run file (--config).",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--corpus", nargs="+", metavar="PATH", help="text corpus: .txt/.txt.gz/.jsonl files or directories")
    p.add_argument("--out", metavar="DIR", help="output directory (tokenizer, checkpoints, metrics, final model)")
    p.add_argument("--config", metavar="FILE", help="run file (YAML or JSON) with sections model/data/train")
    p.add_argument("--preset", metavar="NAME", help="model size: bert-tiny/mini/small/medium/base (default bert-mini)")
    p.add_argument("--tokenizer", metavar="DIR", help="use this tokenizer instead of training one on the corpus")
    p.add_argument("--vocab-size", type=int, metavar="N", help="vocabulary of the tokenizer trained here (default 8192)")
    p.add_argument("--cased", dest="lowercase", action="store_false", help="keep case when training the tokenizer")
    p.add_argument("--objective", choices=("mlm+nsp", "mlm", "clm"),
                   help="mlm+nsp: BERT's pairs (default); mlm: packed sentences; clm: a GPT-2/Llama decoder "
                        "(--preset gpt2-tiny/mini/..., llama-tiny/...; BPE tokenizer; plmkit.training.clm)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps")
    p.add_argument("--time-budget", metavar="DUR", help="stop after this long, e.g. 600, 10m, 1h30m")
    p.add_argument("--seq-len", type=int, metavar="N", help="tokens per example, specials included (default 128)")
    p.add_argument("--batch-size", type=int, metavar="N", help="examples per batch (default 32)")
    p.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default 5e-4)")
    p.add_argument("--warmup-steps", type=int, metavar="N", help="linear warmup steps (default: 6%% of the run)")
    p.add_argument("--warmup-ratio", type=float, metavar="F", help="linear warmup over this fraction of the run "
                                                                    "(default 0.06; instead of --warmup-steps)")
    p.add_argument("--schedule", choices=("linear", "cosine", "constant"),
                   help="learning-rate decay after warmup (default linear)")
    p.add_argument("--weight-decay", type=float, metavar="W", help="AdamW weight decay (default 0.01)")
    p.add_argument("--grad-accum-steps", type=int, metavar="N",
                   help="batches whose gradients add up to one optimizer step (default 1)")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm to NORM (default 1.0; 0: off)")
    p.add_argument("--mask-rate", type=float, metavar="P", help="fraction of tokens masked (default 0.15)")
    p.add_argument("--whole-word-mask", action="store_true", help="mask whole words (## pieces with their word)")
    p.add_argument("--pre-ln", action="store_true", help="pre-LayerNorm blocks (stabler; not loadable by HF BertModel)")
    p.add_argument("--no-unigram-init", dest="unigram_bias_init", action="store_false",
                   help="start the MLM decoder bias at zero instead of the corpus's log word frequencies")
    p.add_argument("--sinusoidal-positions", dest="sinusoidal_position_init", action="store_true",
                   help="start the learned position embeddings as sinusoids (they stay trainable, HF-loadable)")
    p.add_argument("--dropout", type=float, metavar="P", help="hidden and attention dropout (default 0.0)")
    p.add_argument("--min-doc-tokens", type=int, metavar="N",
                   help="merge consecutive short documents of a file up to N tokens (default seq-len; 0: never)")
    p.add_argument("--eval-every", type=int, metavar="N", help="evaluate on held-out documents every N steps")
    p.add_argument("--eval-fraction", type=float, metavar="F", help="fraction of documents held out (default 0.02)")
    p.add_argument("--eval-batches", type=int, metavar="N", help="evaluation batches at most (default 20)")
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (default 1000, and at the end)")
    p.add_argument("--keep-last", type=int, metavar="N", help="checkpoints kept on disk, the newest (default 2)")
    p.add_argument("--log-every", type=int, metavar="N", help="log loss to metrics.jsonl every N steps (default 10)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    p.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto: bf16 on GPUs that support it, else fp32")
    p.add_argument("--cache-dir", metavar="DIR", help="tokenized-corpus cache (default ~/.cache/plmkit/pretraining)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The PretrainConfig of the run file (if any) with the given flags applied on top."""
    from plmkit.training.pretrain import PretrainConfig, load_run_file

    values = load_run_file(args.config) if getattr(args, "config", None) else {}
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    given = vars(args)
    train = values.get("train")
    if isinstance(train, dict) and ("warmup_steps" in given) != ("warmup_ratio" in given):
        # a warmup flag replaces the run file's warmup, whichever of the two ways it was given
        train.pop("warmup_ratio" if "warmup_steps" in given else "warmup_steps", None)
    for dest, (section, key) in FLAG_KEYS.items():
        if dest in given:
            values.setdefault(section, {})
            if not isinstance(values[section], dict):
                break  # from_dict reports the malformed section
            values[section][key] = given[dest]
    if "dropout" in given:
        values.setdefault("model", {}).update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    if given.get("no_progress"):
        values.setdefault("train", {})["progress_bar"] = False
    if "out" in given:
        values["out"] = args.out
    return PretrainConfig.from_dict(values, source=getattr(args, "config", None) or "flags")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "objective", None) == "clm":  # causal LM: its own pipeline (document packing, BPE)
        from plmkit.training.clm import format_result as clm_result, run_clm_from_flags
        print(clm_result(run_clm_from_flags(vars(args))))
        return 0
    from plmkit.training.pretrain import format_result, run_pretraining

    cfg = build_config(args)
    result = run_pretraining(cfg, resume=getattr(args, "resume", False))
    print(format_result(result))
    return 0
