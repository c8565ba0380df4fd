"""The tokenizer of a pretraining run (decoders, BART): the one given (``--tokenizer DIR``), the one
trained earlier into ``OUT/tokenizer`` (a rerun, a resumed run), or one trained on the corpus into it.

Where a tokenizer in ``OUT/tokenizer`` came from (the digests of the corpus it was trained on and the
settings that shaped it) is recorded next to it (`record_source`): the recipe lets a fresh run reuse
one only when that matches (`source_mismatch`), so a start that failed after training it never hands
a tokenizer of another corpus to the next run (plmkit.recipes.pretrain).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from plmkit.utils.constants import DEFAULT_VOCAB_SIZE
from plmkit.utils.files import atomic_write_text

log = logging.getLogger(__name__)

# hidden: not a tokenizer file, nor part of the tokenizer's digests in a run's fingerprint
SOURCE_FILE = ".plmkit_source.json"


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
        _ignored(vocab_size, tok, f"the tokenizer trained earlier in {directory} is reused", REUSED_ADVICE)
        return tok, directory
    vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
    log.info(f"training {what} (vocab {vocab_size}) on the corpus -> {directory}")
    tok = train(vocab_size)
    tok.save_pretrained(directory)
    return tok, directory


REUSED_ADVICE = "a run keeps the tokenizer it trained: --overwrite (or another --out) starts one that trains another"


def _ignored(vocab_size: int | None, tok, why: str, advice: str) -> None:
    if vocab_size is not None and vocab_size != len(tok):
        log.warning(f"vocab_size {vocab_size} is ignored: {why} ({len(tok)} tokens); {advice}")


def record_source(directory: Path, source: dict[str, Any]) -> None:
    """Note in `directory` that its tokenizer was trained from `source`: {"corpus": file name -> digest
    (`plmkit.training.fingerprint.data_digests`), "settings": {name: value}}."""
    atomic_write_text(directory / SOURCE_FILE, json.dumps(source, indent=2, sort_keys=True) + "\n")


def source_mismatch(directory: Path, source: dict[str, Any]) -> str | None:
    """Why the tokenizer in `directory` is not one trained from `source` (see `record_source`); None if it is."""
    path = directory / SOURCE_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        corpus, settings = dict(recorded["corpus"]), dict(recorded["settings"])
        same_corpus = _contents(corpus) == _contents(source["corpus"])
    except FileNotFoundError:
        return "nothing records the corpus and settings it was trained with"
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"its record {path} is damaged"
    reasons = [f"{key} {json.dumps(settings.get(key))} -> {json.dumps(value)}"
               for key, value in source["settings"].items() if settings.get(key) != value]
    if not same_corpus:
        reasons.insert(0, f"it was trained on another corpus ({_names(corpus)}; now {_names(source['corpus'])})")
    return "; ".join(reasons) or None


def _contents(digests: dict[str, dict]) -> list[str]:
    """The files' contents, names aside: the same corpus elsewhere is the same corpus."""
    return sorted(str(d["sha256"]) for d in digests.values())


def _names(digests: dict[str, dict]) -> str:
    names = sorted(digests)
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more if names else "no files"


__all__ = ["REUSED_ADVICE", "SOURCE_FILE", "record_source", "run_tokenizer", "source_mismatch"]
