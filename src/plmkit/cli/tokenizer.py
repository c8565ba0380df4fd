"""`plmkit tokenizer train --corpus PATH [PATH ...] --vocab-size N --out DIR [--type wordpiece|bpe]`."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="train tokenizers",
                                   description="Train a WordPiece (BERT) or byte-level BPE (GPT-2) tokenizer.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    train = actions.add_parser("train", help="learn a vocabulary from a text corpus")
    train.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                       help=".txt, .txt.gz, .jsonl files or directories holding them")
    train.add_argument("--vocab-size", type=int, required=True, metavar="N", help="vocabulary size")
    train.add_argument("--out", required=True, metavar="DIR", help="directory to save the tokenizer in")
    train.add_argument("--type", choices=("wordpiece", "bpe"), default="wordpiece",
                       help="wordpiece: BERT-style for encoders (default); bpe: GPT-2 style for decoders")
    train.add_argument("--no-lowercase", dest="lowercase", action="store_false",
                       help="keep case and accents (wordpiece only)")
    train.add_argument("--min-frequency", type=int, default=2, metavar="N",
                       help="minimum count of a pair to be merged (default: 2)")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from plmkit.data.corpus import iter_texts
    from plmkit.errors import ConfigError
    from plmkit.tokenization import Tokenizer
    from plmkit.utils.files import output_dir, refuse_overwriting_inputs

    if args.min_frequency < 0:
        raise ConfigError(f"--min-frequency {args.min_frequency}: must be 0 or more")
    # before training, so that a bad --out does not throw the trained vocabulary away
    refuse_overwriting_inputs(args.out, "--out", [("--corpus", c) for c in args.corpus])
    output_dir(args.out, "--out")
    texts = iter_texts(args.corpus)
    progress = sys.stderr.isatty()
    if args.type == "bpe":
        tokenizer = Tokenizer.train_bpe(texts, args.vocab_size, min_frequency=args.min_frequency, show_progress=progress)
    else:
        tokenizer = Tokenizer.train_wordpiece(texts, args.vocab_size, lowercase=args.lowercase,
                                              min_frequency=args.min_frequency, show_progress=progress)
    tokenizer.save_pretrained(args.out)
    print(f"trained a {args.type} tokenizer with {len(tokenizer)} tokens; saved to {args.out}")
    return 0
