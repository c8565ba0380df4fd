"""`plmkit tokenizer train --corpus PATH [PATH ...] --vocab-size N --out DIR [--type wordpiece|bpe]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


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

    if args.min_frequency < 0:
        raise ConfigError(f"--min-frequency {args.min_frequency}: must be 0 or more")
    try:  # before training, so that a bad --out does not throw the trained vocabulary away
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {args.out}: cannot create the directory ({err.strerror}); "
                          "give a directory path that can be written") from None
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
