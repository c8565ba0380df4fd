"""The tokenizer of a pretraining run (decoders, BART): the one given (``--tokenizer DIR``), the one
trained earlier into ``OUT/tokenizer`` (a rerun, a resumed run), or one trained on the corpus into it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from plmkit.utils.constants import DEFAULT_VOCAB_SIZE

log = logging.getLogger(__name__)


def run_tokenizer(path: str | None, out: Path, vocab_size: int | None, what: str, train: Callable[[int], object],
                  check: Callable[[object, str], None]):
    """(tokenizer, its directory). `train(vocab_size)` gives a new one (`what` names it in the log);
    `check(tokenizer, where)` refuses one the objective cannot use (a given one, or one found in OUT).
    A `vocab_size` the tokenizer in use does not have is named in one warning."""
    from plmkit.tokenization import Tokenizer

    if path is not None:
        tok = Tokenizer.from_pretrained(path)
        check(tok, str(path))
        _ignored(vocab_size, tok, f"the tokenizer in {path} is used as it is",
                 "vocab_size only sizes a tokenizer trained here")
        return tok, Path(path)
    directory = out / "tokenizer"
    if (directory / "tokenizer.json").is_file():
        log.info(f"reusing the tokenizer trained earlier in {directory}")
        tok = Tokenizer.from_pretrained(directory)
        check(tok, str(directory))
        _ignored(vocab_size, tok, f"the tokenizer trained earlier in {directory} is reused",
                 "delete it to train a new one")
        return tok, directory
    vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
    log.info(f"training {what} (vocab {vocab_size}) on the corpus -> {directory}")
    tok = train(vocab_size)
    tok.save_pretrained(directory)
    return tok, directory


def _ignored(vocab_size: int | None, tok, why: str, advice: str) -> None:
    if vocab_size is not None and vocab_size != len(tok):
        log.warning(f"vocab_size {vocab_size} is ignored: {why} ({len(tok)} tokens); {advice}")


__all__ = ["run_tokenizer"]
