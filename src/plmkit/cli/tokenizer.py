"""`plmkit tokenizer train --corpus PATH [PATH ...] --vocab-size N --out DIR [--model KIND] [--style STYLE]`."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plmkit.tokenization.specials import STYLES
from plmkit.tokenization.training import DEFAULT_STYLES, MODELS

OLD_TYPES = {"wordpiece": "wordpiece", "bpe": "byte-bpe"}  # --type, the old spelling of --model


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="train tokenizers",
                                   description="Train a tokenizer: WordPiece (BERT), byte-level BPE (GPT-2, BART), "
                                               "or SentencePiece-like BPE or Unigram (Marian, any script).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    train = actions.add_parser("train", help="learn a vocabulary from a text corpus")
    train.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                       help=".txt, .txt.gz, .jsonl files or directories holding them")
    train.add_argument("--vocab-size", type=int, required=True, metavar="N", help="vocabulary size")
    train.add_argument("--out", required=True, metavar="DIR", help="directory to save the tokenizer in")
    train.add_argument("--model", choices=MODELS, default=None,
                       help="wordpiece: BERT; byte-bpe: GPT-2 and BART; bpe, unigram: SentencePiece-like, for text "
                            "with or without spaces (Chinese ...), unknown characters spelled as bytes "
                            "(default: wordpiece)")
    own = ", ".join(f"{model} {style}" for model, style in DEFAULT_STYLES.items())
    train.add_argument("--style", choices=tuple(STYLES), default=None,
                       help="special tokens and how they wrap a text: bert [CLS] A [SEP]; gpt2 <|endoftext|>; "
                            "bart <s> A </s> with <pad> <unk> <mask>; marian A </s> with <pad> <unk> "
                            f"(default: the model's own: {own})")
    train.add_argument("--fields", default="auto", metavar="NAMES",
                       help="JSONL fields to read, comma-separated, each a text of one joint vocabulary (e.g. de,en) "
                            "(default: auto: source,target or text,summary where a record has both, else text)")
    train.add_argument("--type", choices=tuple(OLD_TYPES), default=None,
                       help="old spelling of --model: --type bpe is --model byte-bpe")
    train.add_argument("--no-lowercase", dest="lowercase", action="store_false",
                       help="keep case and accents (wordpiece only; the other models always keep them)")
    train.add_argument("--min-frequency", type=int, default=None, metavar="N",
                       help="minimum count of a pair to be merged, not for unigram (default: 2)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the tokenizer (or model files) already in --out")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from plmkit.errors import ConfigError
    from plmkit.tokenization import Tokenizer
    from plmkit.tokenization.training import check_arguments, training_texts
    from plmkit.utils.files import output_dir, refuse_overwriting_inputs
    from plmkit.utils.progress import bars_enabled

    if args.model and args.type:
        raise ConfigError("give --model only: --type is its old spelling")
    model = args.model or OLD_TYPES[args.type or "wordpiece"]
    options = dict(model=model, style=args.style, lowercase=None if args.lowercase else False,
                   min_frequency=args.min_frequency)
    check_arguments(args.vocab_size, special_tokens=None, **options)
    if not args.out:
        raise ConfigError("--out is empty: give the directory to save the tokenizer in")
    taken = [name for name in ("tokenizer.json", "vocab.txt", "config.json", "model.safetensors")
             if (Path(args.out) / name).exists()]
    if taken and not args.overwrite:
        raise ConfigError(f"--out {args.out} already holds {', '.join(taken)}: a new tokenizer there would no longer "
                          "fit what was trained with the old one; give another --out, or --overwrite")
    fields = [name.strip() for name in args.fields.split(",")]
    if not all(fields):
        raise ConfigError(f"--fields {args.fields!r}: name JSONL fields separated by commas, e.g. source,target")
    fields = "auto" if fields == ["auto"] else fields
    if "" in args.corpus:
        raise ConfigError('--corpus "": give the corpus files or directories (an unset variable?)')
    corpus = [Path(c) for c in args.corpus]  # paths, each checked: never the text to train on
    training_texts(corpus, fields)  # the corpus paths and --fields checked now, read while training
    # before training, so that a bad --out does not throw the trained vocabulary away
    refuse_overwriting_inputs(args.out, "--out", [("--corpus", c) for c in corpus])
    output_dir(args.out, "--out")
    tokenizer = Tokenizer.train(corpus, args.vocab_size, fields=fields,
                                show_progress=sys.stderr.isatty() and bars_enabled(),
                                **options)
    if len(tokenizer) != args.vocab_size:
        why = "the corpus holds no more" if len(tokenizer) < args.vocab_size else "the specials and alphabet need them"
        logging.getLogger("plmkit").warning(f"plmkit tokenizer: the vocabulary has {len(tokenizer)} tokens, not the "
                                            f"{args.vocab_size} asked for ({why})")
    tokenizer.save_pretrained(args.out)
    print(f"trained a {model} tokenizer ({tokenizer.tokenizer_class}) with {len(tokenizer)} tokens; "
          f"saved to {args.out}")
    return 0
