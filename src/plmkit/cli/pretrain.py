"""`plmkit pretrain`: pretrain a BERT (MLM + NSP, or MLM only), a decoder (--objective clm) or a BART
(--objective denoise) from raw text.

Thin layer over `plmkit.recipes.pretrain`: its flags are generated from `PretrainRun`'s fields
(`plmkit.cli.flags`); a run file (--config) gives sections model/data/train, and flags given on
the command line win.
"""
from __future__ import annotations

import argparse

from plmkit.cli.flags import add_run_flags, run_from_args
from plmkit.recipes.pretrain import PretrainRun


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain a BERT (MLM + NSP, or MLM), a decoder (--objective clm) or a BART "
                         "(--objective denoise) on raw text",
        description="Pretrain a BERT from raw text: trains a WordPiece tokenizer if none is given, tokenizes the "
                    "corpus once into a cached token array, builds BERT's sentence-pair examples, masks dynamically "
                    "and evaluates on held-out documents. With --objective clm: a GPT-2 or Llama decoder by "
                    "next-token prediction (byte-level BPE). With --objective denoise: a BART encoder-decoder "
                    "rebuilding text from BART's noise (text infilling, sentence permutation), byte-level BPE. "
                    "Flags override the run file (--config); the effective run file is written to OUT/run.yaml.")
    add_run_flags(p, PretrainRun)
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/latest, exactly (the same settings and data)")
    p.add_argument("--resume-from", metavar="DIR", default=None,
                   help="continue from this checkpoint directory instead of the latest (implies --resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its tokenizer, checkpoints, model and metrics)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although settings or data changed (they are named in the log; the LR schedule goes "
                        "on from where it was; implies --resume)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> PretrainRun | None:
    """The run of the run file (if any) with the given flags on top (None after --print-config)."""
    return run_from_args(args, PretrainRun)


def run(args: argparse.Namespace) -> int:
    from plmkit.recipes.pretrain import format_result, run as pretrain
    from plmkit.training.distributed import is_main

    config = build_config(args)
    if config is None:  # --print-config
        return 0
    resume = args.resume_from or args.resume or args.resume_with_changes
    result = pretrain(config, resume=resume, accept_changes=args.resume_with_changes, overwrite=args.overwrite)
    if is_main():  # (under torchrun: one summary, rank 0's)
        print(format_result(result))
    return 0
