"""`dialogue`: prompt/response pairs from the chatterbot-corpus conversations (PyPI), English and Chinese."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import yaml

from plmkit.datasets.common import Counts, read_text, unique, write_jsonl
from plmkit.datasets.download import find_one, pip_unpacked
from plmkit.errors import DataError

log = logging.getLogger(__name__)

NAME = "dialogue"
SOURCE = {
    "from": "PyPI chatterbot-corpus==1.3.3: chatterbot_corpus/data/{english,chinese}/*.yml",
    "licence": "BSD-3-Clause",
    "gives": "dialogue/{english,chinese}.jsonl with prompt/response",
}


def dialogue_pairs(conversations: Iterable) -> Iterator[dict]:
    """Each conversation ``[t0, t1, t2, ...]`` gives pairs (t0→t1), (t1→t2), ..."""
    for turns in conversations or []:
        if not isinstance(turns, list):
            continue
        turns = [str(t).strip() for t in turns if t is not None]
        for prompt, response in zip(turns, turns[1:]):
            if prompt and response:
                yield {"prompt": prompt, "response": response}


def convert_dialogue(data_dir: Path, out_dir: Path, languages: Sequence[str] = ("english", "chinese")) -> Counts:
    """``<data_dir>/<lang>/*.yml`` chatterbot conversations → ``<lang>.jsonl`` (repeats dropped)."""
    counts = {}
    for lang in languages:
        pairs = []
        for path in sorted((data_dir / lang).glob("*.yml")):
            try:
                data = yaml.safe_load(read_text(path)) or {}
            except yaml.YAMLError as err:
                raise DataError(f"{path}: invalid YAML ({err}); the package file is broken") from None
            pairs.extend(dialogue_pairs(data.get("conversations") if isinstance(data, dict) else None))
        pairs = unique(pairs, key=lambda p: (p["prompt"], p["response"]))
        counts[f"{lang}.jsonl"] = write_jsonl(out_dir / f"{lang}.jsonl", pairs)
    return counts


def recipe(downloads: Path, tmp: Path, out: Path) -> Counts:
    root = pip_unpacked("chatterbot-corpus==1.3.3", downloads, tmp,
                        lambda n: "/data/english/" in n or "/data/chinese/" in n)
    log.info("converting dialogue ...")
    return convert_dialogue(find_one(root, "data/english/greetings.yml").parent.parent, out)
